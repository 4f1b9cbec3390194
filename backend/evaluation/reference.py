"""The DOTA devkit's evaluation loop, pair by pair: the baseline `benchmarks/bench_ap.py` times
and the reference the tests hold the fast evaluator to.

It follows `voc_eval` of the devkit's dota_evaluation_task1.py step for step: per class, visit
the ranked predictions, compute the IoU with every true box of the same image and class one
pair at a time (here `backend.geometry.rotated_iou`, the GEOS polygon intersection the devkit's
`polyiou` computes), take the first maximum, and apply the devkit's rules. Only the ranking of
tied scores differs from the devkit, deliberately (see `detection.TIE_RULE`).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from backend.evaluation.boxes import BoxTable
from backend.evaluation.detection import Metric, rank_order
from backend.geometry import rotated_iou


def devkit_voc_ap(rec: np.ndarray, prec: np.ndarray, metric: Metric) -> float:
    """The devkit's `voc_ap`, loop for loop."""
    if metric == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _horizontal_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def reference_ap(
    truth: BoxTable,
    predictions: BoxTable,
    classes: list[str],
    iou_threshold: float = 0.5,
    metric: Metric = "voc07",
    horizontal: bool = False,
    scored: bool = False,
) -> dict[str, float | None]:
    """AP per class (None for a class without countable truth) over the truth's images."""
    images = sorted(set(truth.image.tolist()))
    predictions = predictions.take(np.isin(predictions.image, images))
    truth_shapes = truth.bounds if horizontal else truth.rectangles()
    pred_shapes = predictions.bounds if horizontal else predictions.rectangles()
    iou = _horizontal_iou if horizontal else rotated_iou
    image_index = np.searchsorted(np.asarray(images, dtype=object), predictions.image)
    order = rank_order(predictions.score if scored else np.ones(len(predictions)), image_index, predictions.line)
    result: dict[str, float | None] = {}
    for label in classes:
        records: dict[str, dict] = defaultdict(lambda: {"boxes": [], "difficult": [], "det": []})
        for j in np.flatnonzero(truth.label == label):
            record = records[truth.image[j]]
            record["boxes"].append(truth_shapes[j])
            record["difficult"].append(bool(truth.difficult[j]))
            record["det"].append(False)
        npos = int(np.sum((truth.label == label) & ~truth.difficult))
        ranked = [i for i in order if predictions.label[i] == label]
        tp, fp = np.zeros(len(ranked)), np.zeros(len(ranked))
        for d, i in enumerate(ranked):
            record = records[predictions.image[i]]
            ovmax, jmax = -np.inf, -1
            for j, box in enumerate(record["boxes"]):
                overlap = iou(pred_shapes[i], box)
                if overlap > ovmax:
                    ovmax, jmax = overlap, j
            if ovmax > iou_threshold:
                if not record["difficult"][jmax]:
                    if not record["det"][jmax]:
                        tp[d] = 1.0
                        record["det"][jmax] = True
                    else:
                        fp[d] = 1.0
            else:
                fp[d] = 1.0
        if npos == 0:
            result[label] = None
            continue
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        result[label] = devkit_voc_ap(rec, prec, metric)
    return result
