"""The demo checkpoint's model card (README.md in its folder), written from what the run
measured: the command, wall times and machine load, the model, the training, the scores
against the bars of issue 8, and what limited them."""

from __future__ import annotations

import json
from pathlib import Path

from backend.atomic import write_text

# (report task, key, label, bar)
BARS = (
    ("detection", "mAP_nc", "detection AP_nc (mean over classes)", 0.5),
    ("grounding", "Acc@0.5", "grounding Acc@0.5", 0.5),
    ("classification", "accuracy", "scene classification accuracy", 0.9),
    ("zoom", "accuracy", "Zoom-in Chain question accuracy (10,240-12,288 px mosaics)", 0.7),
    ("vqa", "accuracy", "VQA accuracy (tiles and scene views)", None),
    ("captioning", "CIDEr", "captioning CIDEr-D", None),
)
# What limited the scores, as observed in the run this card describes (edited by hand after a
# run: numbers alone do not say why).
LIMITS = """\
- Compute: the whole budget is CPU minutes. Every sample is a 224 px tile (64 visual tokens) or a
  view of at most 448 x 448 px, and the model is small, so it can see tens of thousands of samples;
  a larger model or larger views would see fewer.
- Small objects: a car is about 15 x 7 px. An IoU over 0.5 with a rotated box that narrow needs
  its corners within about two pixels, which the vision tower at this size learns last; small
  and large vehicles score lowest.
- Only the synthetic world: six classes, five kinds of place, a palette of eight colours, flat
  textures. Real imagery is outside what it has seen: it answers, but the answers mean nothing."""


