"""One zoom question against brute-force native tiling of the same extent, in the same run.

Generated GeoTIFFs (training.synthetic: deflate, 512 px blocks, internal overviews) of 5,000 and
20,000 px a side; the question is asked about the whole raster with the tiny random checkpoint.
Zoom-in Chain: the overview turn, then one zoom into the 1,000 px window around a plane of the
scene, re-read at native resolution (the random model never writes a tool call, so its turn-1
text is replaced by that call; both turns still run through the model). Native tiling: the
question on every 1008 px tile (the largest square in the pixel budget); its tokens and pixels
are counted over all tiles, its wall time is the median time per tile over a spread sample of
tiles times the tile count (marked "extrapolated"); the zoom question's time is the median of 3
runs. Each process runs torch on one thread, and its CPU seconds stand beside wall time: other
work on a shared machine stretches wall time much more than the CPU time the work itself takes. Each side runs in
its own process and reports its peak RSS (VmHWM); "engine only" is a process that loads the model
and does nothing else, the floor both sides share. Times leave out loading the model, and every
process answers one warm-up image first. Every turn and tile may generate 96 tokens; the random
model stops early on some images, so time follows the generated tokens (given; extrapolated for
tiling) as much as the visual ones."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import data, report

QUESTION = "What color is the plane?"
MAX_NEW_TOKENS = 96
ZOOM_WINDOW = 1000  # raster pixels around the plane the scripted call zooms into
REPEATS = 3  # the zoom question is asked this many times; its median wall time is reported


def plane_centre(raster: Path) -> tuple[float, float]:
    """Centre of the first plane in the scene's DOTA truth (pixels)."""
    for line in raster.with_suffix(".dota.txt").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[8] == "plane":
            xy = np.array(parts[:8], dtype=float).reshape(4, 2)
            return float(xy[:, 0].mean()), float(xy[:, 1].mean())
    raise RuntimeError(f"{raster} has no plane to zoom into")


def _load_engine(model: str):
    import torch

    from backend.engine.local import load_local_engine
    from backend.prompts import single_turn

    # One thread: idle OpenMP threads spin, and on a shared machine that CPU time and the wait
    # for cores would swamp the difference being measured.
    torch.set_num_threads(1)
    engine = load_local_engine(model, device="cpu", batch_size=1)
    engine.generate([single_turn(np.zeros((224, 224, 3), np.uint8), "warm up")], 4)
    return engine


