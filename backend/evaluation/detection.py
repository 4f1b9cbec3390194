"""Detection metrics: VOC07 11-point and all-point AP per class, mAP, AP_nc, precision, recall
and F1 per class, mF1, and the score-threshold sweep for detectors that give scores.

Matching follows the DOTA devkit (dota_evaluation_task1.py) exactly: predictions of a class
are visited from the best ranked; each takes the true box of its image and class with the
highest IoU (the first in file order on a tie); over the threshold (strictly) it is a true
positive if that box is not yet taken, a false positive if it is, and neither if the box is
"difficult"; at or under the threshold it is a false positive. Difficult boxes are not counted
in recall. Boxes are compared as minimum-area rotated rectangles (the AP_nc protocol), or as
horizontal envelopes in horizontal-box mode. A class with no (non-difficult) true box has no
AP; mAP and mF1 average the classes that have one.

AP_nc ("no confidence", for a VLM): every prediction scores 1. The devkit then ranks the tied
predictions by whatever order `np.argsort` leaves them in; here ties are ranked by image name,
then by the order of lines in the answer (a stable sort), so the result does not depend on the
order files are read in, nor on the machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from backend.evaluation.boxes import BoxTable
from backend.evaluation.overlaps import overlaps_over
from backend.prompts import normalise_category

Metric = Literal["voc07", "all"]
TIE_RULE = "predictions with equal scores are ranked by image name, then by line order within the answer (stable sort)"
# The devkit's recall points, floating-point values included (0.30000000000000004 ...): a
# recall of exactly 0.3 does not reach the 0.3 point there, and must not here either.
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)
# MODEL_IO / RSCoVLM: thresholds 0, 0.05, ..., 0.95; a prediction is kept when its score is over one.
SCORE_THRESHOLDS = tuple(i / 20 for i in range(20))


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: Metric = "voc07") -> float:
    """AP from the precision/recall curve in rank order, as the devkit's `voc_ap`."""
    if metric == "voc07":
        ap = 0.0
        for point in VOC07_RECALL_POINTS:
            reached = recall >= point
            ap = ap + (float(np.max(precision[reached])) if reached.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def rank_order(score: np.ndarray, image_index: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Best first: higher score, then smaller image name (index in sorted names), then earlier line."""
    return np.lexsort((line, image_index, -score))


@dataclass
class ClassScores:
    label: str
    truth: int  # true boxes that count (not difficult)
    difficult: int
    predictions: int
    true_positives: int
    false_positives: int
    ignored: int  # predictions whose match is a difficult box
    ap: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    curve: tuple[np.ndarray, np.ndarray] = field(repr=False, default=(np.empty(0), np.empty(0)))  # recall, precision

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "curve"}


@dataclass
class DetectionScores:
    classes: list[ClassScores]
    mean_ap: float | None
    mean_f1: float | None
    images: int
    settings: dict

    def as_dict(self) -> dict:
        return {
            "mAP": self.mean_ap,
            "mF1": self.mean_f1,
            "images": self.images,
            "settings": self.settings,
            "classes": [c.as_dict() for c in self.classes],
        }


def _codes(values: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Index of each value in the vocabulary, -1 where it is not in it."""
    lookup = {name: i for i, name in enumerate(vocabulary)}
    return np.fromiter((lookup.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


class DetectionMatcher:
    """Ground truth and predictions prepared once (classes, images, exact overlaps), scored
    under any selection of predictions: all of them, or those over a score threshold."""

    def __init__(
        self,
        truth: BoxTable,
        predictions: BoxTable,
        images: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        horizontal: bool = False,
    ):
        self.images = sorted(set(images) if images is not None else set(truth.image.tolist()))
        if classes:
            self.classes = sorted({normalise_category(c) for c in classes})
        else:
            self.classes = sorted(set(truth.label.tolist()) | set(predictions.label.tolist()))
        truth_image, truth_class = _codes(truth.image, self.images), _codes(truth.label, self.classes)
        pred_image, pred_class = _codes(predictions.image, self.images), _codes(predictions.label, self.classes)
        counted = (truth_image >= 0) & (truth_class >= 0)
        truth, truth_image, truth_class = truth.take(counted), truth_image[counted], truth_class[counted]
        self.predictions_outside_images = int((pred_image < 0).sum())
        self.predictions_other_classes = int(((pred_image >= 0) & (pred_class < 0)).sum())
        usable = (pred_image >= 0) & (pred_class >= 0)
        predictions, self.pred_image, self.pred_class = predictions.take(usable), pred_image[usable], pred_class[usable]
        self.truth, self.predictions = truth, predictions
        self.iou_threshold = iou_threshold
        self.horizontal = horizontal
        n_classes = max(len(self.classes), 1)
        if horizontal:
            pred_shapes, truth_shapes = predictions.bounds, truth.bounds
        else:
            pred_shapes, truth_shapes = predictions.rectangles(), truth.rectangles()
        self.pairs = overlaps_over(
            pred_shapes, self.pred_image * n_classes + self.pred_class, truth_shapes, truth_image * n_classes + truth_class, iou_threshold
        )
        counting = ~truth.difficult
        self.truth_counts = np.bincount(truth_class[counting], minlength=len(self.classes))
        self.difficult_counts = np.bincount(truth_class[truth.difficult], minlength=len(self.classes))

    def outcomes(self, keep: np.ndarray, use_scores: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rank order of kept predictions, true positive, false positive, ignored) per prediction."""
        n = len(self.predictions)
        score = self.predictions.score if use_scores else np.ones(n)
        order = rank_order(score, self.pred_image, self.predictions.line)
        order = order[keep[order]]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(len(order))

        pi, tj, iou = self.pairs
        kept = keep[pi]
        pi, tj, iou = pi[kept], tj[kept], iou[kept]
        best = np.lexsort((self.truth.line[tj], tj, -iou, pi))  # highest IoU, first in file order
        pi, tj = pi[best], tj[best]
        first = np.r_[True, pi[1:] != pi[:-1]] if len(pi) else np.empty(0, dtype=bool)
        match = np.full(n, -1, dtype=np.int64)
        match[pi[first]] = tj[first]
        matched = match >= 0
        ignored = np.zeros(n, dtype=bool)
        ignored[matched] = self.truth.difficult[match[matched]]
        claimants = np.flatnonzero(matched & ~ignored)
        claimants = claimants[np.lexsort((rank[claimants], match[claimants]))]
        takes = np.r_[True, match[claimants][1:] != match[claimants][:-1]] if len(claimants) else np.empty(0, dtype=bool)
        true_positive = np.zeros(n, dtype=bool)
        true_positive[claimants[takes]] = True
        false_positive = keep & ~true_positive & ~ignored
        return order, true_positive, false_positive, ignored & keep

    def score(self, keep: np.ndarray | None = None, use_scores: bool = True, metric: Metric = "voc07") -> DetectionScores:
        keep = np.ones(len(self.predictions), dtype=bool) if keep is None else keep
        order, tp, fp, ignored = self.outcomes(keep, use_scores)
        by_class = order[np.argsort(self.pred_class[order], kind="stable")]
        bounds = np.searchsorted(self.pred_class[by_class], np.arange(len(self.classes) + 1))
        results = []
        for index, label in enumerate(self.classes):
            ranked = by_class[bounds[index] : bounds[index + 1]]
            npos = int(self.truth_counts[index])
            ctp = np.cumsum(tp[ranked].astype(float))
            cfp = np.cumsum(fp[ranked].astype(float))
            n_tp, n_fp = int(tp[ranked].sum()), int(fp[ranked].sum())
            if npos > 0:
                recall = ctp / float(npos)
                precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
                ap = average_precision(recall, precision, metric)
                final_recall = n_tp / npos
                f1 = 2 * n_tp / (2 * n_tp + n_fp + (npos - n_tp))
            else:
                recall = precision = np.empty(0)
                ap = final_recall = f1 = None
            results.append(
                ClassScores(
                    label=label,
                    truth=npos,
                    difficult=int(self.difficult_counts[index]),
                    predictions=len(ranked),
                    true_positives=n_tp,
                    false_positives=n_fp,
                    ignored=int(ignored[ranked].sum()),
                    ap=ap,
                    precision=n_tp / (n_tp + n_fp) if n_tp + n_fp else None,
                    recall=final_recall,
                    f1=f1,
                    curve=(recall, precision),
                )
            )
        settings = {
            "iou_threshold": self.iou_threshold,
            "iou": "strictly greater than the threshold, as the DOTA devkit",
            "boxes": "horizontal envelopes" if self.horizontal else "minimum-area rotated rectangles, exact polygon IoU",
            "metric": "VOC07 11-point" if metric == "voc07" else "all-point (area under the interpolated curve)",
            "scores": "as given" if use_scores else "all 1 (AP_nc)",
            "ties": TIE_RULE,
            "difficult": "ignored, as the DOTA devkit: not counted in recall; a prediction matching one is neither TP nor FP",
            "predictions_on_images_without_truth": self.predictions_outside_images,
            "predictions_of_other_classes": self.predictions_other_classes,
        }
        return DetectionScores(results, _mean([r.ap for r in results]), _mean([r.f1 for r in results]), len(self.images), settings)

    def sweep(self, thresholds: Sequence[float] = SCORE_THRESHOLDS, metric: Metric = "voc07") -> list[dict]:
        """AP_nc, mF1 and per-class F1 when only predictions scoring over each threshold are kept."""
        rows = []
        for threshold in thresholds:
            scores = self.score(self.predictions.score > threshold, use_scores=False, metric=metric)
            rows.append(
                {
                    "threshold": threshold,
                    "mAP_nc": scores.mean_ap,
                    "mF1": scores.mean_f1,
                    "f1": {c.label: c.f1 for c in scores.classes},
                }
            )
        return rows


def best_threshold(sweep: list[dict]) -> float:
    """The threshold with the highest AP_nc (the lowest such on a tie), as RSCoVLM chooses it."""
    best = max(sweep, key=lambda row: -1.0 if row["mAP_nc"] is None else row["mAP_nc"])
    return float(best["threshold"])


def evaluate_detections(
    truth: BoxTable,
    predictions: BoxTable,
    images: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    metric: Metric = "voc07",
    horizontal: bool = False,
    scored: bool = False,
) -> DetectionScores:
    """Scores of predictions against ground truth: AP_nc unless `scored`."""
    matcher = DetectionMatcher(truth, predictions, images, classes, iou_threshold, horizontal)
    return matcher.score(use_scores=scored, metric=metric)
