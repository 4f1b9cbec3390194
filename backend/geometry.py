"""Oriented-box geometry: vertex order, polygon <-> rotated box, exact rotated IoU, rotated NMS.

Pure functions on pixel coordinates with y pointing down (image convention). IoU is invariant
under the affine map to map coordinates, so everything here runs in raster pixels, where
numbers are small and exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon


def order_vertices(points: np.ndarray) -> np.ndarray:
    """Vertices clockwise on screen, starting at the top-most one (left-most on a tie): the
    order RSCoVLM's detection answers and training targets use. Takes one polygon (K, 2) or
    a stack of them (N, K, 2)."""
    pts = np.asarray(points, dtype=float)
    batch = pts if pts.ndim == 3 else pts.reshape(1, -1, 2)
    x, y = batch[..., 0], batch[..., 1]
    area = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    batch = np.where((area < 0)[:, None, None], batch[:, ::-1], batch)
    start = np.lexsort((batch[..., 0], batch[..., 1]), axis=-1)[:, 0]
    index = (start[:, None] + np.arange(batch.shape[1])) % batch.shape[1]
    ordered = np.take_along_axis(batch, index[..., None], axis=1)
    return ordered if pts.ndim == 3 else ordered[0]


def rbox_to_points(cx: float, cy: float, w: float, h: float, angle_deg: float) -> np.ndarray:
    """Corners of a rotated box; the angle turns the width axis clockwise on screen."""
    a = math.radians(angle_deg)
    ux, uy = math.cos(a) * w / 2, math.sin(a) * w / 2
    vx, vy = -math.sin(a) * h / 2, math.cos(a) * h / 2
    corners = np.array(
        [
            [cx - ux - vx, cy - uy - vy],
            [cx + ux - vx, cy + uy - vy],
            [cx + ux + vx, cy + uy + vy],
            [cx - ux + vx, cy - uy + vy],
        ]
    )
    return order_vertices(corners)


def hbox_to_points(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=float)


def points_to_rbox(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """Minimum-area rotated rectangle of a quadrilateral as (cx, cy, w, h, angle) with w >= h
    and angle in degrees in [-90, 90): the conversion the AP_nc protocol applies."""
    corners = min_area_rectangles(points)[0]
    e1, e2 = corners[1] - corners[0], corners[2] - corners[1]
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    long_edge = e1 if l1 >= l2 else e2
    angle = (math.degrees(math.atan2(long_edge[1], long_edge[0])) + 90.0) % 180.0 - 90.0
    cx, cy = corners.mean(axis=0)
    return float(cx), float(cy), max(l1, l2), min(l1, l2), angle


def rectify_many(quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The oriented boxes quadrilateral answers stand for, (N, 4, 2) ordered corners, and
    which of them have an area. Models sometimes list vertices in a crossing order: the
    rectangle of the points is what they meant."""
    corners = order_vertices(min_area_rectangles(quads))
    x, y = corners[..., 0], corners[..., 1]
    area = 0.5 * (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    return corners, area > 1e-9


def to_polygon(points: np.ndarray) -> Polygon:
    return Polygon(np.asarray(points, dtype=float))


def rotated_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Exact IoU of two convex polygons given as vertex arrays (polygon intersection)."""
    pa, pb = to_polygon(a), to_polygon(b)
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return float(inter / union) if union > 0 else 0.0


def overlapping_pairs(polygons: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose exact IoU exceeds the threshold. A spatial index (STR tree)
    keeps only pairs whose envelopes touch, so the cost follows the number of real neighbours,
    not the square of the number of boxes."""
    if len(polygons) < 2:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    inter = shapely.area(shapely.intersection(polygons[left], polygons[right]))
    areas = shapely.area(polygons)
    union = areas[left] + areas[right] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    over = iou > iou_threshold
    return left[over], right[over]


def rotated_nms(polygons: Sequence[Polygon], rank: Sequence[float], iou_threshold: float = 0.1) -> np.ndarray:
    """Greedy NMS: visit boxes from the best rank (lowest value first) and drop every box whose
    IoU with a kept one is over the threshold (DOTA's merge: strictly greater). Returns the
    kept indices in visiting order. `rank` carries the caller's ordering, so ties among a VLM's
    equal scores are broken deliberately rather than by sort accident."""
    polys = np.asarray(polygons, dtype=object)
    n = len(polys)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(np.asarray(rank, dtype=float), kind="stable")
    left, right = overlapping_pairs(polys, iou_threshold)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in zip(left.tolist(), right.tolist()):
        neighbours[i].append(j)
        neighbours[j].append(i)
    suppressed = np.zeros(n, dtype=bool)
    kept = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        kept.append(i)
        for j in neighbours[i]:
            suppressed[j] = True
    return np.asarray(kept, dtype=np.intp)


def min_area_rectangles(points: np.ndarray) -> np.ndarray:
    """Minimum-area rectangles of many quadrilaterals at once, (N, 4, 2) -> (N, 4, 2) corners
    forming a ring: `points_to_rbox` for evaluation-sized arrays, in numpy.

    The best rectangle has a side along an edge of the convex hull, and every hull edge of
    four points joins two of them, so trying the six point-pair directions finds it exactly.
    A quadrilateral whose points all coincide gives a rectangle of zero area at that point."""
    pts = np.asarray(points, dtype=float).reshape(-1, 4, 2)
    px, py = pts[:, None, :, 0], pts[:, None, :, 1]  # (N, 1, 4)
    first, second = np.triu_indices(4, k=1)
    dx, dy = pts[:, second, 0] - pts[:, first, 0], pts[:, second, 1] - pts[:, first, 1]  # (N, 6)
    length = np.hypot(dx, dy)
    flat = length == 0
    length[flat] = 1.0
    ax, ay = np.where(flat, 1.0, dx / length)[..., None], np.where(flat, 0.0, dy / length)[..., None]
    u = ax * px + ay * py  # (N, 6, 4): the points along each direction...
    v = ax * py - ay * px  # ...and across it
    u_lo, u_hi = np.minimum.reduce([u[..., i] for i in range(4)]), np.maximum.reduce([u[..., i] for i in range(4)])
    v_lo, v_hi = np.minimum.reduce([v[..., i] for i in range(4)]), np.maximum.reduce([v[..., i] for i in range(4)])
    area = np.where(flat, np.inf, (u_hi - u_lo) * (v_hi - v_lo))
    best = np.argmin(area, axis=1)
    rows = np.arange(len(pts))
    a = np.stack([ax[rows, best, 0], ay[rows, best, 0]], axis=-1)
    c = np.stack([-a[:, 1], a[:, 0]], axis=-1)
    ulo, uhi, vlo, vhi = (x[rows, best][:, None] for x in (u_lo, u_hi, v_lo, v_hi))
    return np.stack([ulo * a + vlo * c, uhi * a + vlo * c, uhi * a + vhi * c, ulo * a + vhi * c], axis=1)


def _counter_clockwise(polygons: np.ndarray) -> np.ndarray:
    x, y = polygons[..., 0], polygons[..., 1]
    signed = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    out = polygons.copy()
    out[signed < 0] = out[signed < 0, ::-1]
    return out


def convex_intersection_areas(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection areas of convex quadrilaterals pair by pair, (M, 4, 2) and (M, 4, 2) -> (M,):
    Sutherland-Hodgman clipping of every pair at once (the result has at most 8 vertices)."""
    m = len(subject)
    rows = np.arange(m)
    polygon = np.zeros((m, 8, 2))
    polygon[:, :4] = _counter_clockwise(np.asarray(subject, dtype=float))
    count = np.full(m, 4)
    clip = _counter_clockwise(np.asarray(clip, dtype=float))
    for edge in range(4):
        a = clip[:, edge]
        ab = clip[:, (edge + 1) % 4] - a
        side = ab[:, None, 0] * (polygon[..., 1] - a[:, None, 1]) - ab[:, None, 1] * (polygon[..., 0] - a[:, None, 0])
        clipped = np.zeros_like(polygon)
        clipped_count = np.zeros(m, dtype=np.int64)
        wrap = np.maximum(count, 1)
        for k in range(8):  # the polygon's edge from vertex k to the next one
            live = k < count
            following = (k + 1) % wrap
            sp, sq = side[:, k], side[rows, following]
            p, q = polygon[:, k], polygon[rows, following]
            crossing = live & ((sp >= 0) != (sq >= 0))
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(crossing, sp / (sp - sq), 0.0)
            for emit, point in ((crossing, p + (q - p) * t[:, None]), (live & (sq >= 0), q)):
                where = np.flatnonzero(emit)
                clipped[where, clipped_count[where]] = point[where]
                clipped_count[where] += 1
        polygon, count = clipped, clipped_count
    following = (np.arange(8)[None, :] + 1) % np.maximum(count, 1)[:, None]
    x, y = polygon[..., 0], polygon[..., 1]
    terms = x * np.take_along_axis(y, following, 1) - np.take_along_axis(x, following, 1) * y
    return 0.5 * np.abs(np.where(np.arange(8)[None, :] < count[:, None], terms, 0.0).sum(axis=1))