def _peak_rss_mib() -> float:
    """This process's peak RSS. ru_maxrss survives execve, so a child would report its parent's
    peak (the parent generated the 20,000 px scene); VmHWM belongs to the process's own memory."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_zoom(raster: str, model: str) -> dict:
    from backend.contract import TaskOptions, TaskRequest
    from backend.drive import drive
    from backend.pipeline import TaskRun
    from backend.prompts import zoom_tool_call
    from tests.scripted import ScriptedFirstTurn

    engine = _load_engine(model)
    options = TaskOptions(zoom="on", zoom_steps=0, max_new_tokens=MAX_NEW_TOKENS)
    request = TaskRequest(task="ask", raster=raster, question=QUESTION, options=options)
    walls, cpus = [], []
    for _ in range(REPEATS):
        start, cpu = time.perf_counter(), time.process_time()
        with TaskRun(request, engine.model_id) as run:
            cx, cy = plane_centre(Path(raster))
            half = ZOOM_WINDOW / 2
            corners = run.views[0].from_raster(np.array([[cx - half, cy - half], [cx + half, cy + half]]))
            box = [math.floor(corners[0, 0]), math.floor(corners[0, 1]), math.ceil(corners[1, 0]), math.ceil(corners[1, 1])]
            result = drive(run, ScriptedFirstTurn(engine, zoom_tool_call(box)))
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    trace = result.zoom
    return {
        "wall_s": float(np.median(walls)),
        "cpu_s": float(np.median(cpus)),
        "visual_tokens": trace.visual_tokens,
        "new_tokens": result.stats.new_tokens,
        "pixels_read": trace.pixels_read,
        "turns": len(trace.turns),
        "outcome": trace.outcome,
        "crop": trace.turns[-1].image_size,
        "brute_force": trace.brute_force.model_dump(),
        "peak_rss_mib": _peak_rss_mib(),
    }


def child_tiles(raster: str, model: str, sample: int) -> dict:
    from backend.georef import View
    from backend.prompts import single_turn, vqa_prompt
    from backend.raster import PixelWindow, RasterSource
    from backend.resolution import MAX_PIXELS, MIN_PIXELS, plan_tiles, view_size
    from backend.zoom_plan import brute_force_cost

    engine = _load_engine(model)
    walls, cpus = [], []
    with RasterSource.open(raster) as source:
        cost = brute_force_cost(source.width, source.height, MIN_PIXELS, MAX_PIXELS)
        stretch = source.stretch_for(PixelWindow(0, 0, source.width, source.height))
        tiles = plan_tiles(source.width, source.height, cost.tile_size, 0)
        chosen = sorted({round(i * (len(tiles) - 1) / max(1, sample - 1)) for i in range(min(sample, len(tiles)))})
        tokens = pixels = new_tokens = 0
        for index in chosen:
            start, cpu = time.perf_counter(), time.process_time()
            tile = tiles[index]
            out_h, out_w = view_size(tile.height, tile.width, MIN_PIXELS, MAX_PIXELS)
            view = View(tile.x, tile.y, tile.width, tile.height, out_w, out_h, index)
            image = source.read_view(view, stretch).image
            generation = engine.generate([single_turn(image, vqa_prompt(QUESTION))], MAX_NEW_TOKENS)[0]
            tokens += generation.visual_tokens
            new_tokens += generation.new_tokens
            pixels += source.decoded_pixels(view)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    return {
        "tiles": len(tiles),
        "sampled": len(chosen),
        "wall_s_per_tile": float(np.median(walls)),
        "cpu_s_per_tile": float(np.median(cpus)),
        "visual_tokens_sampled": tokens,
        "new_tokens_sampled": new_tokens,
        "pixels_read_sampled": pixels,
        "brute_force": cost.model_dump(),
        "peak_rss_mib": _peak_rss_mib(),
    }


def child_idle(model: str) -> dict:
    _load_engine(model)
    return {"peak_rss_mib": _peak_rss_mib()}


def run_child(*args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_zoom", *args],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    sizes = (2500, 5000) if quick else (5000, 20_000)
    sample = 4 if quick else 12
    model = str(data.tiny_checkpoint())
    idle = run_child("idle", model)
    rows, measured = [], {}
    for size in sizes:
        raster = str(data.scene(size, seed=5, density=0.02))
        zoom = run_child("zoom", raster, model)
        tiles = run_child("tiles", raster, model, str(sample))
        brute = tiles["brute_force"]
        per_tile_s = tiles["wall_s_per_tile"]
        assert tiles["visual_tokens_sampled"] == tiles["sampled"] * 1296  # every tile is a full budget
        measured[size] = (zoom, tiles, brute, per_tile_s)
        rows.append({
            "raster_px": f"{size:,}^2",
            "method": f"Zoom-in Chain ({zoom['turns']} turns, crop {zoom['crop'][0]}x{zoom['crop'][1]})",
            "visual_tokens": zoom["visual_tokens"],
            "pixels_read": zoom["pixels_read"],
            "generated_tokens": zoom["new_tokens"],
            "wall_s": zoom["wall_s"],
            "cpu_s": zoom["cpu_s"],
            "peak_rss_mib": zoom["peak_rss_mib"],
        })
        rows.append({
            "raster_px": f"{size:,}^2",
            "method": f"native tiling ({brute['tiles']} tiles; time extrapolated from {tiles['sampled']})",
            "visual_tokens": brute["visual_tokens"],
            "pixels_read": brute["pixels_read"],
            "generated_tokens": round(tiles["new_tokens_sampled"] / tiles["sampled"] * brute["tiles"]),
            "wall_s": per_tile_s * brute["tiles"],
            "cpu_s": tiles["cpu_s_per_tile"] * brute["tiles"],
            "peak_rss_mib": tiles["peak_rss_mib"],
        })
    rows.append({"raster_px": "-", "method": "engine only (loaded, one warm-up image)", "peak_rss_mib": idle["peak_rss_mib"]})
    small, big = sizes
    zoom, tiles, brute, per_tile_s = measured[big]
    summary = {
        "raster": f"{big:,}^2",
        "token_ratio": brute["visual_tokens"] / zoom["visual_tokens"],
        "pixel_ratio": brute["pixels_read"] / zoom["pixels_read"],
        "time_ratio": per_tile_s * brute["tiles"] / zoom["wall_s"],
        "cpu_time_ratio": tiles["cpu_s_per_tile"] * brute["tiles"] / zoom["cpu_s"],
        "goal": ">= 100x fewer tokens and pixels",
        f"zoom_rss_mib_{small}_vs_{big}": f"{measured[small][0]['peak_rss_mib']:.0f} vs {zoom['peak_rss_mib']:.0f}",
    }
    notes = " ".join(__doc__.split("\n\n")[1].split())
    return report.write("zoom", "Zoom-in Chain vs native tiling: one question about a large raster", rows, summary, notes=notes)


if __name__ == "__main__":
    side, *rest = sys.argv[1:] or ["main"]
    if side == "main":
        main(quick="--quick" in rest)
    else:
        handlers = {"zoom": child_zoom, "tiles": lambda r, m, n: child_tiles(r, m, int(n)), "idle": child_idle}
        print(json.dumps(handlers[side](*rest)))
