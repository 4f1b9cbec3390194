"""Questions, expressions and captions of the synthetic world: each refers to what the view
shows and nothing else."""

import numpy as np

from training.questions import Seen, caption, counted, groundings, vqa_pairs

CLASSES = ("building", "large vehicle", "plane", "ship", "small vehicle", "storage tank")


def seen(label, colour, x, y, w, h, cut=False):
    return Seen(label, colour, np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=float), cut)


def test_an_expression_picks_out_exactly_one_whole_object():
    view = [
        seen("plane", "white", 10, 10, 60, 60),
        seen("small vehicle", "red", 100, 100, 15, 7),
        seen("small vehicle", "blue", 130, 100, 15, 7),
        seen("small vehicle", "blue", 160, 100, 15, 7),
        seen("ship", "grey", 0, 150, 40, 12, cut=True),
    ]
    found = {expression: s for expression, s in groundings(view)}
    assert set(found) == {"plane", "red small vehicle"}
    assert found["plane"].hbox() == [10, 10, 70, 70]


def test_largest_and_smallest_need_a_clear_gap():
    view = [seen("building", "red", 0, 0, 60, 40), seen("building", "red", 100, 0, 30, 20), seen("building", "red", 0, 100, 29, 20)]
    found = dict(groundings(view))
    assert found["largest building"].area == 2400
    assert "smallest building" not in found  # 29 x 20 vs 30 x 20: not clearly the smallest
    assert "red building" not in found


def test_vqa_answers_are_what_the_view_shows():
    rng = np.random.default_rng(0)
    view = [seen("ship", "white", 0, 0, 40, 12), seen("storage tank", "grey", 50, 50, 20, 20), seen("storage tank", "grey", 80, 50, 20, 20)]
    answers = {}
    for _ in range(40):
        answers.update(dict(vqa_pairs(view, "harbor", CLASSES, rng)))
    assert answers["How many storage tanks are there?"] == "2"
    assert answers["What colour is the ship?"] == "white"
    assert "What colour is the storage tank?" not in answers
    assert answers["What kind of area is this?"] == "harbor"
    # every presence question asked in 40 draws is answered by what the view holds
    present = {k: v for k, v in answers.items() if k.startswith("Is there a")}
    assert present and all(v == ("yes" if k.removeprefix("Is there a ").rstrip("?") in ("ship", "storage tank") else "no")
                           for k, v in present.items())
    assert {"yes", "no"} <= set(present.values())
    assert any(v == "0" for k, v in answers.items() if k.startswith("How many"))


def test_captions_count_by_class_and_name_the_place():
    rng = np.random.default_rng(1)
    view = [seen("plane", "white", 0, 0, 50, 50), seen("plane", "white", 60, 0, 50, 50), seen("small vehicle", "red", 0, 80, 15, 7)]
    texts = {caption(view, "airport", rng) for _ in range(20)}
    assert "An airport with 2 white planes and a red small vehicle." in texts
    assert "2 white planes and a red small vehicle in an airport." in texts
    assert caption([], "parking lot", rng) == "A parking lot with nothing parked in view."
    assert counted("industrial area", 1) == "an industrial area" and counted("ship", 3) == "3 ships"
