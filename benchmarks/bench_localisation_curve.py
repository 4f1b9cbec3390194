"""The learning curve of 'where' past 1,500 steps: does box answering take off later, as
LOCALISATION_BASELINE's curve does (mean best IoU 0.16, 0.29, 0.40 at 1,500, 3,000, 5,000 steps)?

The setting, data and scoring of bench_localisation_probe (sparse 224 px views of one or two
small vehicles, the demo's fit settings, the backend's engine and parser on unseen views), with
one schedule of 5,000 steps instead of 1,500. Four variants, two at a time side by side, one
thread each: box answers alone and with the position head (training.position_head) on the demo's
model size, and box answers alone on LOCALISATION_BASELINE's smaller language model, with the
demo's optimiser and with the baseline's. Each run is stopped at 1,500 and 3,000 steps
(training.fit writes a checkpoint and resumes from it) and the model of that checkpoint is
scored, so the three points of a row lie on one schedule, as the baseline's do.

    python -m benchmarks localisation_curve                      # about 4.5 hours on 2 CPU cores
    python -m benchmarks.bench_localisation_curve --until 3000   # fit the points up to 3,000 steps only

A fitted point and its score are reused, so a run stopped after 3,000 steps is continued to
5,000 by the first command.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from backend.atomic import write_text
from benchmarks import bench_localisation_probe as probe
from benchmarks import report

# variant -> (training.scratch size of its initial weights, fit overrides)
VARIANTS = {
    "box answers alone": ("demo", {}),
    "+ position head": ("demo", {"position_head_weight": 1.0}),
    "box answers alone, the baseline's model": ("baseline", {}),
    "box answers alone, the baseline's model and lr": ("baseline", probe.BASELINE_OPTIMISER),
}
# LOCALISATION_BASELINE.md's curve (a smaller model, AdamW 1e-3 one-cycle): steps -> mean best IoU.
BASELINE_CURVE = {1500: 0.16, 3000: 0.29, 5000: 0.40}
TIMES = "curve_fit_time.json"  # fit seconds, model folder and score of each scored step, kept in the run folder


def fit_until(settings, step: int) -> None:
    """training.fit, stopped once it has trained `step` steps (it then writes that step's
    checkpoint and raises Cancelled) or at the end of its schedule."""
    from training.fit import fit

    reached = 0

    def seen(status) -> None:
        nonlocal reached
        reached = status.step

    fit(settings, progress=seen, should_stop=lambda: reached >= step)


def train(job: tuple) -> dict:
    """One variant's schedule of `schedule` steps, stopped and resumed at each scored step up to
    the last of `milestones`; returns the model folder and cumulative fit seconds of every scored
    step (steps already fitted are reused)."""
    name, overrides, model, dataset, out, schedule, milestones = job
    import torch

    torch.set_num_threads(1)
    from backend.errors import Cancelled
    from training.checkpoints import checkpoint_name, full_model_at
    from training.fit import FitSettings

    config = probe.fit_config(overrides, schedule, save_every=500)
    times_file = out / TIMES
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    for milestone in (m for m in milestones if str(m) not in times):
        started = time.monotonic()
        try:
            fit_until(FitSettings(str(model), str(dataset), str(out), config), milestone)
            folder = out / "model"
        except Cancelled:  # stopped at the milestone, its checkpoint written
            folder = full_model_at(model, out / "checkpoints" / checkpoint_name(milestone), out / f"model-{milestone}")
        fitted_before = max((t["fit_s"] for t in times.values()), default=0.0)
        times[str(milestone)] = {"fit_s": fitted_before + time.monotonic() - started, "model": str(folder)}
        write_text(times_file, json.dumps(times, indent=2))
    return {"variant": name, "points": times, "times file": str(times_file)}


def score(job: tuple) -> dict:
    """A point's score, computed once (scoring is deterministic) and kept in its times file."""
    point, dataset = job
    if "score" in point:
        return point["score"]
    import torch

    torch.set_num_threads(1)
    return probe.score(Path(point["model"]), dataset)


def main(quick: bool = False, until: int | None = None) -> dict:
    schedule = (5, 10, 15) if quick else tuple(BASELINE_CURVE)
    milestones = tuple(m for m in schedule if until is None or m <= until)
    if not milestones:
        raise SystemExit(f"--until {until} is before the first scored step, {schedule[0]}")
    train_views, val_views = probe.views(quick)
    jobs = []
    for name, (size, overrides) in VARIANTS.items():
        root, dataset, model = probe.setting(quick, size)
        jobs.append((name, overrides, model, dataset, root / "curve" / probe.run_name(name), schedule[-1], milestones))
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        fits = list(pool.map(train, jobs))
        # every point fitted so far, those past --until from an earlier run included
        points = [(fitted["variant"], int(step), point) for fitted in fits for step, point in fitted["points"].items()]
        scores = list(pool.map(score, [(point, dataset) for _, _, point in points]))
    for (_, _, point), scored in zip(points, scores):
        point["score"] = scored
    for fitted in fits:
        write_text(Path(fitted["times file"]), json.dumps(fitted["points"], indent=2))
    rows = []
    for (variant, step, point), scored in zip(points, scores):
        rows.append({"variant": variant, "model size": VARIANTS[variant][0], "steps": step, "schedule steps": schedule[-1],
                     "fit min (1 thread)": round(point["fit_s"] / 60, 1), **scored, "baseline's mean best IoU": BASELINE_CURVE.get(step)})
    alone = {row["steps"]: row["mean best IoU"] for row in rows if row["variant"] == "box answers alone"}
    for row in rows:
        row["IoU vs box answers alone"] = round(row["mean best IoU"] / alone[row["steps"]], 2) if alone.get(row["steps"]) else None
    summary = {f"{row['variant']} @ {row['steps']}": row["mean best IoU"] for row in rows}
    notes = (f"One schedule of {schedule[-1]} steps of batches of 8 (training/configs/demo.yaml: AdamW 5e-4, 150 warm-up steps, "
             f"cosine decay), scored at {', '.join(str(m) for m in schedule)} steps as far as a variant has been fitted (stopped there "
             f"and resumed from training.fit's checkpoint); {train_views} training views of bench_localisation_probe, scored on its {val_views} unseen ones. "
             "Model size: training.scratch's demo (language model 4 x 256, 6.3M parameters) or baseline (LOCALISATION_BASELINE's "
             "4 x 192, the same vision tower, 4.6M); the 'and lr' row uses the baseline's AdamW 1e-3, peaking at 30% of the steps. "
             "Fit minutes are cumulative, two runs side by side on the 2 cores. The baseline's column is "
             "LOCALISATION_BASELINE.md's measured curve (a 4.3M-parameter model, AdamW 1e-3 one-cycle), not a run of this benchmark.")
    return report.write("localisation_curve", "Learning where past 1,500 steps: box answers alone, with the position head, "
                        "and with the baseline's model", rows, summary, notes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_localisation_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps on a few views, for a smoke run")
    parser.add_argument("--until", type=int, help="fit the points up to this step only (the report holds every point fitted so far)")
    args = parser.parse_args()
    main(quick=args.quick, until=args.until)
