"""Model answers are untrusted text: every MODEL_IO form is read, nothing raises, skips are counted."""

import random
import string

import numpy as np
import pytest

from backend.parsing import match_choice, match_class_in_text, match_label, parse_boxes

SIZE = (504, 504)
CLASSES = ["plane", "ship", "small vehicle", "large vehicle"]


def corners(box):
    return np.round(box.points, 3).tolist()


def test_polygon_lines_in_trained_order_and_labels():
    text = "10,20,60,20,60,40,10,40 plane\n100,100,140,110,130,150,90,140 small vehicle"
    answer = parse_boxes(text, SIZE, CLASSES)
    assert [b.label for b in answer.boxes] == ["plane", "small vehicle"]
    assert corners(answer.boxes[0]) == [[10, 20], [60, 20], [60, 40], [10, 40]]
    assert answer.skipped == [] and not answer.none
    assert [b.line for b in answer.boxes] == [0, 1]
    assert all(b.form == "polygon" for b in answer.boxes)


def test_crossed_vertex_order_is_rectified():
    # a bow-tie order of the same rectangle's corners
    answer = parse_boxes("10,20,60,40,60,20,10,40 plane", SIZE, CLASSES)
    assert corners(answer.boxes[0]) == [[10, 20], [60, 20], [60, 40], [10, 40]]


