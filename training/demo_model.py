"""The bundled demo checkpoint, made from nothing by our own pipeline (`make demo-model`).

1. data    training.demo_data: the synthetic co-training set, train and val from disjoint seeds,
           and the same scenes' sparse views (a few objects each) for the localisation phase
2. model   training.scratch: a `demo`-size Qwen2.5-VL with random weights, its tokenizer trained
           on the data's texts
3. fit     training.fit, once per phase of training.recipes' chosen recipe (localise-first:
           detection and grounding on sparse views, then co-training every task), every
           weight trained (training/configs/demo.yaml)
4. publish the trained folder, with the task defaults it was trained for
           (rscovlm_task_defaults.json: pixel budget, detection tile), becomes --out
5. eval    `rscovlm eval run` on the val split (backend.evaluation.run), and how well the model
           predicts where, shape and class in the true box answers (training.localisation)
6. card    --out/README.md: the command, wall times, machine load, parameters, scores

Each step is skipped when its result is there (the fit resumes from its last checkpoint), so an
interrupted run continues where it stopped. Seeds are fixed: the same command gives the same
data, the same initial weights and the same sample order.

    python -m training.demo_model [--data data/demo] [--run runs/demo] [--out resources/models/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from backend.atomic import staged_folder, write_text
from backend.errors import UserError
from backend.model_defaults import TASK_DEFAULTS_FILE
from backend.resolution import MIN_PIXELS
from training.data import message_texts
from training.demo_data import DEMO_MAX_PIXELS, TILE, DemoDataPlan, build_demo_data, check_demo_data
from training.layouts import WORLD_GSD
from training.run_folder import METRICS_FILE, read_log
from training.world import CLASSES

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
# What the demo checkpoint declares about its training (backend.model_defaults): the view sizes and its world's classes.
# Its answer limit: the longest answer it was trained on is 466 tokens (a dense tile's detection);
# past 640 an answer is a runaway, and the default 4096 (RSCoVLM-7B's) would let one hold up a batch.
TASK_DEFAULTS = {"min_pixels": MIN_PIXELS, "max_pixels": DEMO_MAX_PIXELS, "tile_size": TILE, "tile_overlap": 64, "classes": sorted(CLASSES),
                 "max_new_tokens": 640}


def task_defaults(view_zoom: float) -> dict:
    """TASK_DEFAULTS of a checkpoint whose detection tiles were enlarged `view_zoom` times
    (training.demo_data): detection then reads a scene at the GSD it learned, the world's
    divided by the zoom; every other task was trained at the world's own GSD."""
    return TASK_DEFAULTS | ({"tasks": {"detect": {"gsd": WORLD_GSD / view_zoom}}} if view_zoom != 1 else {})
TIMINGS_FILE = "timings.json"
PLAN_OPTIONS = ("scenes", "zoom_scenes", "val_scenes", "val_zoom_scenes", "change_scenes", "val_change_scenes")  # of DemoDataPlan, on the command line
# Files of the trained folder that make the checkpoint; the rest (training summary) stays in the run.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors", "chat_template.jinja", "processor_config.json",
                    "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "special_tokens_map.json", "video_preprocessor_config.json")


class LoadSampler:
    """The machine's 1-minute load average, sampled in the background while a step runs."""

    def __init__(self, every_s: float = 30.0):
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s if self.samples else 0.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = sorted(self.samples) or [0.0]
        return {"mean": round(sum(s) / len(s), 2), "min": round(s[0], 2), "max": round(s[-1], 2), "samples": len(self.samples)}


def _timed(timings: dict, name: str, path: Path, step) -> None:
    """Run a step with its wall time and the machine's load recorded under `name`; a step
    resumed after an interruption adds to the time of its earlier part."""
    started = time.monotonic()
    try:
        with LoadSampler() as load:
            step()
    finally:
        earlier = timings.get(name, {})
        timings[name] = {"wall_s": round(earlier.get("wall_s", 0.0) + time.monotonic() - started, 1), "load": load.summary(),
                         "parts": earlier.get("parts", 0) + 1}
        write_text(path, json.dumps(timings, indent=2) + "\n")


def publish(trained: Path, out: Path, summary: dict, declared: dict) -> None:
    with staged_folder(out) as staging:
        for name in CHECKPOINT_FILES:
            if (trained / name).is_file():
                shutil.copy2(trained / name, staging / name)
        (staging / TASK_DEFAULTS_FILE).write_text(json.dumps(declared, indent=2) + "\n")
        (staging / "rscovlm_training.json").write_text(json.dumps(summary, indent=2) + "\n")


def evaluate(model: Path, data: Path, out: Path) -> dict:
    from tqdm import tqdm

    from backend.engine.local import load_local_engine
    from backend.evaluation.dataset import open_split
    from backend.evaluation.run import evaluate_model

    split = open_split(data / "val")
    engine = load_local_engine(str(model), batch_size=8)
    with tqdm(unit="item", desc="eval", file=sys.stderr) as bar:

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return evaluate_model(engine, split, out, progress=show)


def _parameters(weights: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(weights), "np") as handle:
        total = 0
        for key in handle.keys():
            count = 1
            for side in handle.get_slice(key).get_shape():
                count *= side
            total += count
        return total


def _benchmark_result(name: str) -> dict | None:
    """benchmarks/results/<name>.json, which the model card quotes; None where it was never run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}


def sparse_data_folder(data: Path) -> Path:
    """Where the localisation phase's sparse views are kept, beside the co-training data."""
    return data.with_name(data.name + "-sparse")


