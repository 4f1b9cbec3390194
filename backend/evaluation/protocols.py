"""The detection protocols as a user runs them (MODEL_IO, "Evaluation protocols"):
  - a VLM (no scores): AP_nc, every prediction scored 1;
  - a scored detector: its ordinary mAP, and AP_nc after keeping the predictions scoring over a
    threshold - chosen on a validation split by the sweep 0, 0.05, ..., 0.95 and applied to
    this one (or given; chosen on this split only when nothing else is available, and said so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from backend.evaluation.detection import DetectionMatcher, DetectionScores, Metric, best_threshold
from backend.evaluation.dota_io import Annotations


@dataclass
class DetectionReport:
    headline: DetectionScores  # AP_nc (at the threshold, for a scored detector)
    scored: DetectionScores | None = None
    sweep: list[dict] | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        classes = self.headline.as_dict()["classes"]
        summary = {"mAP_nc": self.headline.mean_ap, "mF1": self.headline.mean_f1, "images": self.headline.images}
        if self.scored is not None:
            summary["mAP_scored"] = self.scored.mean_ap
            scored_ap = {c.label: c.ap for c in self.scored.classes}
            for c in classes:
                c["ap_scored"] = scored_ap.get(c["label"])
        document = {"task": "detection", "summary": summary, "protocol": self.headline.settings, "classes": classes, "notes": self.notes}
        if self.scored is not None:
            document["threshold"] = {"value": self.threshold, "source": self.threshold_source}
            document["sweep"] = self.sweep
        return document


def _input_notes(kind: str, annotations: Annotations) -> list[str]:
    if not annotations.skipped:
        return []
    examples = "; ".join(annotations.skipped_examples[:3])
    return [f"{annotations.skipped} line(s) of the {kind} could not be used (e.g. {examples})."]


def detection_report(
    truth: Annotations,
    predictions: Annotations,
    classes: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    metric: Metric = "voc07",
    horizontal: bool = False,
    scored: bool = False,
    threshold: float | None = None,
    validation: tuple[Annotations, Annotations] | None = None,
) -> DetectionReport:
    matcher = DetectionMatcher(truth.boxes, predictions.boxes, truth.images, classes, iou_threshold, horizontal)
    notes = _input_notes("ground truth", truth) + _input_notes("predictions", predictions)
    outside = matcher.predictions_outside_images
    if outside:
        notes.append(f"{outside} prediction(s) on images without a ground-truth file were left out.")
    if not scored:
        return DetectionReport(matcher.score(use_scores=False, metric=metric), notes=notes)
    sweep = matcher.sweep(metric=metric)
    if threshold is not None:
        source = "given"
    elif validation is not None:
        val_truth, val_predictions = validation
        val_matcher = DetectionMatcher(val_truth.boxes, val_predictions.boxes, val_truth.images, matcher.classes, iou_threshold, horizontal)
        threshold, source = best_threshold(val_matcher.sweep(metric=metric)), "chosen on the validation split"
    else:
        threshold = best_threshold(sweep)
        source = "chosen on this split (optimistic: the protocol chooses it on a validation split, see --val-pred/--val-gt)"
    headline = matcher.score(matcher.predictions.score > threshold, use_scores=False, metric=metric)
    headline.settings["score_threshold"] = threshold
    return DetectionReport(headline, matcher.score(use_scores=True, metric=metric), sweep, threshold, source, notes)
