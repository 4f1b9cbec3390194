"""The task rewards: right answers score 1, wrong ones less, and each known way of gaming a
reward scores no more than an honest miss."""

from __future__ import annotations

import pytest

from training.rewards import (
    Reference,
    box_set_reward,
    caption_reward,
    classification_reward,
    detection_reward,
    format_reward,
    gated,
    grounding_reward,
    rouge_l,
    vqa_reward,
)

SIZE = (224, 224)
PLANE = "40,40,100,40,100,80,40,80 plane"
SHIP = "150,150,190,150,190,210,150,210 ship"
DETECT = Reference("detect", f"{PLANE}\n{SHIP}", SIZE)
GROUND = Reference("ground", "55,138,61,153 small vehicle", SIZE)


def test_a_right_detection_scores_one_and_a_partial_one_in_between():
    assert detection_reward(DETECT, f"{SHIP}\n{PLANE}") == pytest.approx(1.0)  # order is free
    half = detection_reward(DETECT, PLANE)
    assert 0.4 < half < 0.9
    shifted = detection_reward(DETECT, "44,44,104,44,104,84,44,84 plane\n" + SHIP)
    assert half < shifted < 1.0  # a box a little off still counts, by its IoU
    assert detection_reward(DETECT, "40,40,100,40,100,80,40,80 ship\n" + SHIP) < shifted  # the wrong class is no match
    assert detection_reward(Reference("detect", "There are none.", SIZE), "There are none.") == 1.0
    assert detection_reward(Reference("detect", "There are none.", SIZE), PLANE) == 0.0
    assert detection_reward(GROUND, PLANE) is None  # another task's sample


def test_gaming_detection_does_not_pay():
    honest_miss = gated(DETECT, PLANE)
    duplicates = gated(DETECT, "\n".join([PLANE] * 6 + [SHIP] * 6))
    whole_image = gated(DETECT, "0,0,224,0,224,224,0,224 plane\n0,0,224,0,224,224,0,224 ship")
    other_frame = gated(DETECT, "178,178,446,178,446,357,178,357 plane\n669,669,848,669,848,937,669,937 ship")  # 0-1000 coordinates
    assert duplicates < honest_miss and whole_image == 0.0 and other_frame == 0.0
    assert gated(DETECT, "") == 0.0 and gated(DETECT, "find the plane, ship.") == 0.0  # empty, the prompt echoed
    assert gated(DETECT, f"{PLANE}\n{SHIP}", leaked_special=True) == 0.0  # a stray <|image_pad|> in the completion
    assert gated(DETECT, f"{PLANE}\n<|image_pad|>{SHIP}") == 0.0
    assert gated(DETECT, f"{PLANE}\nnan,nan,1,2,3,4,5,6 ship") == 0.0  # a line that does not read: not in form
    assert box_set_reward([], []) == 1.0


def test_grounding_is_the_iou_of_one_box():
    assert grounding_reward(GROUND, "55,138,61,153 small vehicle") == pytest.approx(1.0)
    assert grounding_reward(GROUND, "55,138,61,145 small vehicle") == pytest.approx(7 / 15)  # 7 of its 15 rows
    assert gated(GROUND, "55,138,61,153 a\n55,138,61,153 b") == 0.0  # two answers to one question
    polygon = Reference("ground", "10,10,60,10,60,40,10,40 ship", SIZE)
    assert grounding_reward(polygon, "10,10,60,10,60,40,10,40 ship") == pytest.approx(1.0)
    assert format_reward(GROUND, "There are none.") == 1.0 and grounding_reward(GROUND, "There are none.") == 0.0


def test_words_numbers_and_captions():
    scene = Reference("classify", "parking lot")
    assert classification_reward(scene, "Parking lot.") == 1.0 and classification_reward(scene, "harbor") == 0.0
    assert format_reward(scene, "It is a parking lot " + "and more " * 10) == 0.0  # a one-word task answered at length
    count = Reference("vqa", "4")
    assert vqa_reward(count, "4") == 1.0 and vqa_reward(count, "four") == 1.0 and vqa_reward(count, "5") == pytest.approx(0.75)
    assert vqa_reward(count, "8") == 0.0 and vqa_reward(count, "red") == 0.0 and vqa_reward(count, "4 or 5") == 0.0
    colour = Reference("vqa", "grey")
    assert vqa_reward(colour, "Grey.") == 1.0 and vqa_reward(colour, "light grey") == 0.5 and vqa_reward(colour, "blue") == 0.0
    caption = Reference("caption", "An airport with a grey small vehicle.")
    assert caption_reward(caption, "An airport with a grey small vehicle.") == pytest.approx(1.0)
    assert 0.0 < caption_reward(caption, "An airport with two planes.") < 1.0
    assert caption_reward(caption, "an airport " * 40) == 0.0 and caption_reward(caption, "") == 0.0  # runaway, empty
    assert rouge_l("a b c d", "a c d") == pytest.approx(rouge_l("a c d", "a b c d"), rel=0.3)


def test_change_boxes_match_whatever_they_are_called():
    reference = Reference("change", "9,14,128,92 changed buildings", SIZE)
    assert gated(reference, "9,14,128,92 the buildings in the second image") == pytest.approx(1.0)
    assert gated(reference, "There are none.") == 0.0


def test_untrusted_answers_never_raise():
    for answer in ("", "nan", "inf,inf,inf,inf x", "1e308,1e308,1e308,1e308 plane", "-" * 5000, "[" * 300, "9" * 400 + " plane"):
        for reference in (DETECT, GROUND, Reference("vqa", "3"), Reference("caption", "x"), Reference("classify", "harbor")):
            value = gated(reference, answer)
            assert value is None or 0.0 <= value <= 1.0
