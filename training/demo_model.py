"""The bundled demo checkpoint, made from nothing by our own pipeline (`make demo-model`).

1. data    training.demo_data: the synthetic co-training set, train and val from disjoint seeds
2. model   training.scratch: a `demo`-size Qwen2.5-VL with random weights, its tokenizer trained
           on the data's texts
3. fit     training.fit: every weight trained (training/configs/demo.yaml)
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
from dataclasses import asdict
from pathlib import Path

from backend.atomic import staged_folder, write_text
from backend.errors import UserError
from backend.model_defaults import TASK_DEFAULTS_FILE
from backend.resolution import MIN_PIXELS
from training.data import message_texts
from training.demo_data import DEMO_MAX_PIXELS, TILE, DemoDataPlan, build_demo_data
from training.synthetic import CLASSES

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
# What the demo checkpoint declares about its training (backend.model_defaults): the view sizes and its world's classes.
TASK_DEFAULTS = {"min_pixels": MIN_PIXELS, "max_pixels": DEMO_MAX_PIXELS, "tile_size": TILE, "tile_overlap": 64, "classes": sorted(CLASSES)}
TIMINGS_FILE = "timings.json"
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


def publish(trained: Path, out: Path, summary: dict) -> None:
    with staged_folder(out) as staging:
        for name in CHECKPOINT_FILES:
            if (trained / name).is_file():
                shutil.copy2(trained / name, staging / name)
        (staging / TASK_DEFAULTS_FILE).write_text(json.dumps(TASK_DEFAULTS, indent=2) + "\n")
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


def _machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else None
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}


def run(data: Path, run_folder: Path, out: Path, overrides: dict, plan: DemoDataPlan) -> dict:
    from training import fit as fitting
    from training.config import load_config
    from training.scratch import build_checkpoint

    run_folder.mkdir(parents=True, exist_ok=True)
    timings_path = run_folder / TIMINGS_FILE
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if not (data / "manifest.json").is_file():
        _timed(timings, "data", timings_path, lambda: build_demo_data(data, plan, _bar("data", "scene"), os.cpu_count() or 1))
    elif json.loads((data / "manifest.json").read_text()).get("plan") != json.loads(json.dumps(asdict(plan))):
        raise UserError(f"{data} was generated with another plan.", "Delete it (or give another --data) to generate it again.")
    scratch = run_folder / "scratch"
    if not (scratch / "config.json").is_file():
        _timed(timings, "scratch", timings_path, lambda: build_checkpoint(scratch, "demo", seed=0, extra_corpus=message_texts(data / "train" / "conversations.jsonl")))
    config = load_config(CONFIG, overrides)
    settings = fitting.FitSettings(model=str(scratch), data=str(data), out=str(run_folder / "fit"), config=config)
    metrics = run_folder / "fit" / fitting.METRICS_FILE
    trained_now = not metrics.is_file()
    if trained_now:
        fit_bar = _bar("fit", "step")
        _timed(timings, "fit", timings_path, lambda: fitting.fit(settings, progress=lambda s: fit_bar(s.step, s.total_steps)))
    summary = json.loads(metrics.read_text()) | {"parameters": _parameters(run_folder / "fit" / "model" / "model.safetensors")}
    publish(run_folder / "fit" / "model", out, summary)
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
                     json.loads(localisation_path.read_text()))
    return report


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
    for field in ("scenes", "zoom_scenes", "val_scenes", "val_zoom_scenes"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(defaults, field), help="(data plan)")
    args = parser.parse_args(argv)
    # OpenMP threads that sleep while they wait: with other PyTorch work on the machine, spinning
    # ones made a training step 1.6x longer; on an idle machine sleeping costs ~17%
    # (benchmarks/results/omp_wait.md). A long CPU run is rarely alone. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from training.config import parse_overrides

    plan = DemoDataPlan(**{f: getattr(args, f) for f in ("scenes", "zoom_scenes", "val_scenes", "val_zoom_scenes")})
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
