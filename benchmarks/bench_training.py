"""Training costs against their bare baselines, measured in the same run.

Export: `rscovlm train export` per tile (plan, clip and convert the labels, read, write the
PNG, the DOTA file and the conversations) against the bare read of the same tiles through
backend.raster (the pixels the export must read anyway).
Fit: one optimizer step of `training.fit` (data loading from PNG, chat template, label mask,
accelerate, logging) against a bare PyTorch loop on batches collated beforehand (forward,
backward, AdamW), same model, same samples. Full fine-tuning of the from-scratch "small"
checkpoint on 504 px tiles (324 visual tokens), batch 1, fp32 on the CPU: the demo-checkpoint
setting. Each figure is the fastest of its repetitions (passes, or steps after two warm-up
steps): on a shared machine other work only ever adds time; medians beside them."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import data, report


def _small_checkpoint(size: str) -> Path:
    from training.scratch import build_checkpoint

    path = data.DATA / f"{size}-random"
    if not (path / "config.json").exists():
        build_checkpoint(path, size, seed=0)
    return path


def _export(scene: Path, out: Path, passes: int) -> tuple[list[float], list[float], int]:
    """Seconds per tile of each export pass and of each bare read of the same tiles."""
    from backend.georef import View
    from backend.raster import RasterSource
    from training.export import ExportOptions, export_dataset

    options = ExportOptions(keep_empty=1.0, block_size=1024)
    exports, reads = [], []
    for _ in range(passes):
        start = time.perf_counter()
        manifest = export_dataset(scene, scene.with_suffix(".truth.gpkg"), out, class_field="label", options=options, overwrite=True)
        tiles = manifest["counts"]["train"]["tiles"] + manifest["counts"]["val"]["tiles"]
        exports.append((time.perf_counter() - start) / tiles)
        windows = [json.loads(line) for split in ("train", "val") for line in (out / split / "conversations.jsonl").read_text().splitlines()]
        views = [View(*r["window"], *r["resized_size"]) for r in windows if r["task"] == "detect"]
        start = time.perf_counter()
        with RasterSource.open(scene) as source:
            stretch = source.stretch_for(source.window_for_extent(None))
            for view in views:
                source.read_view(view, stretch)
        reads.append((time.perf_counter() - start) / len(views))
    return exports, reads, tiles


def _bare_steps(checkpoint: Path, dataset: Path, steps: int, max_pixels: int) -> list[float]:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from backend.engine.local import configure_pixel_limits
    from backend.resolution import MIN_PIXELS
    from training.data import Collator, DatasetSpec, Mixture

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(checkpoint)
    configure_pixel_limits(processor, MIN_PIXELS, max_pixels)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train = Mixture([DatasetSpec(str(dataset))], "train", max_pixels=max_pixels)
    collator = Collator(processor)
    batches = [collator([train[i % len(train)]]) for i in range(steps)]
    times = []
    for batch in batches:
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[2:]


def _fit_steps(checkpoint: Path, dataset: Path, out: Path, steps: int, max_pixels: int, num_workers: int) -> list[float]:
    from training.config import load_config
    from training.fit import FitSettings, fit

    config = load_config(None, {"method": "full", "max_steps": steps, "save_every": steps * 10, "val_samples": 0,
                                "val_ap_samples": 0, "rescale": 0.0, "max_pixels": max_pixels, "num_workers": num_workers,
                                "learning_rate": 1e-4, "lr_scheduler": "constant"})
    shutil.rmtree(out, ignore_errors=True)
    fit(FitSettings(str(checkpoint), str(dataset), str(out), config))
    elapsed = [json.loads(line)["elapsed_s"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return [b - a for a, b in zip(elapsed[1:], elapsed[2:])]


def main(quick: bool = False) -> dict:
    from backend.resolution import MAX_PIXELS

    size = "tiny" if quick else "small"
    steps = 6 if quick else 14
    scene = data.scene(2048 if quick else 4096, seed=5)
    checkpoint = _small_checkpoint(size)
    work = Path(tempfile.mkdtemp(prefix="bench_training.", dir=data.DATA))
    try:
        exports, reads, tiles = _export(scene, work / "dataset", 2 if quick else 3)
        timings = {"read": reads, "export": exports, "bare": [], "fit": [], "fit_workers": []}
        for _ in range(2):  # alternated, so load from elsewhere falls on both sides
            timings["bare"] += _bare_steps(checkpoint, work / "dataset", steps, MAX_PIXELS)
            timings["fit"] += _fit_steps(checkpoint, work / "dataset", work / "run", steps, MAX_PIXELS, 0)
            timings["fit_workers"] += _fit_steps(checkpoint, work / "dataset", work / "run", steps, MAX_PIXELS, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = {
        "read": "bare read of an exported tile (backend.raster)",
        "export": "export per tile (labels, read, PNG, DOTA, conversations)",
        "bare": f"bare training step ({size} checkpoint, full, batch 1)",
        "fit": "training.fit step, num_workers 0",
        "fit_workers": "training.fit step, num_workers 1",
    }
    rows = [{"step": labels[k], "fastest_ms": min(v) * 1e3, "median_ms": statistics.median(v) * 1e3} for k, v in timings.items()]
    fastest = {k: min(v) for k, v in timings.items()}
    summary = {
        "export_over_read": fastest["export"] / fastest["read"],
        "fit_over_bare_step": fastest["fit"] / fastest["bare"],
        "fit_workers1_over_bare_step": fastest["fit_workers"] / fastest["bare"],
        "tiles": tiles,
        "steps": steps,
    }
    return report.write("training", "Training: export and fit against their bare baselines", rows, summary,
                        notes=__doc__.split("\n", 1)[1].replace("\n", " ").strip())


if __name__ == "__main__":
    main()
