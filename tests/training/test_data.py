"""`training.data`: data specs and weights, both conversation formats, all tasks in one batch,
random rescaling, and the label mask (only answers are learned)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.errors import UserError
from backend.prompts import DETECTION_SYSTEM, NO_OBJECTS
from backend.resolution import smart_resize
from training.data import IGNORE_INDEX, Collator, DatasetSpec, Mixture, parse_data_spec, rescale_answer

ZOOM_CALL = '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [10, 20, 120, 140]}}\n</tool_call>'


def _image(path: Path, width: int, height: int, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path.name if path.parent.name != "images" else f"images/{path.name}"


def _write(path: Path, records: list[dict]) -> Path:
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
    _write(folder / "conversations.jsonl", records)
    llava = [{"id": "v", "image": img[3], "conversations": [
        {"from": "human", "value": "<image>\nIs there a ship? Answer the question using a single word or a short phrase."},
        {"from": "gpt", "value": "yes"}]}]
    _write(folder / "vqa.json", llava)
    return folder


def test_data_spec_weights():
    specs = parse_data_spec("data/boats*3, data/general%20,plain")
    assert specs == [DatasetSpec("data/boats", 3), DatasetSpec("data/general", 1, 20.0), DatasetSpec("plain")]
    assert [str(s) for s in specs] == ["data/boats*3", "data/general%20", "plain"]
    for bad in ("", "a%0", "a%150", "a*0"):
        with pytest.raises(UserError):
            parse_data_spec(bad)


def test_mixture_repeats_and_keeps_a_seeded_share(exported):
    folder, manifest = exported
    tiles = manifest["counts"]["train"]["tiles"]
    mixture = Mixture(parse_data_spec(f"{folder}*3,{folder}%50"), "train", seed=1)
    half = -(-tiles // 2)
    assert len(mixture) == 3 * tiles + half
    assert mixture.composition == [{"dataset": f"{folder}*3", "read": tiles, "used": 3 * tiles},
                                   {"dataset": f"{folder}%50", "read": tiles, "used": half}]
    again = Mixture(parse_data_spec(f"{folder}%50"), "train", seed=1)
    other = Mixture(parse_data_spec(f"{folder}%50"), "train", seed=2)
    assert [s.id for s in again.samples] == [s.id for s in mixture.samples[3 * tiles :]]
    assert [s.id for s in other.samples] != [s.id for s in again.samples]
    assert len(Mixture(parse_data_spec(str(folder)), "val")) == manifest["counts"]["val"]["tiles"]


def test_a_spec_naming_a_missing_dataset(tmp_path):
    with pytest.raises(UserError, match="missing dataset: .*nowhere"):
        Mixture(parse_data_spec(f"{tmp_path}/nowhere*2"))


def test_broken_samples_are_named(cotraining):
    bad = _write(cotraining / "bad.jsonl", [{"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}], "images": []}])
    with pytest.raises(UserError, match="bad.jsonl:1 .*placeholder"):
        Mixture([DatasetSpec(str(bad))])
    missing = _write(cotraining / "missing.jsonl", [{"messages": [{"role": "user", "content": "<image>hi"},
                                                                  {"role": "assistant", "content": "ok"}], "images": ["nope.png"]}])
    with pytest.raises(UserError, match="1 image.* missing"):
        Mixture([DatasetSpec(str(missing))])


def test_every_task_trains_in_one_batch(cotraining, processor, tiny_checkpoint):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    mixture = Mixture(parse_data_spec(f"{cotraining},{cotraining}/vqa.json"))
    assert dict(mixture.tasks()) == {"detect": 1, "ground": 1, "caption": 1, "classify": 1, "zoom": 1, "chat": 1}
    batch = Collator(processor)([mixture[i] for i in range(len(mixture))])
    assert batch["image_grid_thw"].shape[0] == 7  # the zoom sample brings two images
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_only_answers_and_their_end_tokens_are_labels(cotraining, processor, padding_side):
    mixture = Mixture([DatasetSpec(str(cotraining))])
    examples = [mixture[i] for i in (4, 2, 0)]  # zoom (two answers), caption, detection: different lengths
    batch = Collator(processor, padding_side)(examples)
    tokenizer = processor.tokenizer
    for row, example in enumerate(examples):
        answers = [m["content"] for m in example.messages if m["role"] == "assistant"]
        expected = [t for a in answers for t in tokenizer.encode(a + "<|im_end|>", add_special_tokens=False)]
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        learned = labels != IGNORE_INDEX
        assert labels[learned].tolist() == expected
        assert (labels[learned] == ids[learned]).all()
        assert tokenizer.decode(ids[learned]) == "<|im_end|>".join(answers) + "<|im_end|>"
        pad = batch["attention_mask"][row] == 0
        assert not learned[pad].any()
        assert (pad.nonzero().min() > learned.nonzero().max()) if padding_side == "right" and pad.any() else True


def test_detection_samples_rescale_with_their_answers(cotraining):
    mixture = Mixture([DatasetSpec(str(cotraining))], rescale=1.0, seed=3)
    original = mixture.samples[0].answer()
    sizes = set()
    for epoch in range(6):
        mixture.set_epoch(epoch)
        example = mixture[0]
        height, width = example.images[0].shape[:2]
        assert (height, width) == smart_resize(height, width, min_pixels=mixture.min_pixels, max_pixels=mixture.max_pixels)
        assert example.messages[-1]["content"] == rescale_answer(original, width / 224, height / 224)
        assert mixture[0].messages[-1]["content"] == example.messages[-1]["content"]  # same epoch, same draw
        sizes.add((width, height))
    assert len(sizes) > 1
    assert all(mixture[i].images[0].shape[:2] == (224, 224 + 28 * (i % 2)) for i in range(1, 4))  # only detection rescales


def test_rescaling_answers():
    assert rescale_answer("10,20,30,40 ship", 2.0, 0.5) == "20,10,60,20 ship"
    assert rescale_answer(NO_OBJECTS, 2.0, 2.0) == NO_OBJECTS
    assert rescale_answer("100,100,30,10,45 ship", 2.0, 2.0) is None  # a rotated box's angle does not scale
