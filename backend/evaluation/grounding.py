"""Visual grounding: Acc@0.5 (the answer's box has IoU > 0.5 with the single reference box, as
RSCoVLM scores it) and the mean IoU. A sample the model gave no box for counts as IoU 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.evaluation.boxes import BoxTable
from backend.geometry import rotated_iou

ACC_THRESHOLD = 0.5


@dataclass
class GroundingScores:
    samples: int
    answered: int  # samples with a predicted box
    correct: int
    accuracy: float | None  # Acc@0.5
    mean_iou: float | None
    ious: dict[str, float]

    def as_dict(self) -> dict:
        return {
            "Acc@0.5": self.accuracy,
            "mean_iou": self.mean_iou,
            "samples": self.samples,
            "answered": self.answered,
            "correct": self.correct,
            "rule": f"IoU > {ACC_THRESHOLD} with the reference box (exact polygon IoU); no box = IoU 0",
        }


def first_boxes(boxes: BoxTable) -> dict[str, np.ndarray]:
    """The first box (in line order) of every sample, as its minimum-area rectangle: a
    grounding answer is its first line."""
    first: dict[str, np.ndarray] = {}
    rectangles = boxes.rectangles()
    for index in np.lexsort((boxes.line, boxes.image)):
        first.setdefault(str(boxes.image[index]), rectangles[index])
    return first


def score_grounding(references: dict[str, np.ndarray], answers: dict[str, np.ndarray | None]) -> GroundingScores:
    """`references` and `answers` map sample ids to (4, 2) corners; samples are the references'."""
    ious = {}
    for sample, reference in references.items():
        answer = answers.get(sample)
        ious[sample] = rotated_iou(answer, reference) if answer is not None else 0.0
    values = np.array(list(ious.values()), dtype=float)
    correct = int((values > ACC_THRESHOLD).sum())
    n = len(values)
    return GroundingScores(
        samples=n,
        answered=sum(answers.get(s) is not None for s in references),
        correct=correct,
        accuracy=correct / n if n else None,
        mean_iou=float(values.mean()) if n else None,
        ious=ious,
    )
