"""The fast overlap search against brute force: every same-group pair, GEOS IoU per pair."""

import numpy as np
import pytest
import shapely

from backend.evaluation.overlaps import candidate_pairs, envelopes, overlaps_over
from backend.geometry import convex_intersection_areas, min_area_rectangles, rbox_to_points, rotated_iou


def random_rectangles(rng, n, side=300.0, offset=0.0):
    centres = rng.uniform(0, side, (n, 2)) + offset
    return np.stack([rbox_to_points(cx, cy, w, h, a) for (cx, cy), w, h, a in
                     zip(centres, rng.uniform(5, 60, n), rng.uniform(3, 30, n), rng.uniform(-90, 90, n))])


def brute_force(pred, pred_group, truth, truth_group):
    """GEOS IoU of every same-group pair whose envelopes meet (the others are 0)."""
    env_p, env_t = envelopes(pred), envelopes(truth)
    found = {}
    for i in range(len(pred)):
        for j in np.flatnonzero((truth_group == pred_group[i]) & (env_t[:, 0] <= env_p[i, 2]) & (env_t[:, 2] >= env_p[i, 0])):
            found[i, int(j)] = rotated_iou(pred[i], truth[j])
    return found


@pytest.mark.parametrize("offset", [0.0, 4_400_000.0])  # pixels, and UTM northings
def test_overlaps_match_brute_force(offset):
    rng = np.random.default_rng(1)
    truth = random_rectangles(rng, 300, offset=offset)
    near = truth[rng.integers(0, 300, 200)] + rng.normal(0, 4, (200, 1, 2))
    pred = np.concatenate([near, random_rectangles(rng, 100, offset=offset)])
    pred_group, truth_group = rng.integers(0, 3, len(pred)), rng.integers(0, 3, len(truth))
    pred_group[:200] = truth_group[rng.integers(0, 300, 200)]
    exact = brute_force(pred, pred_group, truth, truth_group)
    for threshold in (0.0, 0.3, 0.5):
        pi, tj, iou = overlaps_over(pred, pred_group, truth, truth_group, threshold)
        assert {pair for pair, value in exact.items() if value > threshold} == set(zip(pi.tolist(), tj.tolist()))
        assert max(abs(exact[i, j] - v) for i, j, v in zip(pi.tolist(), tj.tolist(), iou)) < 1e-9


def test_pairs_near_the_threshold_and_contested_ones_carry_geos_values():
    truth = np.stack([rbox_to_points(100, 100, 30, 10, 30.0), rbox_to_points(104, 102, 30, 10, 30.0)])
    direction = np.array([np.cos(np.radians(30)), np.sin(np.radians(30))])
    at = rbox_to_points(*(np.array([100, 100]) + 10 * direction), 30, 10, 30.0)  # IoU 0.5 up to rounding
    pred = np.stack([at, truth[0] + 0.5])
    pi, tj, iou = overlaps_over(pred, np.zeros(2, int), truth, np.zeros(2, int), 0.5)
    for i, j, value in zip(pi, tj, iou):
        assert value == rotated_iou(pred[i], truth[j])  # bit for bit


def test_candidate_pairs_keep_touching_envelopes_and_separate_groups():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    touching = np.array([[10.0, 0.0, 20.0, 10.0]])
    pi, _ = candidate_pairs(a, np.array([0]), touching, np.array([0]))
    assert len(pi) == 1
    pi, _ = candidate_pairs(a, np.array([0]), a, np.array([1]))
    assert len(pi) == 0


def test_horizontal_boxes_use_the_closed_form():
    truth = np.array([[0.0, 0.0, 30.0, 10.0]])
    pred = np.array([[10.0, 0.0, 40.0, 10.0], [5.0, 0.0, 35.0, 10.0]])
    pi, tj, iou = overlaps_over(pred, np.zeros(2, int), truth, np.zeros(1, int), 0.5)
    assert pi.tolist() == [1] and iou[0] == pytest.approx(250 / 350)


def test_min_area_rectangles_match_geos():
    rng = np.random.default_rng(2)
    quads = rng.uniform(0, 100, (500, 4, 2))
    rects = min_area_rectangles(quads)
    geos = shapely.area(shapely.oriented_envelope(shapely.multipoints(quads)))
    assert np.allclose(shapely.area(shapely.polygons(rects)), geos, rtol=1e-9)
    assert all(shapely.covers(shapely.buffer(shapely.Polygon(r), 1e-7), shapely.MultiPoint(q)) for r, q in zip(rects, quads))
    assert np.allclose(envelopes(min_area_rectangles(np.zeros((1, 4, 2)))), 0.0)


def test_convex_intersection_areas_match_geos():
    rng = np.random.default_rng(3)
    a, b = min_area_rectangles(rng.uniform(0, 50, (500, 4, 2))), min_area_rectangles(rng.uniform(10, 60, (500, 4, 2)))
    geos = shapely.area(shapely.intersection(shapely.polygons(a), shapely.polygons(b)))
    assert np.allclose(convex_intersection_areas(a, b), geos, rtol=0, atol=1e-9)
    square = rbox_to_points(5, 5, 10, 10, 0)
    assert convex_intersection_areas(square[None], square[None])[0] == pytest.approx(100)
    assert convex_intersection_areas(square[None], (square + [10, 0])[None])[0] == 0.0
