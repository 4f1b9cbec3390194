"""What the detection answer limit costs: the old 1024-token default against the new 4096, on the
same tiles in the same run, with the tiny random checkpoint (which never ends an answer: the
worst case, every tile runs to the limit) and the bundled demo checkpoint (which ends its
answers, as a trained model does). Per tile: tokens generated, answers cut at the limit, wall
seconds; one torch thread per process, so the two limits see the same machine.

A trained model writes as many tokens as the tile holds objects (about 30 per polygon line):
the longer limit costs nothing on a tile whose answer ends before it, and saves the objects a
dense tile would lose at 1024 (about 33 lines). Only a runaway answer pays the whole limit."""

from __future__ import annotations

import time

from benchmarks import data, report

LIMITS = (1024, 4096)
CLASSES = ["building", "large vehicle", "plane", "ship", "small vehicle", "storage tank"]


def measure(model: str, raster, limit: int, tiles: int) -> dict:
    import torch

    from backend.contract import TaskOptions, TaskRequest
    from backend.drive import drive
    from backend.engine.local import load_local_engine
    from backend.pipeline import TaskRun

    torch.set_num_threads(1)
    engine = load_local_engine(model, device="cpu", batch_size=1)
    request = TaskRequest(task="detect", raster=str(raster), classes=CLASSES, options=TaskOptions(max_new_tokens=limit))
    with TaskRun(request, engine.model_id, engine.defaults) as run:
        run.views = run.views[:tiles]  # the same first tiles for both limits
        started = time.perf_counter()
        result = drive(run, engine)
        seconds = time.perf_counter() - started
    views = len(run.views)
    return {
        "tokens_per_tile": round(result.stats.new_tokens / views, 1),
        "tiles_cut_at_the_limit": result.stats.views_truncated,
        "boxes": len(result.features),
        "seconds_per_tile": round(seconds / views, 3),
    }


def main(quick: bool = False) -> None:
    from backend.cli.tasks import BUNDLED_MODEL

    raster = data.scene(1024, seed=5)
    rows = []
    for name, model, tiles in (("tiny random (never ends)", str(data.tiny_checkpoint()), 2 if quick else 4),
                               ("demo checkpoint (trained)", str(BUNDLED_MODEL), 4 if quick else 16)):
        measured = {limit: measure(model, raster, limit, tiles) for limit in LIMITS}
        for limit in LIMITS:
            rows.append({"model": name, "limit": limit, "tiles": tiles, **measured[limit]})
        rows[-1]["cost_vs_1024"] = round(measured[4096]["seconds_per_tile"] / measured[1024]["seconds_per_tile"], 2)
    summary = {row["model"]: row["cost_vs_1024"] for row in rows if "cost_vs_1024" in row}
    report.write("answer_limit", "Detection answer limit: 1024 vs 4096 new tokens per tile", rows,
                 {f"time per tile at 4096 / at 1024, {k}": v for k, v in summary.items()}, __doc__.split("\n\n")[0].replace("\n", " "))


if __name__ == "__main__":
    main()