def test_rotated_box_form():
    answer = parse_boxes("100,100,40,20,0 ship\n100,100,40,20,90 ship", SIZE, CLASSES)
    assert corners(answer.boxes[0]) == [[80, 90], [120, 90], [120, 110], [80, 110]]
    xs, ys = answer.boxes[1].points[:, 0], answer.boxes[1].points[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((90, 110, 80, 120))


def test_horizontal_box_form_and_swapped_corners():
    answer = parse_boxes("50,60,10,20 plane", SIZE, CLASSES)
    assert corners(answer.boxes[0]) == [[10, 20], [50, 20], [50, 60], [10, 60]]


def test_normalised_coordinates_are_scaled_to_the_view():
    answer = parse_boxes("0.1,0.2,0.5,0.6 plane", (500, 1000), CLASSES)
    assert corners(answer.boxes[0]) == [[50, 200], [250, 200], [250, 600], [50, 600]]


@pytest.mark.parametrize(
    "text",
    [
        '```json\n[{"bbox_2d": [10, 20, 60, 40], "label": "plane"}]\n```',
        '[{"bbox_2d": [10, 20, 60, 40], "label": "plane"}]',
        '{"quadrant bbox": [10, 20, 60, 20, 60, 40, 10, 40], "label": "plane"}',
        '```json\n[{"oriented bbox": [35, 30, 50, 20, 0], "label": "planes"}]\n```',
    ],
)
def test_json_variants(text):
    answer = parse_boxes(text, SIZE, CLASSES)
    assert [b.label for b in answer.boxes] == ["plane"]
    assert corners(answer.boxes[0]) == [[10, 20], [60, 20], [60, 40], [10, 40]]


def test_there_are_none():
    for text in ("There are none.", "there are none", "  There are none.  "):
        answer = parse_boxes(text, SIZE, CLASSES)
        assert answer.none and answer.boxes == [] and answer.skipped == []


def test_label_matching_plural_misspelling_and_unknown():
    assert match_label("planes", CLASSES) == "plane"
    assert match_label("Small-Vehicle", CLASSES) == "small vehicle"
    assert match_label("smal vehicle", CLASSES) == "small vehicle"
    assert match_label("shipp", CLASSES) == "ship"
    assert match_label("harbor", CLASSES) is None
    answer = parse_boxes("10,20,60,20,60,40,10,40 harbor\n10,20,60,20,60,40,10,40 planes", SIZE, CLASSES)
    assert [b.label for b in answer.boxes] == ["plane"]
    assert answer.skipped == [("10,20,60,20,60,40,10,40 harbor", "label 'harbor' is not one of the requested classes")]


def test_without_classes_the_label_is_kept_as_written():
    answer = parse_boxes("10,20,60,40 the white ship next to the pier", SIZE)
    assert answer.boxes[0].label == "the white ship next to the pier"


def test_bad_lines_are_skipped_with_reasons():
    text = "\n".join(
        [
            "Here are the objects:",
            "1,2,3 plane",
            "10,10,10,50 plane",  # no area
            "1e99,2,3,4 plane",
            "99999999,0,1,1 plane",
            "10,20,60,20,60,40,10,40 plane",
            "9" * 5000,
        ]
    )
    answer = parse_boxes(text, SIZE, CLASSES)
    assert len(answer.boxes) == 1
    reasons = [reason for _, reason in answer.skipped]
    assert reasons == [
        "no coordinates",
        "3 number(s), expected 4, 5 or 8",
        "box has no area",
        "1 number(s), expected 4, 5 or 8",  # '1e99' is read as 1 followed by text
        "coordinate out of range",
        "line too long",
    ]


def test_malformed_json_items():
    text = '[{"bbox_2d": [1, 2], "label": "plane"}, 5, {"label": "plane"}, {"bbox_2d": [10, 20, 60, 40], "label": "tank"}]'
    answer = parse_boxes(text, SIZE, CLASSES)
    assert answer.boxes == []
    assert [r for _, r in answer.skipped] == [
        "2 number(s), expected 4, 5 or 8",
        "JSON item is not an object",
        "no numeric box in JSON item",
        "label 'tank' is not one of the requested classes",
    ]


def test_never_raises_on_arbitrary_text():
    rng = random.Random(0)
    alphabet = string.printable + "，。【】\u200b\x00" + "0123456789,,,--.."
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        answer = parse_boxes(text, SIZE, CLASSES if rng.random() < 0.5 else None)
        assert len(answer.boxes) + len(answer.skipped) <= max(1, len(text.splitlines()))
    for weird in (None, 5, b"bytes", "[" * 10000, "{" * 5000 + "}" * 5000, "```json\n[1,2\n```"):
        parse_boxes(weird, SIZE, CLASSES)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_numbers_that_are_not_finite_are_skipped_and_counted(value):
    """JSON answers may hold NaN or Infinity (Python's json reads them): the box is skipped with
    the reason, the others kept, so no NaN reaches the geometry."""
    text = f'[{{"bbox_2d": [{value}, 1, 20, 30], "label": "plane"}}, {{"bbox_2d": [10, 20, 60, 40], "label": "ship"}}]'
    answer = parse_boxes(text, SIZE, CLASSES)
    assert [b.label for b in answer.boxes] == ["ship"]
    assert len(answer.skipped) == 1 and "not finite" in answer.skipped[0][1] and value in answer.skipped[0][0]
    polygon = f'{{"quadrant bbox": [10, 20, 60, 20, 60, {value}, 10, 40], "label": "plane"}}'
    assert parse_boxes(polygon, SIZE, CLASSES).boxes == [] and np.isfinite(np.stack([b.points for b in answer.boxes])).all()


def test_class_in_open_answer():
    classes = ["residential", "dense residential", "airport"]
    assert match_class_in_text("Dense residential.", classes) == "dense residential"
    assert match_class_in_text("This is an airport", classes) == "airport"
    assert match_class_in_text("airprt", classes) == "airport"
    assert match_class_in_text("a forest", classes) is None
    assert match_class_in_text("Airport, with a runway.", classes) == "airport"  # punctuation after the class
    assert match_class_in_text("dense residential; houses", classes) == "dense residential"


def test_a_multiple_choice_answer_picks_an_option():
    choices = ["(A) Yellow", "(B) Red", "(C) Blue"]
    for answer in ("B", "(B)", "B. Red", " (B) Red", "red", "Red."):
        assert match_choice(answer, choices) == "Red", answer
    assert match_choice("b", choices) is None  # a lower-case letter is a word, not the option's letter
    assert match_choice("E", choices) is None and match_choice("purple", choices) is None and match_choice(None, choices) is None
