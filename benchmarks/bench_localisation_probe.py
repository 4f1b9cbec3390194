"""Where a from-scratch Qwen2.5-VL learns where things are, and what the training-only heads add.

The setting of ../shared/docs/LOCALISATION_BASELINE.md, in this repository's data format: 224 px
views of plain noisy ground holding one or two rotated rectangles of one class ("small
vehicle", 30-60 x 12-24 px: one to two visual tokens long), MODEL_IO's detection prompt and
polygon answer. The demo's model size (training.scratch DEMO) and fit settings
(training/configs/demo.yaml) train on it through `training.fit`, once per variant, from the same
initial weights on the same samples: box answers alone (the baseline), with the position head
(training.position_head), with the dense head (training.dense_head), with both, and box answers alone and with the position head
under LOCALISATION_BASELINE's optimiser (twice the learning rate, one-cycle shape). Each result is
scored by the backend itself (engine, detection prompt, answer parser) on unseen views: mean best
IoU of each true rectangle with any answered one, the share of rectangles found at IoU > 0.5, and
the 'where' nats of training.localisation (against a uniform guess). A second measure reads how
well a ridge probe finds each image token's column in its state after the position head's layer.

    python -m benchmarks localisation_probe            # about 2.5 hours on 2 CPU cores (a fitted variant is reused)
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import data, report

LABEL = "small vehicle"
SIDE = 224
# LOCALISATION_BASELINE's optimiser: twice the demo's learning rate, peaking at 30% of the steps
# (the one-cycle shape, as warm-up and cosine decay); train() turns the share into warm-up steps.
BASELINE_OPTIMISER = {"learning_rate": 1e-3, "warmup_share": 0.3}
VARIANTS = {
    "box answers alone": {},
    "+ position head": {"position_head_weight": 1.0},
    "+ dense head": {"dense_head_weight": 1.0},
    "+ position and dense heads": {"position_head_weight": 1.0, "dense_head_weight": 1.0},
    "box answers alone, baseline's lr": BASELINE_OPTIMISER,
    "+ position head, baseline's lr": {**BASELINE_OPTIMISER, "position_head_weight": 1.0},
}
FIT_TIME = "probe_fit_time.json"


def view(rng: np.random.Generator):
    """One view: (RGB array, true rectangles as 4 x 2 float corners)."""
    import shapely
    from PIL import Image, ImageDraw

    ground = rng.integers(40, 200, size=3)
    image = Image.fromarray(np.clip(ground + rng.normal(0, 8, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8))
    draw, placed = ImageDraw.Draw(image), []
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(50):
            length, width, angle = rng.uniform(30, 60), rng.uniform(12, 24), rng.uniform(0, math.pi)
            cx, cy = rng.uniform(length / 2, SIDE - length / 2, size=2)
            c, s = math.cos(angle), math.sin(angle)
            corners = np.array([[cx + dx * c - dy * s, cy + dx * s + dy * c]
                                for dx, dy in ((-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2), (-length / 2, width / 2))])
            if not any(shapely.Polygon(corners).intersects(shapely.Polygon(p)) for p in placed):
                break
        colour = tuple(int(v) for v in (255 - ground + rng.integers(-40, 40, 3)).clip(0, 255))
        draw.polygon([tuple(p) for p in corners], fill=colour)
        placed.append(corners)
    return np.array(image), placed


def answer(rectangles) -> str:
    """MODEL_IO's detection answer: integer corners in the order the training data writes them."""
    from backend.geometry import order_vertices

    corners = sorted((order_vertices(np.rint(r)).astype(int) for r in rectangles), key=lambda q: (int(q[0, 1]), int(q[0, 0])))
    return "\n".join(",".join(str(v) for v in q.reshape(-1)) + f" {LABEL}" for q in corners)


def write_split(root: Path, split: str, count: int, seed: int) -> list:
    from PIL import Image

    from backend.prompts import detection_prompt

    system, user = detection_prompt([LABEL])
    folder = root / split
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng, truths, lines = np.random.default_rng(seed), [], []
    for i in range(count):
        image, rectangles = view(rng)
        name = f"images/v{i:05d}.png"
        Image.fromarray(image).save(folder / name)
        truths.append([r.tolist() for r in rectangles])
        lines.append(json.dumps({"id": f"{split}/v{i:05d}", "task": "detect", "images": [name], "image_size": [SIDE, SIDE],
                                 "resized_size": [SIDE, SIDE], "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": f"<image>{user}"}, {"role": "assistant", "content": answer(rectangles)}]}))
    (folder / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "truth.json").write_text(json.dumps(truths))
    return truths


def run_name(variant: str) -> str:
    """A variant's run folder: its name in letters, digits and underscores."""
    return re.sub(r"\W+", "_", variant.replace("+", "with")).strip("_")


def fit_config(overrides: dict, steps: int, save_every: int):
    """The demo's fit settings (training/configs/demo.yaml) with a variant's overrides, for a
    schedule of `steps`; a variant's `warmup_share` becomes warm-up steps of that schedule."""
    from training.config import SHIPPED_CONFIGS, load_config

    overrides = dict(overrides)
    if "warmup_share" in overrides:
        overrides["warmup_steps"] = round(overrides.pop("warmup_share") * steps)
    return load_config(SHIPPED_CONFIGS / "demo.yaml", {**overrides, "max_steps": steps, "eval_every": 0, "val_samples": 16,
                                                   "val_ap_samples": 0, "save_every": save_every, "log_every": 50})


