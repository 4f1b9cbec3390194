"""Reinforcement (GRPO) against more supervised fine-tuning, for the same wall time, from the
bundled demo checkpoint on its own world (issue 13's honest comparison).

Both arms start from the demo checkpoint, train LoRA on the language model with their shipped
configs (training/configs/lora.yaml, training/configs/grpo.yaml) on the same training prompts, for
the same number of training minutes (each arm's step time is measured on a few steps first and
its step count set from it), and are scored by `rscovlm eval run` on the same validation scenes
(seeds never used to train the demo checkpoint), beside the untouched checkpoint. The training
prompts are grounding and scene classification: short answers, so GRPO's groups of answers fit
the CPU; detection is scored but not trained (the demo checkpoint places boxes little better than
chance, so a detection reward is almost always 0 and its group has nothing to compare).

Format errors: the share of grounding and classification answers that training.rewards'
format reward rejects (no box in the right form, not a listed class, runaway text).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from benchmarks import report
from training.run_folder import read_log

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "models" / "demo"
WORK = ROOT / "runs" / "bench_rl_vs_sft"
TRAINED_TASKS = ("ground", "classify")
CALIBRATION_STEPS = 3


def _plan(quick: bool):
    from training.demo_data import DemoDataPlan

    return DemoDataPlan(scenes=6 if quick else 40, tiles_per_scene=8, zoom_scenes=0, val_scenes=2 if quick else 8, val_zoom_scenes=0,
                        change_scenes=0, val_change_scenes=0, vqa_share=0.0, caption_share=0.0, classify_share=0.3,
                        whole_views=False)


def _prompts(data: Path) -> Path:
    """The training conversations of the trained tasks, as one JSONL file (absolute image paths)."""
    target = data.parent / "trained_prompts.jsonl"
    lines = []
    for line in (data / "train" / "conversations.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["task"] in TRAINED_TASKS:
            record["images"] = [str((data / "train" / p).resolve()) for p in record["images"]]
            lines.append(json.dumps(record))
    target.write_text("\n".join(lines) + "\n")
    return target


def _sft(prompts: Path, data: Path, out: Path, steps: int) -> None:
    """LoRA fit on the prompts' reference answers, validated on the dataset's val split."""
    from training.config import load_config
    from training.demo_data import DEMO_MAX_PIXELS
    from training.fit import FitSettings, fit

    config = load_config(str(ROOT / "training" / "configs" / "lora.yaml"),
                         {"max_steps": steps, "eval_every": 0, "val_samples": 8, "val_ap_samples": 0, "save_every": 100000,
                          "log_every": 1, "num_workers": 0, "gradient_checkpointing": False, "max_pixels": DEMO_MAX_PIXELS, "warmup_steps": min(20, steps // 10)})
    fit(FitSettings(model=str(DEMO), data=str(prompts), out=str(out), config=config, val_data=str(data), overwrite=True))


def _grpo(prompts: Path, out: Path, steps: int) -> None:
    from training.grpo import GrpoSettings, grpo
    from training.grpo_config import load_grpo_config

    config = load_grpo_config(str(ROOT / "training" / "configs" / "grpo.yaml"), {"max_steps": steps, "save_every": 100000})
    grpo(GrpoSettings(model=str(DEMO), data=str(prompts), out=str(out), config=config, overwrite=True))


def _step_seconds(out: Path) -> float:
    """Seconds per optimizer step after the first (which warms up)."""
    entries = [e for e in read_log(out) if "elapsed_s" in e and ("loss" in e or "reward" in e)]
    return (entries[-1]["elapsed_s"] - entries[0]["elapsed_s"]) / max(1, entries[-1]["step"] - entries[0]["step"])


def _format_errors(split, out: Path) -> float | None:
    from PIL import Image

    from backend.evaluation.run import PREDICTIONS, prediction_file
    from backend.resolution import FACTOR, MIN_PIXELS, smart_resize
    from training.demo_data import DEMO_MAX_PIXELS
    from training.rewards import Reference, format_reward

    rejected = total = 0
    for sample in split.samples:
        if sample.task not in TRAINED_TASKS:
            continue
        path = prediction_file(out / PREDICTIONS, sample)
        if not path.is_file():
            continue
        prediction = json.loads(path.read_text())
        with Image.open(sample.image) as image:  # the answer's frame: the image as the processor resized it
            height, width = smart_resize(image.height, image.width, FACTOR, MIN_PIXELS, DEMO_MAX_PIXELS)
        size = (width, height)
        reference = Reference(sample.task, sample.references[0] if sample.references else "", size)
        total += 1
        rejected += format_reward(reference, prediction.get("raw") or prediction.get("answer") or "") == 0.0
    return rejected / total if total else None


def _score(model: Path, adapter: Path | None, val: Path, out: Path) -> dict:
    from backend.engine.local import load_local_engine
    from backend.evaluation.dataset import open_split
    from backend.evaluation.run import evaluate_model

    split = open_split(val)
    engine = load_local_engine(str(model), adapter=str(adapter) if adapter else None, batch_size=8)
    scores = evaluate_model(engine, split, out)["tasks"]

    def value(task: str, key: str):
        section = scores.get(task, {})
        return section.get("summary", section).get(key)

    return {"grounding Acc@0.5": value("grounding", "Acc@0.5"), "detection AP_nc": value("detection", "mAP_nc"),
            "classification": value("classification", "accuracy"), "format errors": _format_errors(split, out)}


def main(quick: bool = False) -> None:
    import torch

    from training.demo_data import build_demo_data

    if not (DEMO / "config.json").is_file():
        print(f"skipped: {DEMO} is missing (make demo-model)")
        return
    minutes = 0.5 if quick else 2.0
    work = WORK / ("quick" if quick else "full")
    data = work / "data"
    if not (data / "manifest.json").is_file():
        build_demo_data(data, replace(_plan(quick)), workers=os.cpu_count() or 1)
    prompts, val = _prompts(data), data / "val"
    arms = {"sft": lambda out, steps: _sft(prompts, data, out, steps), "grpo": lambda out, steps: _grpo(prompts, out, steps)}
    rows, curves = [{"arm": "demo checkpoint (start)", "steps": 0, "train min": 0.0,
                     **_score(DEMO, None, val, work / "eval-start")}], {}
    for name, train in arms.items():
        calibration = work / f"{name}-calibration"
        train(calibration, CALIBRATION_STEPS)
        step_s = _step_seconds(calibration)
        steps = max(CALIBRATION_STEPS, int(minutes * 60 / step_s))
        out = work / name
        started = time.monotonic()
        train(out, steps)
        wall = time.monotonic() - started
        curves[name] = [{k: e.get(k) for k in ("step", "elapsed_s", "loss", "reward", "rewards") if k in e} for e in read_log(out)]
        rows.append({"arm": name, "steps": steps, "train min": round(wall / 60, 2), "s/step": round(step_s, 2),
                     **_score(DEMO, out / "adapter", val, work / f"eval-{name}")})
    for row in rows:
        for key in ("grounding Acc@0.5", "detection AP_nc", "classification", "format errors"):
            row[key] = None if row.get(key) is None else round(100 * row[key], 1)
    start, sft, rl = rows
    summary = {"minutes per arm": minutes, "torch threads": torch.get_num_threads(),
               "grounding: grpo - sft (points)": None if None in (rl["grounding Acc@0.5"], sft["grounding Acc@0.5"])
               else round(rl["grounding Acc@0.5"] - sft["grounding Acc@0.5"], 1),
               "format errors: grpo - sft (points)": None if None in (rl["format errors"], sft["format errors"])
               else round(rl["format errors"] - sft["format errors"], 1)}
    validation = json.loads((data / "manifest.json").read_text())["counts"]["val"]["samples"]
    notes = (__doc__.split("\n\n")[1].replace("\n", " ") + f" Validation: {', '.join(f'{n} {task}' for task, n in validation.items())} "
             "samples from unseen scenes. Scores in percent; 'train min' is each arm's wall time, its end-of-run validation and "
             "the machine's other work included. The reward (GRPO) and loss (SFT) curves are in rl_vs_sft_curves.json.")
    report.write("rl_vs_sft", "GRPO vs supervised fine-tuning at equal wall time (demo checkpoint, demo world)", rows, summary, notes)
    from backend.atomic import write_text

    write_text(report.RESULTS / "rl_vs_sft_curves.json", json.dumps(curves, indent=2) + "\n")
