"""Scoring change detection: object F1 of the changed objects' boxes (a predicted box matches a
true one of the same class and kind of change at IoU 0.5, greedily, each used once) and, as
TEOChat scores change localisation, pixel F1 and IoU of the boxes rasterised against the
change mask, pooled over the whole set. Pure functions over polygons in one pixel or map grid."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class ChangeBox:
    sample: str  # image pair (or layer) the box belongs to
    label: str
    change: str  # "appeared", "disappeared" or "changed" (any)
    polygon: shapely.Polygon


def _key_matches(prediction: ChangeBox, truth: ChangeBox) -> bool:
    return (prediction.sample == truth.sample and prediction.label == truth.label
            and (prediction.change == truth.change or "changed" in (prediction.change, truth.change)))


def object_scores(predictions: list[ChangeBox], truths: list[ChangeBox], iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Precision, recall and F1 of changed objects; pairs are taken by IoU, best first."""
    pairs = []
    for i, p in enumerate(predictions):
        for j, t in enumerate(truths):
            if _key_matches(p, t) and p.polygon.intersects(t.polygon):
                union = p.polygon.union(t.polygon).area
                iou = p.polygon.intersection(t.polygon).area / union if union > 0 else 0.0
                if iou >= iou_threshold:
                    pairs.append((iou, i, j))
    used_p, used_t = set(), set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    matched = len(used_p)
    precision = matched / len(predictions) if predictions else None
    recall = matched / len(truths) if truths else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if predictions or truths else None)
    return {"precision": precision, "recall": recall, "F1": f1, "matched": matched, "predicted": len(predictions), "true": len(truths),
            "rule": f"same class and kind of change ('changed' matches either), IoU >= {iou_threshold}, greedy by IoU"}


def rasterised(polygons: Iterable[shapely.Polygon], shape: tuple[int, int], transform: Affine = Affine.identity()) -> np.ndarray:
    """A (rows, cols) boolean mask of where the polygons lie, on the grid of `transform`."""
    from rasterio.features import rasterize

    shapes = [(p, 1) for p in polygons if p is not None and not p.is_empty]
    if not shapes:
        return np.zeros(shape, dtype=bool)
    return rasterize(shapes, out_shape=shape, transform=transform, dtype="uint8").astype(bool)


class PixelScores:
    """TEOChat's localisation measure: one confusion matrix over every pixel of every sample."""

    def __init__(self):
        self.tp = self.fp = self.fn = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        self.tp += int((predicted & truth).sum())
        self.fp += int((predicted & ~truth).sum())
        self.fn += int((~predicted & truth).sum())

    def as_dict(self) -> dict:
        f1 = 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else None
        iou = self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else None
        return {"pixel_F1": f1, "pixel_IoU": iou, "changed_pixels_true": self.tp + self.fn, "changed_pixels_predicted": self.tp + self.fp,
                "rule": "predicted boxes rasterised against the change mask, pooled over all samples (TEOChat)"}
