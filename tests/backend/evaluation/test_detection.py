"""Detection metrics on hand-computed cases: every number here was worked out on paper."""

import numpy as np
import pytest

from backend.evaluation.detection import DetectionMatcher, average_precision, best_threshold, evaluate_detections
from backend.geometry import rotated_iou
from tests.backend.evaluation.helpers import hbox, rbox, table

A = hbox(0, 0, 30, 10)
B = hbox(100, 100, 120, 140)
FAR = hbox(500, 500, 520, 520)


def by_label(scores):
    return {c.label: c for c in scores.classes}


def test_perfect_predictions_score_one():
    truth = table([("img1", "ship", A), ("img1", "plane", B), ("img2", "ship", B)])
    scores = evaluate_detections(truth, truth)
    assert scores.mean_ap == pytest.approx(1.0) and scores.mean_f1 == 1.0
    for c in scores.classes:
        assert (c.precision, c.recall, c.f1, c.false_positives) == (1.0, 1.0, 1.0, 0)


def test_no_predictions_scores_zero():
    truth = table([("img1", "ship", A), ("img1", "ship", B)])
    ship = by_label(evaluate_detections(truth, table([])))["ship"]
    assert (ship.ap, ship.recall, ship.precision, ship.f1, ship.truth) == (0.0, 0.0, None, 0.0, 2)


def test_class_without_truth_has_no_ap_and_stays_out_of_the_mean():
    truth = table([("img1", "ship", A)])
    predictions = table([("img1", "ship", A), ("img1", "plane", B)])
    scores = evaluate_detections(truth, predictions)
    plane = by_label(scores)["plane"]
    assert plane.ap is None and plane.recall is None and plane.f1 is None
    assert (plane.false_positives, plane.precision) == (1, 0.0)
    assert scores.mean_ap == pytest.approx(1.0)  # ship only
    nothing = evaluate_detections(table([]), predictions, images=["img1"])
    assert nothing.mean_ap is None and nothing.mean_f1 is None


def test_all_false_positives():
    truth = table([("img1", "ship", A)])
    predictions = table([("img1", "ship", FAR), ("img1", "ship", B), ("img1", "plane", A)])
    scores = by_label(evaluate_detections(truth, predictions))
    assert (scores["ship"].ap, scores["ship"].precision, scores["ship"].false_positives) == (0.0, 0.0, 2)


def test_duplicate_is_a_false_positive():
    truth = table([("img1", "ship", A)])
    ship = by_label(evaluate_detections(truth, table([("img1", "ship", A), ("img1", "ship", A)])))["ship"]
    # ranks: TP then FP -> precision 1, 0.5 at recall 1: the 11-point AP is 1
    assert (ship.true_positives, ship.false_positives) == (1, 1)
    assert ship.ap == pytest.approx(1.0)
    assert ship.precision == 0.5 and ship.f1 == pytest.approx(2 / 3)


def test_difficult_truth_is_neither_found_nor_missed():
    truth = table([("img1", "ship", A), ("img1", "ship", B, 1)])
    ship = by_label(evaluate_detections(truth, table([("img1", "ship", B), ("img1", "ship", A)])))["ship"]
    assert (ship.truth, ship.difficult, ship.true_positives, ship.false_positives, ship.ignored) == (1, 1, 1, 0, 1)
    assert ship.ap == pytest.approx(1.0) and ship.recall == 1.0
    only_difficult = by_label(evaluate_detections(truth, table([("img1", "ship", B)])))["ship"]
    assert (only_difficult.true_positives, only_difficult.false_positives, only_difficult.ap) == (0, 0, 0.0)


def test_best_match_on_a_difficult_box_hides_a_weaker_normal_match():
    # the devkit takes the highest-IoU true box; when it is difficult the prediction is ignored
    normal, difficult = hbox(0, 0, 100, 10), hbox(0, 0, 80, 10)
    prediction = hbox(0, 0, 85, 10)  # IoU 0.85 with normal, 80/85 = 0.94 with difficult
    truth = table([("img1", "ship", normal), ("img1", "ship", difficult, 1)])
    ship = by_label(evaluate_detections(truth, table([("img1", "ship", prediction)])))["ship"]
    assert (ship.true_positives, ship.false_positives, ship.ignored, ship.recall) == (0, 0, 1, 0.0)


