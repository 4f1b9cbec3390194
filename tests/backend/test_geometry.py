import math

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from backend.geometry import (
    order_vertices,
    points_to_rbox,
    rbox_to_points,
    rectify_many,
    rotated_iou,
    rotated_nms,
)


def test_vertex_order_is_clockwise_from_the_top():
    square = np.array([[0, 10], [10, 10], [10, 0], [0, 0]], float)  # counter-clockwise on screen
    ordered = order_vertices(square)
    assert ordered.tolist() == [[0, 0], [10, 0], [10, 10], [0, 10]]  # right, then down: clockwise on screen
    diamond = np.array([[5, 10], [10, 5], [5, 0], [0, 5]], float)
    assert order_vertices(diamond).tolist() == [[5, 0], [10, 5], [5, 10], [0, 5]]


@pytest.mark.parametrize("angle", [-89.0, -45.0, -10.5, 0.0, 30.0, 60.0, 89.5])
def test_rotated_box_round_trip(angle):
    points = rbox_to_points(100.0, 50.0, 40.0, 10.0, angle)
    cx, cy, w, h, a = points_to_rbox(points)
    assert (cx, cy, w, h) == pytest.approx((100.0, 50.0, 40.0, 10.0), abs=1e-6)
    assert a == pytest.approx(angle, abs=1e-6)
    assert -90.0 <= a < 90.0


def test_degenerate_quadrilateral_has_no_box_and_a_crossing_one_its_rectangle():
    quads = np.array([[[0, 0], [10, 10], [20, 20], [30, 30]], [[0, 0], [10, 10], [10, 0], [0, 10]]], float)
    corners, has_area = rectify_many(quads)
    assert has_area.tolist() == [False, True]
    assert sorted(map(tuple, corners[1].tolist())) == [(0, 0), (0, 10), (10, 0), (10, 10)]


def test_iou_known_values():
    a = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    b = a + [1, 0]
    assert rotated_iou(a, b) == pytest.approx(2 / 6)
    assert rotated_iou(a, a) == pytest.approx(1.0)
    assert rotated_iou(a, a + [5, 5]) == 0.0
    # a square and the same square turned 45 degrees about its centre: octagon intersection
    turned = rbox_to_points(1, 1, 2, 2, 45)
    inter = 8 * (math.sqrt(2) - 1)  # octagon area for a square of side 2
    assert rotated_iou(a, turned) == pytest.approx(inter / (8 - inter))


def _nms_all_pairs(polygons, rank, threshold):
    order = np.argsort(rank, kind="stable")
    suppressed = np.zeros(len(polygons), bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        for j in order:
            if j != i and not suppressed[j]:
                inter = polygons[i].intersection(polygons[j]).area
                if inter / (polygons[i].area + polygons[j].area - inter) > threshold:
                    suppressed[j] = True
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_nms_equals_all_pairs_greedy(seed):
    rng = np.random.default_rng(seed)
    polys, rank = [], []
    for _ in range(300):
        cx, cy = rng.uniform(0, 400, 2)
        polys.append(Polygon(rbox_to_points(cx, cy, rng.uniform(5, 40), rng.uniform(3, 15), rng.uniform(-90, 90))))
        rank.append(float(rng.integers(0, 3)))  # many ties: the stable order must decide them
    for threshold in (0.0, 0.1, 0.5):
        assert rotated_nms(polys, rank, threshold).tolist() == _nms_all_pairs(polys, rank, threshold)


def test_nms_threshold_is_strict():
    a = Polygon([(0, 0), (2, 0), (2, 2), (0, 2)])
    b = shapely.affinity.translate(a, 1, 0)  # IoU exactly 1/3
    assert rotated_nms([a, b], [0, 1], 1 / 3).tolist() == [0, 1]
    assert rotated_nms([a, b], [0, 1], 0.33).tolist() == [0]
    assert rotated_nms([], [], 0.1).tolist() == []
