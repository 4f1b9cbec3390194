"""Small builders for hand-computed evaluation cases."""

from __future__ import annotations

import numpy as np

from backend.evaluation.boxes import BoxTable
from backend.geometry import hbox_to_points, rbox_to_points


def hbox(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return hbox_to_points(x1, y1, x2, y2)


def rbox(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    return rbox_to_points(cx, cy, w, h, angle)


def table(rows: list[tuple], scores: list[float] | None = None) -> BoxTable:
    """Rows of (image, label, points[, difficult]); line order = order within each image."""
    lines, seen = [], {}
    for row in rows:
        lines.append(seen.get(row[0], 0))
        seen[row[0]] = lines[-1] + 1
    return BoxTable.build(
        [r[0] for r in rows],
        [r[1] for r in rows],
        np.array([r[2] for r in rows], dtype=float).reshape(-1, 4, 2),
        score=scores,
        difficult=[bool(r[3]) if len(r) > 3 else False for r in rows],
        line=lines,
    )