def test_taken_best_match_makes_a_false_positive_without_trying_the_next_box():
    g1, g2 = hbox(0, 0, 100, 10), hbox(20, 0, 120, 10)
    p1 = g1
    p2 = hbox(10, 0, 110, 10)  # IoU 90/110 = 0.818 with both; the first in file order, g1, is taken
    truth = table([("img1", "ship", g1), ("img1", "ship", g2)])
    ship = by_label(evaluate_detections(truth, table([("img1", "ship", p1), ("img1", "ship", p2)])))["ship"]
    assert (ship.true_positives, ship.false_positives, ship.recall) == (1, 1, 0.5)


def test_ties_rank_by_image_name_then_line():
    truth = table([("b", "ship", A)])
    # image 'a' (no object in it) holds a false alarm and sorts before 'b': FP then TP -> precision 0, 0.5
    predictions = table([("b", "ship", A), ("a", "ship", A)])
    assert by_label(evaluate_detections(truth, predictions, images=["b", "a"]))["ship"].ap == pytest.approx(0.5)
    # within one image, the earlier line ranks first
    truth = table([("a", "ship", A)])
    assert by_label(evaluate_detections(truth, table([("a", "ship", B), ("a", "ship", A)])))["ship"].ap == pytest.approx(0.5)
    assert by_label(evaluate_detections(truth, table([("a", "ship", A), ("a", "ship", B)])))["ship"].ap == pytest.approx(1.0)
    # with scores the score decides, ties aside
    scored = table([("a", "ship", B), ("a", "ship", A)], scores=[0.2, 0.9])
    assert by_label(evaluate_detections(truth, scored, scored=True))["ship"].ap == pytest.approx(1.0)


def test_iou_exactly_at_the_threshold_does_not_match():
    truth = table([("a", "ship", hbox(0, 0, 30, 10))])
    at = table([("a", "ship", hbox(10, 0, 40, 10))])  # 200 / 400 = 0.5 exactly
    just_over = table([("a", "ship", hbox(9.99, 0, 39.99, 10))])
    assert by_label(evaluate_detections(truth, at))["ship"].true_positives == 0
    assert by_label(evaluate_detections(truth, just_over))["ship"].true_positives == 1


@pytest.mark.parametrize("angle", [30.0, -63.0])
def test_rotated_boxes_at_the_boundary(angle):
    # sliding a 30 x 10 box by s along its own axis gives IoU (30 - s) / (30 + s): 0.5 at s = 10
    truth_box = rbox(200, 200, 30, 10, angle)
    direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    truth = table([("a", "plane", truth_box)])
    for shift, expected in ((10 - 1e-4, 1), (10 + 1e-4, 0)):
        centre = np.array([200, 200]) + shift * direction
        moved = rbox(centre[0], centre[1], 30, 10, angle)
        assert rotated_iou(moved, truth_box) == pytest.approx((30 - shift) / (30 + shift), abs=1e-9)
        result = by_label(evaluate_detections(truth, table([("a", "plane", moved)])))["plane"]
        assert result.true_positives == expected


def test_quadrilaterals_are_compared_as_their_minimum_area_rectangles():
    square = hbox(0, 0, 10, 10)
    kite = np.array([[5, -1], [10, 5], [5, 11], [0, 5]], dtype=float)  # its min-area rectangle is not the square
    truth = table([("a", "ship", square)])
    assert by_label(evaluate_detections(truth, table([("a", "ship", square[[0, 2, 1, 3]])])))["ship"].true_positives == 1
    rectified = by_label(evaluate_detections(truth, table([("a", "ship", kite)])))["ship"]
    assert rectified.true_positives == 1  # 10 x 12 rectangle: IoU 100/120


