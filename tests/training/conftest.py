"""Fixtures of the training tests: a dataset exported from the session's synthetic scene."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.prompts import DETECTION_SYSTEM

# Small tiles keep each sample at 81 visual tokens, so a training step on the tiny model takes
# a fraction of a second; 512 px blocks split the 1024 px scene into four.
TILE, OVERLAP, BLOCK = 256, 64, 512


@pytest.fixture(scope="session")
def exported(scene, tmp_path_factory):
    from training.export import ExportOptions, export_dataset

    path, _ = scene
    out = tmp_path_factory.mktemp("datasets") / "scene"
    options = ExportOptions(tile_size=TILE, tile_overlap=OVERLAP, block_size=BLOCK, keep_empty=1.0, val_fraction=0.25, seed=0)
    manifest = export_dataset(path, path.with_suffix(".truth.gpkg"), out, class_field="label", options=options)
    return out, manifest


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


ZOOM_CALL = '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [10, 20, 120, 140]}}\n</tool_call>'


def _image(path: Path, width: int, height: int, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path.name if path.parent.name != "images" else f"images/{path.name}"


def write_records(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


@pytest.fixture
def cotraining(tmp_path) -> Path:
    """One JSONL file with every task, in our format, and a LLaVA-style JSON file."""
    folder = tmp_path / "mix"
    img = [_image(folder / "images" / f"{i}.png", 224 + 28 * (i % 2), 224, i) for i in range(6)]
    records = [
        {"id": "d", "task": "detect", "images": [img[0]], "resized_size": [224, 224], "messages": [
            {"role": "system", "content": DETECTION_SYSTEM["polygon"]},
            {"role": "user", "content": "<image>find the plane, ship."},
            {"role": "assistant", "content": "10,20,60,20,60,40,10,40 plane\n100,100,150,110,145,135,95,125 ship"}]},
        {"id": "g", "task": "ground", "images": [img[1]], "messages": [
            {"role": "system", "content": DETECTION_SYSTEM["hbox"]},
            {"role": "user", "content": "<image>find the white ship"},
            {"role": "assistant", "content": "12,30,90,77 white ship"}]},
        {"id": "c", "task": "caption", "images": [img[2]], "messages": [
            {"role": "user", "content": "<image>Describe the image"},
            {"role": "assistant", "content": "A harbour with two ships."}]},
        {"id": "k", "task": "classify", "images": [img[3]], "messages": [
            {"role": "user", "content": "<image>Classify the image within one of the given classes:harbor,airport."},
            {"role": "assistant", "content": "harbor"}]},
        {"id": "z", "task": "zoom", "images": [img[4], img[5]], "messages": [
            {"role": "user", "content": "<image>How many ships are moored?\nZoom in to the region of interest and answer the question."},
            {"role": "assistant", "content": ZOOM_CALL},
            {"role": "user", "content": "<image>Here's the zoomed-in image. You can complete your task now."},
            {"role": "assistant", "content": "2"}]},
    ]
    write_records(folder / "conversations.jsonl", records)
    llava = [{"id": "v", "image": img[3], "conversations": [
        {"from": "human", "value": "<image>\nIs there a ship? Answer the question using a single word or a short phrase."},
        {"from": "gpt", "value": "yes"}]}]
    write_records(folder / "vqa.json", llava)
    return folder
