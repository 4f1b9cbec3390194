"""`training.data`: data specs and weights, both conversation formats, all tasks in one batch,
random rescaling, and the label mask (only answers are learned)."""

from __future__ import annotations

import pytest

from backend.errors import UserError
from backend.prompts import NO_OBJECTS
from backend.resolution import smart_resize
from training.data import IGNORE_INDEX, Collator, DatasetSpec, Mixture, parse_data_spec, rescale_answer

from .conftest import write_records


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
    bad = write_records(cotraining / "bad.jsonl", [{"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}], "images": []}])
    with pytest.raises(UserError, match="bad.jsonl:1 .*placeholder"):
        Mixture([DatasetSpec(str(bad))])
    missing = write_records(cotraining / "missing.jsonl", [{"messages": [{"role": "user", "content": "<image>hi"},
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
    padded_rows = 0
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
        if pad.any():  # the padding is on its side of the whole sequence, answers included
            padded_rows += 1
            if padding_side == "right":
                assert pad.nonzero().min() > learned.nonzero().max() and pad[-1]
            else:
                assert pad.nonzero().max() < learned.nonzero().min() and pad[0]
    assert padded_rows == len(examples) - 1  # three lengths: all but the longest are padded


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