def test_horizontal_box_mode_compares_envelopes():
    diamond = rbox(50, 50, 20, 20, 45)  # a square turned 45 degrees: half its envelope
    envelope = hbox(50 - 10 * np.sqrt(2), 50 - 10 * np.sqrt(2), 50 + 10 * np.sqrt(2), 50 + 10 * np.sqrt(2))
    truth, predictions = table([("a", "ship", diamond)]), table([("a", "ship", envelope)])
    assert by_label(evaluate_detections(truth, predictions))["ship"].true_positives == 0
    assert by_label(evaluate_detections(truth, predictions, horizontal=True))["ship"].true_positives == 1


def test_voc07_and_all_point_on_a_worked_curve():
    truth = table([("a", "ship", A), ("a", "ship", B)])
    predictions = table([("a", "ship", A), ("a", "ship", FAR), ("a", "ship", B)])  # TP, FP, TP
    # recall .5 .5 1, precision 1 .5 2/3
    assert by_label(evaluate_detections(truth, predictions))["ship"].ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert by_label(evaluate_detections(truth, predictions, metric="all"))["ship"].ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc07_keeps_the_devkit_recall_points():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004: a recall of exactly 3/10 misses it
    recall = np.array([0.1, 0.2, 0.3])
    assert average_precision(recall, np.ones(3), "voc07") == pytest.approx(3 / 11)


def test_class_names_are_normalised_and_filtered():
    truth = table([("a", "small vehicle", A), ("a", "ship", B)])
    predictions = table([("a", "small vehicle", A), ("a", "harbor", B)])
    scores = evaluate_detections(truth, predictions, classes=["Small-Vehicle"])
    assert [c.label for c in scores.classes] == ["small vehicle"]
    assert scores.settings["predictions_of_other_classes"] == 1


def test_predictions_on_images_without_truth_are_left_out_and_counted():
    truth = table([("a", "ship", A)])
    scores = evaluate_detections(truth, table([("a", "ship", A), ("zzz", "ship", A)]))
    assert scores.settings["predictions_on_images_without_truth"] == 1
    assert by_label(scores)["ship"].false_positives == 0


def test_threshold_sweep_keeps_scores_over_each_threshold_as_ties():
    truth = table([("a", "ship", A), ("a", "ship", B)])
    # TP 0.9, FP 0.6, TP 0.3: over 0.5 -> TP, FP (AP_nc: recall .5, precision 1 .5 -> 6/11)
    predictions = table([("a", "ship", A), ("a", "ship", FAR), ("a", "ship", B)], scores=[0.9, 0.6, 0.3])
    matcher = DetectionMatcher(truth, predictions)
    sweep = {row["threshold"]: row for row in matcher.sweep()}
    assert sweep[0.0]["mAP_nc"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert sweep[0.5]["mAP_nc"] == pytest.approx(6 / 11)
    assert sweep[0.6]["mAP_nc"] == pytest.approx(6 / 11)  # 0.6 is not over 0.6
    assert sweep[0.65]["mAP_nc"] == pytest.approx(6 / 11) and sweep[0.65]["mF1"] == pytest.approx(2 / 3)
    assert sweep[0.9]["mAP_nc"] == 0.0
    assert best_threshold(list(sweep.values())) == 0.0
    # scored AP of the same predictions ranks by score
    assert matcher.score(use_scores=True).mean_ap == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_reading_order_does_not_change_any_number():
    rng = np.random.default_rng(5)
    boxes = [hbox(x, y, x + 20, y + 10) for x, y in rng.uniform(0, 200, (40, 2))]
    truth = table([(f"img{i % 4}", "ship" if i % 3 else "plane", b) for i, b in enumerate(boxes)])
    predictions = table([(f"img{i % 4}", "ship" if i % 3 else "plane", b + rng.normal(0, 3, (4, 2))) for i, b in enumerate(boxes)])
    expected = evaluate_detections(truth, predictions).as_dict()
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(predictions))
        assert evaluate_detections(truth.take(order[::-1] % len(truth)), predictions.take(order)).as_dict() == expected
