"""Where, shape and what of box answers: the split of an answer into parts, and the NLL of each
part computed through a real (tiny) checkpoint."""

import math

import pytest
import torch

from backend.prompts import NO_OBJECTS
from training.data import IGNORE_INDEX, Collator, DatasetSpec, Mixture
from training.localisation import box_answer_nll, token_parts
from training.model_card import _localisation_table, _probe_table


def _show(parts):
    return "".join({"where": "W", "shape": "S", "what": "C", None: "."}[p] for p in parts)


def test_parts_of_an_answer_by_character():
    answer = "78,0,191,0,173,107,60,88 plane\nno idea\n 224,33,230,47 small vehicle"
    parts, boxes, shape, skipped = token_parts(answer, list(range(1, len(answer) + 1)))
    assert _show(parts) == "WW.W.SSS.S.SSS.SSS.SS.SS.CCCCC..........WWW.WW.SSS.SS.CCCCCCCCCCCCC"
    assert (boxes, shape, skipped) == (2, 6 + 2, 1)


def test_a_token_spanning_a_number_and_its_comma_counts_for_the_number():
    answer = "10,20,30,40 ship"
    ends = [3, 6, 9, 11, 16]  # "10,", "20,", "30,", "40", " ship"
    parts, boxes, shape, skipped = token_parts(answer, ends)
    assert parts == ["where", "where", "shape", "shape", "what"]
    assert (boxes, shape, skipped) == (1, 2, 0)


def test_no_objects_is_an_answer_not_a_skipped_line():
    parts, boxes, shape, skipped = token_parts(NO_OBJECTS, [len(NO_OBJECTS)])
    assert parts == [None] and (boxes, shape, skipped) == (0, 0, 0)


@pytest.fixture(scope="module")
def scored(tiny_checkpoint, exported):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    data, _ = exported
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    val = Mixture([DatasetSpec(str(data))], "val")
    chosen = [i for i, s in enumerate(val.samples) if s.task == "detect" and NO_OBJECTS not in s.answer()][:6]
    assert chosen, "the exported validation split has detection tiles with objects"
    return model, processor, val, chosen, box_answer_nll(model, processor, val, chosen, batch_size=4)


def test_counts_and_the_uniform_baseline_come_from_the_true_answers(scored):
    _, _, val, chosen, result = scored
    lines = [line for i in chosen for line in val.samples[i].answer().splitlines() if line.strip()]
    assert result["samples"] == len(chosen) and result["objects"] == len(lines) and result["lines_skipped"] == 0
    sides = [math.log(val[i].images[0].shape[0]) for i in chosen]  # square tiles
    assert result["uniform_where_nats"] == pytest.approx(sum(sides) / len(sides), rel=0.2)


def test_the_parts_add_up_to_no_more_than_the_whole_answer_loss(scored):
    """The parts partition the answer's coordinate and class tokens (commas, newlines and the
    closing token belong to none), so their nats add up to less than the answer's total."""
    model, processor, val, chosen, result = scored
    collator = Collator(processor)
    total = 0.0
    with torch.no_grad():
        for i in chosen:
            batch = collator([val[i]])
            tokens = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * tokens
    objects = result["objects"]
    parts = result["where_nats"] * 2 * objects + result["shape_nats"] * 6 * objects + result["what_nats_per_object"] * objects
    assert 0.3 * total < parts < total
    # a random model is near uniform everywhere: no part is cheap
    assert result["where_nats"] > 1.0 and result["shape_nats"] > 1.0 and result["what_nats_per_object"] > 1.0


def test_the_model_card_table():
    measured = {"detect": {"objects": 235, "where_nats": 4.546, "uniform_where_nats": 5.412, "shape_nats": 2.047, "what_nats_per_object": 0.133}}
    table = _localisation_table(measured)
    assert "| detect (235 objects) |" in table
    assert "| where: first corner, per coordinate | 4.55 |" in table and "| 5.41 |" in table
    assert _localisation_table({}) == "(not measured)"


def test_the_model_card_probe_table():
    probe = {"rows": [{"variant": "untrained", "mean best IoU": 0.0, "share IoU > 0.5": 0.0, "column R^2": -0.013},
                      {"variant": "+ position head", "steps": 1500, "fit min (1 thread)": 22.8, "mean best IoU": 0.123,
                       "share IoU > 0.5": 0.007, "column R^2": 0.974}]}
    curve = {"rows": [{"variant": "box answers alone", "steps": 3000, "schedule steps": 5000, "fit min (1 thread)": 80.8,
                       "mean best IoU": 0.205, "share IoU > 0.5": 0.049, "column R^2": 0.391}]}
    table = _probe_table(probe, curve).splitlines()
    # the trained variants only, the share as a percentage; a probe row's schedule is its steps
    assert len(table) == 4 and table[2] == "| + position head | 1500 | 1500 | 0.123 | 0.7% | 0.974 | 22.8 |"
    assert table[3] == "| box answers alone | 3000 | 5000 | 0.205 | 4.9% | 0.391 | 80.8 |"
    assert len(_probe_table(probe).splitlines()) == 3
    assert "missing" in _probe_table(None)