def _build_data(folder: Path, plan: DemoDataPlan, timings: dict, timings_path: Path, name: str) -> None:
    if not (folder / "manifest.json").is_file():
        _timed(timings, name, timings_path, lambda: build_demo_data(folder, plan, _bar(name, "scene"), os.cpu_count() or 1))
    else:
        check_demo_data(folder, plan)


def run(data: Path, run_folder: Path, out: Path, overrides: dict, plan: DemoDataPlan) -> dict:
    """training.recipes' chosen recipe at full length: each phase an ordinary fit on its data
    that starts from the model of the phase before, every phase validated on the co-training
    data's validation split; the steps of the config shared by the phases."""
    from training import fit as fitting
    from training.config import load_config, parse_overrides
    from training.recipes import CHOSEN, RECIPES, phase_plan, phase_steps
    from training.scratch import build_checkpoint

    run_folder.mkdir(parents=True, exist_ok=True)
    timings_path = run_folder / TIMINGS_FILE
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    recipe = RECIPES[CHOSEN]
    plan = replace(plan, view_zoom=recipe.view_zoom)
    folders = {"dense": data, "sparse": sparse_data_folder(data)}
    for kind in dict.fromkeys(["dense"] + [phase.data for phase in recipe.phases]):
        _build_data(folders[kind], phase_plan(kind, plan), timings, timings_path, "data" if kind == "dense" else f"data ({kind} views)")
    scratch = run_folder / "scratch"
    if not (scratch / "config.json").is_file():
        _timed(timings, "scratch", timings_path, lambda: build_checkpoint(scratch, "demo", seed=0, extra_corpus=message_texts(data / "train" / "conversations.jsonl")))
    total_steps = load_config(CONFIG, overrides).max_steps
    model, trained_now, phases = scratch, False, []
    for number, (phase, steps) in enumerate(zip(recipe.phases, phase_steps(recipe, total_steps)), start=1):
        name = f"fit {number} ({phase.data})"
        phase_overrides = overrides | parse_overrides(list(phase.overrides)) | {"max_steps": steps, "warmup_steps": min(150, steps // 10)}
        folder = run_folder / f"fit{number}-{phase.data}"
        stale = trained_now  # a phase trained again makes every later one stale
        if stale or not (folder / METRICS_FILE).is_file():
            settings = fitting.FitSettings(model=str(model), data=str(folders[phase.data]), out=str(folder),
                                           config=load_config(CONFIG, phase_overrides), val_data=str(data), overwrite=stale)
            _timed(timings, name, timings_path, partial(_fit_with_bar, fitting.fit, settings, _bar(name, "step")))
            trained_now = True
        phases.append({"data": phase.data, "steps": steps, "metrics": json.loads((folder / METRICS_FILE).read_text()),
                       "curve": [{k: e.get(k) for k in ("step", "elapsed_s", "val_loss", "val_ap_nc", "val_ground_acc")}
                                 for e in read_log(folder) if "val_loss" in e]})
        model = folder / "model"
    summary = phases[-1]["metrics"] | {"parameters": _parameters(model / "model.safetensors"), "recipe": CHOSEN,
                                       "recipe_description": recipe.description, "phases": phases}
    publish(model, out, summary, task_defaults(recipe.view_zoom))
    report_path = run_folder / "eval" / "report.json"
    if trained_now or not report_path.is_file():
        shutil.rmtree(run_folder / "eval", ignore_errors=True)  # earlier predictions are not this model's
        timings.pop("eval", None)
        _timed(timings, "eval", timings_path, lambda: evaluate(out, data, run_folder / "eval"))
    report = json.loads(report_path.read_text())
    localisation_path = run_folder / "eval" / "localisation.json"
    if not localisation_path.is_file():
        from training.localisation import measure

        write_text(localisation_path, json.dumps(measure(out, data), indent=2) + "\n")
    from training.model_card import write_model_card

    write_model_card(out, report, summary, timings, _machine(), json.loads((data / "manifest.json").read_text()), overrides,
                     json.loads(localisation_path.read_text()), _benchmark_result("localisation_recipes"), _benchmark_result("localisation_probe"),
                     _benchmark_result("localisation_curve"))
    return report


def _fit_with_bar(fit, settings, bar) -> None:
    fit(settings, progress=lambda status: bar(status.step, status.total_steps))


def _bar(desc: str, unit: str):
    from tqdm import tqdm

    bar = tqdm(unit=unit, desc=desc, file=sys.stderr)

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="co-training data folder (generated when missing)")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="run folder: scratch model, fit, eval, timings")
    parser.add_argument("--out", type=Path, default=Path("resources/models/demo"), help="the checkpoint folder to write")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of training/configs/demo.yaml")
    defaults = DemoDataPlan()
    for field in PLAN_OPTIONS:
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(defaults, field), help="(data plan)")
    args = parser.parse_args(argv)
    # OpenMP threads that sleep while they wait: with other PyTorch work on the machine, spinning
    # ones made a training step 1.6x longer; on an idle machine sleeping costs ~17%
    # (benchmarks/results/omp_wait.md). A long CPU run is rarely alone. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from training.config import parse_overrides

    plan = DemoDataPlan(**{f: getattr(args, f) for f in PLAN_OPTIONS})
    try:
        report = run(args.data, args.run, args.out, parse_overrides(args.set), plan)
    except UserError as exc:
        print(f"rscovlm: error: {exc}", file=sys.stderr)
        return 2
    from training.model_card import headline

    print(headline(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
