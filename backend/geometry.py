"""Oriented-box geometry: vertex order, polygon <-> rotated box, exact rotated IoU, rotated NMS.

Pure functions on pixel coordinates with y pointing down (image convention). IoU is invariant
under the affine map to map coordinates, so everything here runs in raster pixels, where
numbers are small and exact.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon


def signed_area(points: np.ndarray) -> float:
    """Shoelace area; positive when the vertices run clockwise on screen (y down)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def order_vertices(points: np.ndarray) -> np.ndarray:
    """Vertices clockwise on screen, starting at the top-most one (left-most on a tie): the
    order RSCoVLM's detection answers and training targets use."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if signed_area(pts) < 0:
        pts = pts[::-1]
    start = min(range(len(pts)), key=lambda i: (pts[i, 1], pts[i, 0]))
    return np.roll(pts, -start, axis=0)


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
    rect = shapely.oriented_envelope(shapely.multipoints(np.asarray(points, dtype=float)))
    corners = np.asarray(rect.exterior.coords)[:4] if rect.geom_type == "Polygon" else None
    if corners is None or len(corners) < 4:
        pts = np.asarray(points, dtype=float)
        cx, cy = pts.mean(axis=0)
        return float(cx), float(cy), 0.0, 0.0, 0.0
    e1 = corners[1] - corners[0]
    e2 = corners[2] - corners[1]
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    long_edge = e1 if l1 >= l2 else e2
    angle = math.degrees(math.atan2(long_edge[1], long_edge[0]))
    angle = (angle + 90.0) % 180.0 - 90.0
    cx, cy = corners.mean(axis=0)
    return float(cx), float(cy), max(l1, l2), min(l1, l2), angle


def rectify(points: np.ndarray) -> np.ndarray | None:
    """The oriented box a quadrilateral answer stands for, as ordered corners; None when it has
    no area. Models sometimes list vertices in a crossing order: the rectangle of the points is
    what they meant."""
    cx, cy, w, h, angle = points_to_rbox(points)
    if w <= 0 or h <= 0:
        return None
    return rbox_to_points(cx, cy, w, h, angle)


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
