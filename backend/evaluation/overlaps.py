"""Which predicted and true boxes overlap enough to match, decided exactly and fast.

Only pairs in the same group (image and class) whose envelopes meet can overlap, and only
pairs whose IoU exceeds the matching threshold can change a result (a prediction's best match
counts only when its IoU is over the threshold). So:
  1. one STR tree over all true envelopes, each group moved to its own stretch of the x axis,
     finds the candidate pairs in one query;
  2. an upper bound of the IoU from the envelopes and areas drops pairs that cannot pass;
  3. rotated boxes: every remaining pair is clipped in numpy (`convex_intersection_areas`, in
     coordinates local to the pair), and GEOS's polygon intersection - the operation of
     `backend.geometry.rotated_iou` - recomputes every pair whose outcome could hinge on the
     last digits: an IoU within `SETTLE_MARGIN` of the threshold, or a prediction with two or
     more candidates over it (the best one is then chosen on GEOS values). Every match is
     therefore the one the per-pair GEOS evaluation makes.
     Horizontal boxes: the closed form.
"""

from __future__ import annotations

import numpy as np
import shapely

from backend.geometry import convex_intersection_areas

# Step 2's bound is computed in floating point like the IoU itself: a pair the bound puts a
# hair under the threshold is still computed.
BOUND_SLACK = 1e-9
# numpy and GEOS agree to ~1e-12 on IoU; pairs nearer the threshold than this go to GEOS.
SETTLE_MARGIN = 1e-6


def envelopes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xmin, ymin, xmax, ymax of (N, 4, 2) corners; (N, 4) input is already one."""
    if boxes.ndim == 2:
        return boxes
    return np.concatenate([boxes.min(axis=1), boxes.max(axis=1)], axis=1)


def candidate_pairs(pred_env: np.ndarray, pred_group: np.ndarray, truth_env: np.ndarray, truth_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (prediction, truth) of one group whose envelopes meet."""
    if len(pred_env) == 0 or len(truth_env) == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    lo = min(pred_env[:, 0].min(), truth_env[:, 0].min())
    span = max(pred_env[:, 2].max(), truth_env[:, 2].max()) - lo
    stride = 2.0 * span + 1.0  # groups a whole span apart never meet, padding included

    def shifted(env: np.ndarray, group: np.ndarray) -> np.ndarray:
        out = env.copy()
        shift = group * stride - lo
        out[:, 0] += shift
        out[:, 2] += shift
        return out

    p, t = shifted(pred_env, pred_group), shifted(truth_env, truth_group)
    # Moving coordinates rounds them; pad by a few units in the last place of the largest one
    # so that envelopes meeting before the move still meet after it.
    pad = 4.0 * float(np.spacing(max(np.abs(p).max(), np.abs(t).max(), 1.0)))
    tree = shapely.STRtree(shapely.box(t[:, 0] - pad, t[:, 1] - pad, t[:, 2] + pad, t[:, 3] + pad))
    pi, tj = tree.query(shapely.box(p[:, 0], p[:, 1], p[:, 2], p[:, 3]))
    same = pred_group[pi] == truth_group[tj]
    return pi[same], tj[same]


def _areas(boxes: np.ndarray) -> np.ndarray:
    if boxes.ndim == 2:
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    x, y = boxes[..., 0], boxes[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _envelope_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    return iw * ih


def geos_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of rotated boxes pair by pair, (M, 4, 2) each, by GEOS: `rotated_iou` on arrays."""
    poly_p, poly_t = shapely.polygons(pred), shapely.polygons(truth)
    inter = shapely.area(shapely.intersection(poly_p, poly_t))
    return _ratio(inter, shapely.area(poly_p) + shapely.area(poly_t) - inter)


def _rotated_iou(pred: np.ndarray, truth: np.ndarray, pi: np.ndarray, tj: np.ndarray, threshold: float) -> np.ndarray:
    a, b = pred[pi], truth[tj]
    origin = a.min(axis=1, keepdims=True)
    a_local, b_local = a - origin, b - origin
    inter = convex_intersection_areas(a_local, b_local)
    iou = _ratio(inter, _areas(a_local) + _areas(b_local) - inter)
    contenders = iou > threshold - SETTLE_MARGIN
    per_prediction = np.bincount(pi[contenders], minlength=len(pred))
    settle = (np.abs(iou - threshold) <= SETTLE_MARGIN) | (contenders & (per_prediction[pi] > 1))
    if settle.any():
        iou[settle] = geos_iou(a[settle], b[settle])
    return iou


def overlaps_over(
    pred: np.ndarray, pred_group: np.ndarray, truth: np.ndarray, truth_group: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction index, truth index, IoU) of every same-group pair with IoU > threshold.
    Boxes are (N, 4, 2) rotated corners or (N, 4) horizontal boxes."""
    pred_env, truth_env = envelopes(pred), envelopes(truth)
    pi, tj = candidate_pairs(pred_env, pred_group, truth_env, truth_group)
    area_p, area_t = _areas(pred)[pi], _areas(truth)[tj]
    most = np.minimum(_envelope_intersection(pred_env[pi], truth_env[tj]), np.minimum(area_p, area_t))
    possible = _ratio(most, area_p + area_t - most) > threshold - BOUND_SLACK
    pi, tj = pi[possible], tj[possible]
    if pred.ndim == 2:
        inter = _envelope_intersection(pred[pi], truth[tj])
        iou = _ratio(inter, area_p[possible] + area_t[possible] - inter)
    else:
        iou = _rotated_iou(pred, truth, pi, tj, threshold)
    over = iou > threshold
    return pi[over], tj[over], iou[over]
