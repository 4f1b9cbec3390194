"""Contained-answer accuracy, CIDEr-D against published values, grounding Acc@0.5."""

import json

import numpy as np
import pytest

from backend.evaluation.boxes import BoxTable
from backend.evaluation.grounding import first_boxes, score_grounding
from backend.evaluation.text import caption_scores, cider_d, contained_accuracy
from tests.backend.evaluation.helpers import hbox, rbox

# SummEval's CIDEr test (Yale-LILY/SummEval, evaluation/tests/test_cider.py with
# summ_eval/test_util.py): the COCO caption scorer, untokenised, gives 2.5759014911864084.
SUMMEVAL_CANDIDATES = [
    "28-year-old chef found dead in San Francisco mall",
    "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase of a local shopping center.",
    'The victim\'s brother said he cannot imagine anyone who would want to harm him,"Finally, it went uphill again at him."',
]
SUMMEVAL_REFERENCES = [
    "28-Year-Old Chef Found Dead at San Francisco Mall",
    "A 28-year-old chef who had recently moved to San Francisco was found dead in the stairwell of a local mall this week.",
    "But the victim's brother says he can't think of anyone who would want to hurt him, saying, \"Things were finally going well for him.\"",
]


def test_cider_d_matches_the_published_summeval_value():
    mean, per_sample = cider_d(SUMMEVAL_CANDIDATES, [[r] for r in SUMMEVAL_REFERENCES])
    assert mean == pytest.approx(2.5759014911864084, abs=1e-12)
    assert len(per_sample) == 3


def test_cider_d_worked_cases():
    # identical captions, each unlike the others: every n-gram cosine is 1 -> 10 per image
    captions = ["a plane on the runway", "two ships in a harbor", "green trees around a stadium"]
    assert cider_d(captions, [[c] for c in captions])[0] == pytest.approx(10.0)
    # nothing in common -> 0; a single image has no idf (log 1 = 0) -> 0, as the COCO code
    assert cider_d(["x y z w", "p q r s"], [["a b c d"], ["e f g h"]])[0] == 0.0
    assert cider_d(["a plane"], [["a plane"]])[0] == 0.0
    # the length penalty: a longer copy scores under 10
    longer = cider_d(["a plane on the runway today", "two ships in a harbor"], [["a plane on the runway"], ["two ships in a harbor"]])[1]
    assert 0 < longer[0] < 10 and longer[1] == pytest.approx(10.0)


def test_caption_scores_lower_case_and_report_times_100(realdata):
    record = json.loads((realdata / "captions" / "rsicd" / "stadium_1_captions.jsonl").read_text().splitlines()[0])
    references = record["captions"]
    other = ["Many buildings and green trees are in a dense residential area.", "A bridge is over a river."]
    scores = caption_scores([references[0].upper(), other[0], other[1]], [references, [other[0]], [other[1]]])
    assert scores["samples"] == 3
    expected = 100 * cider_d([references[0].lower(), other[0].lower(), other[1].lower()],
                             [[r.lower() for r in references], [other[0].lower()], [other[1].lower()]])[0]
    assert scores["CIDEr"] == pytest.approx(expected) and scores["CIDEr"] > 100


def test_contained_accuracy_as_rscovlm():
    result = contained_accuracy(
        ["It is a Dense Residential area.", "harbor", "", "farmland."],
        ["dense residential", "Harbor.", "airport", ""],
    )
    assert (result["correct"], result["samples"], result["without_reference"]) == (2, 3, 1)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert contained_accuracy([], [])["accuracy"] is None


def test_grounding_acc_at_half_and_mean_iou():
    references = {"s1": hbox(0, 0, 30, 10), "s2": hbox(0, 0, 30, 10), "s3": hbox(0, 0, 30, 10), "s4": rbox(50, 50, 30, 10, 30)}
    answers = {"s1": hbox(0, 0, 30, 10), "s2": hbox(10, 0, 40, 10), "s3": None, "s4": rbox(50, 50, 30, 10, 30)}
    scores = score_grounding(references, answers)
    # s2: IoU exactly 0.5 is not over 0.5
    assert (scores.samples, scores.answered, scores.correct) == (4, 3, 2)
    assert scores.accuracy == 0.5 and scores.mean_iou == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_first_box_of_each_sample_is_the_answer():
    boxes = BoxTable.build(["a", "a", "b"], ["x", "x", "y"], np.stack([hbox(5, 5, 9, 9), hbox(0, 0, 1, 1), hbox(2, 2, 3, 3)]), line=[1, 0, 0])
    first = first_boxes(boxes)
    assert first["a"].tolist() == hbox(0, 0, 1, 1).tolist() and set(first) == {"a", "b"}