def _value(report: dict, task: str, key: str):
    section = report.get("tasks", {}).get(task)
    if section is None:
        return None
    return section.get("summary", section).get(key)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def headline(report: dict) -> str:
    parts = []
    for task, key, label, bar in BARS:
        value = _value(report, task, key)
        if value is not None:
            shown = f"{value:.2f}" if task == "captioning" else _percent(value)
            parts.append(f"{label.split(' (')[0]} {shown}" + (f" (bar {_percent(bar)})" if bar else ""))
    return "; ".join(parts)


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def write_model_card(folder: Path, report: dict, summary: dict, timings: dict, machine: dict, manifest: dict, overrides: dict) -> Path:
    config = summary.get("config", {})
    scratch = json.loads((folder / "config.json").read_text())
    text, vision = scratch.get("text_config", {}), scratch.get("vision_config", {})
    parameters = summary.get("parameters")
    counts = manifest.get("counts", {})
    train, val = counts.get("train", {}), counts.get("val", {})
    rows = []
    for task, key, label, bar in BARS:
        value = _value(report, task, key)
        shown = "-" if value is None else (f"{value:.3f}" if task == "captioning" else _percent(value))
        verdict = "" if bar is None or value is None else ("met" if value >= bar else "**not met**")
        samples = report.get("tasks", {}).get(task, {})
        n = samples.get("summary", {}).get("images") if task == "detection" else samples.get("samples")
        rows.append(f"| {label} | {shown} | {_percent(bar) if bar else '-'} | {verdict} | {n if n is not None else '-'} |")
    detection = report.get("tasks", {}).get("detection", {})
    per_class = "\n".join(f"| {c['label']} | {c['truth']} | {c['predictions']} | {_percent(c['precision'])} | {_percent(c['recall'])} | {_percent(c['ap'])} |"
                          for c in detection.get("classes", []))
    zoom = report.get("tasks", {}).get("zoom", {})
    timing_rows = "\n".join(
        f"| {name} | {_minutes(t.get('wall_s'))} | {t.get('load', {}).get('mean', '-')} (min {t.get('load', {}).get('min', '-')}, max {t.get('load', {}).get('max', '-')}) |"
        for name, t in timings.items()
    )
    total = sum(t.get("wall_s", 0.0) for t in timings.values())
    card = f"""# RSCoVLM demo checkpoint (synthetic world)

A Qwen2.5-VL trained from random weights by this repository's own pipeline, so that `make run`
shows the whole job on a fresh machine with no download and no GPU: objects found and placed on
a map, a caption, a question answered through the Zoom-in Chain. It has the classes and files of
a released RSCoVLM checkpoint (`Qwen2_5_VLForConditionalGeneration`, `Qwen2_5_VLProcessor`, a
chat template, safetensors) and speaks MODEL_IO's prompts and answer formats, so the backend
loads and drives it exactly as it drives RSCoVLM-7B.

**It knows only the synthetic world** of `training/layouts.py`: six object classes (small
vehicle, large vehicle, ship, plane, storage tank, building) in eight colours, five kinds of
place (airport, harbor, industrial area, parking lot, residential area), countryside with small
sites, at 0.3 m per pixel, seen in views of at most 448 x 448 px. On real imagery it answers,
but its answers mean nothing: use RSCoVLM-7B there (see the repository README).

## How it was made

```bash
make demo-model    # = .venv/bin/python -m training.demo_model
```

1. `training.demo_data` generates the co-training data: {train.get('images', '-')} training images
   ({', '.join(f'{k} {v}' for k, v in train.get('samples', {}).items())} samples) from scenes with
   seeds from {train.get('seeds', ['-'])[0]}, and a validation split from seeds {val.get('seeds', ['-'])[0]} and up,
   never used in training.
2. `training.scratch --size demo` builds the model with random weights; its byte-level BPE
   tokenizer ({text.get('vocab_size', '-')} tokens) is trained on the data's texts.
3. `training.fit` trains every weight (`training/configs/demo.yaml`{', overrides ' + json.dumps(overrides) if overrides else ''}):
   {summary.get('steps', '-')} steps of {config.get('batch_size', '-')} samples, AdamW at
   {config.get('learning_rate', '-')} with {config.get('warmup_steps', '-')} warm-up steps and a
   {config.get('lr_scheduler', '-')} decay, weight decay {config.get('weight_decay', '-')}, fp32; final
   validation loss {summary.get('val_loss') if summary.get('val_loss') is None else round(summary['val_loss'], 4)}.
4. `rscovlm eval run` scores it on the validation split (below).

Wall time on {machine.get('cores')} CPU cores ({machine.get('cpu')}; torch {machine.get('torch')},
{machine.get('torch_threads')} threads; GPU: {machine.get('gpu') or 'none'}), with the machine's
1-minute load average while each step ran (the machine was shared with other work; a load of
2 means both cores were busy):

| step | wall time | load average |
|---|---|---|
{timing_rows}
| total | {_minutes(total)} | |

The same command reproduces it: data, initial weights and sample order come from fixed seeds.

## The model

| | |
|---|---|
| parameters | {f'{parameters:,}' if parameters is not None else '-'} |
| language model | {text.get('num_hidden_layers')} layers, hidden {text.get('hidden_size')}, {text.get('num_attention_heads')} heads ({text.get('num_key_value_heads')} KV), MLP {text.get('intermediate_size')} |
| vision tower | {vision.get('depth')} layers, hidden {vision.get('hidden_size')}, {vision.get('num_heads')} heads, patch 14, 2 x 2 merge (one token per 28 x 28 px) |
| views | {json.dumps(manifest.get('pixel_budget'))}; detection tiles of {manifest.get('tile_size')} px |

`rscovlm_task_defaults.json` declares the view sizes it was trained on: the task commands and
`rscovlm eval run` use them when this checkpoint is the model (options given on the command line
still win), so `rscovlm detect` cuts 224 px tiles and whole-scene tasks read at most 448 x 448 px.

## Scores

Measured with `rscovlm eval run` on the validation split: tiles, whole-scene views and
countryside mosaics generated with seeds never used in training. Zoom questions run the real
chain on the full-resolution mosaic (overview, `image_zoom_in` call, native re-read, answer).

| task | score | bar | | samples |
|---|---|---|---|---|
{chr(10).join(rows)}

Detection per class (AP_nc: every box scores 1, VOC07 11-point AP at rotated IoU 0.5):

| class | truth | predicted | precision | recall | AP_nc |
|---|---|---|---|---|---|
{per_class}

Zoom-in Chain outcomes: {json.dumps(zoom.get('outcomes', {}))}.

## What limited it

{LIMITS}
"""
    return write_text(folder / "README.md", card)