def train(job: tuple) -> dict:
    """One variant's fit (a process of its own, one thread); a variant already fitted is reused."""
    name, overrides, model, dataset, out, steps = job
    if (out / FIT_TIME).is_file():
        return json.loads((out / FIT_TIME).read_text())
    import torch

    torch.set_num_threads(1)
    from training.fit import FitSettings, fit

    config = fit_config(overrides, steps, save_every=steps)
    started = time.monotonic()
    summary = fit(FitSettings(str(model), str(dataset), str(out), config))
    fitted = {"variant": name, "fit_s": time.monotonic() - started, "val_loss": summary.get("val_loss")}
    (out / FIT_TIME).write_text(json.dumps(fitted))
    return fitted


def score(model: Path, dataset: Path) -> dict:
    import shapely
    from PIL import Image

    from backend.engine.local import load_local_engine
    from backend.parsing import parse_boxes
    from backend.prompts import detection_prompt, single_turn
    from training.localisation import measure

    engine = load_local_engine(str(model), device="cpu")
    system, user = detection_prompt([LABEL])
    truths = json.loads((dataset / "val" / "truth.json").read_text())
    best, answered, skipped = [], 0, 0
    for i, rectangles in enumerate(truths):
        image = np.array(Image.open(dataset / "val" / f"images/v{i:05d}.png").convert("RGB"))
        text = engine.generate([single_turn(image, user, system)], max_new_tokens=96)[0].text
        parsed = parse_boxes(text, (SIDE, SIDE), [LABEL])
        answered, skipped = answered + len(parsed.boxes), skipped + len(parsed.skipped)
        found = [shapely.Polygon(b.points) for b in parsed.boxes]
        for r in rectangles:
            truth = shapely.Polygon(r)
            best.append(max((truth.intersection(f).area / truth.union(f).area for f in found if f.is_valid and f.area > 0), default=0.0))
    engine.close()
    nats = measure(model, dataset, samples=64)["detect"]
    best = np.array(best)
    return {"mean best IoU": round(float(best.mean()), 3), "share IoU > 0.5": round(float((best > 0.5).mean()), 3),
            "boxes / rectangles": f"{answered} / {len(best)}", "lines skipped": skipped,
            "where nats": round(nats["where_nats"], 2), "uniform nats": round(nats["uniform_where_nats"], 2),
            "column R^2": round(column_r2(model, dataset), 3)}


def column_r2(model_dir: Path, dataset: Path) -> float:
    """training.position_head.column_r2 on the validation views."""
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from training import position_head

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    processor = AutoProcessor.from_pretrained(str(model_dir))
    content = [{"type": "image"}, {"type": "text", "text": f"find the {LABEL}."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    views = len(json.loads((dataset / "val" / "truth.json").read_text()))
    inputs = [processor(text=[text], images=[Image.open(dataset / "val" / f"images/v{i:05d}.png").convert("RGB")], return_tensors="pt")
              for i in range(views)]
    return position_head.column_r2(model, inputs)


def views(quick: bool) -> tuple[int, int]:
    """Training and validation views of the setting."""
    return (200, 8) if quick else (12000, 96)


def setting(quick: bool, size: str = "demo") -> tuple[Path, Path, Path]:
    """(work folder, dataset, initial weights of a training.scratch size) of the probe, made once
    from fixed seeds and kept in benchmarks/data (bench_localisation_curve trains on the same).
    Every size gets the same tokenizer, trained on the same answers."""
    from training.scratch import build_checkpoint

    train_views, val_views = views(quick)
    root = data.DATA / ("localisation_probe_quick" if quick else "localisation_probe")
    dataset = root / "data"
    if not (dataset / "val" / "truth.json").exists():
        write_split(dataset, "train", train_views, seed=1)
        write_split(dataset, "val", val_views, seed=2)
    model = root / ("scratch" if size == "demo" else f"scratch-{size}")
    if not (model / "config.json").exists():
        corpus = [json.loads(line)["messages"][-1]["content"] for line in (dataset / "train" / "conversations.jsonl").read_text().splitlines()[:500]]
        build_checkpoint(model, size, seed=0, extra_corpus=corpus)
    return root, dataset, model


def main(quick: bool = False) -> dict:
    steps = 20 if quick else 1500
    train_views, val_views = views(quick)
    root, dataset, model = setting(quick)
    jobs = [(name, overrides, model, dataset, root / "runs" / run_name(name), steps) for name, overrides in VARIANTS.items()]
    with ProcessPoolExecutor(max_workers=max(1, min(len(jobs), (os.cpu_count() or 1)))) as pool:
        fits = list(pool.map(train, jobs))
    rows = [{"variant": "untrained", **score(model, dataset)}]
    for job, fitted in zip(jobs, fits):
        rows.append({"variant": job[0], "steps": steps, "fit min (1 thread)": round(fitted["fit_s"] / 60, 1), **score(job[4] / "model", dataset)})
    baseline = rows[1]["mean best IoU"] or float("nan")
    for row in rows[1:]:
        row["IoU vs box answers alone"] = round(row["mean best IoU"] / baseline, 2) if baseline == baseline else None
    summary = {row["variant"]: row["mean best IoU"] for row in rows}
    notes = (f"{steps} steps of batches of 8 (training/configs/demo.yaml: AdamW 5e-4, warm-up and cosine decay), the demo's model size, "
             f"{train_views} training views, scored on {val_views} unseen ones by the backend's engine and parser. "
             "LOCALISATION_BASELINE.md reports mean best IoU 0.16 at 1,500 steps and 0.29 at 3,000 for this setting.")
    return report.write("localisation_probe", "Learning where: box answers alone and with the training-only heads", rows, summary, notes)
