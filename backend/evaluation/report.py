"""Writing results: a table for the terminal, a JSON report, PNG plots (precision-recall per
class; AP_nc and F1 against the score threshold for scored detectors). Files are written under
a temporary name and renamed, so a report is never left half-written."""

from __future__ import annotations

import json
from pathlib import Path

from backend.atomic import staged_file, write_text
from backend.evaluation.detection import DetectionScores


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def detection_table(document: dict) -> str:
    """One line per class and the means, in percent, from a detection report document
    (`DetectionReport.as_dict()`); a scored detector's AP ranked by score sits beside AP_nc."""
    summary, classes = document["summary"], document["classes"]
    scored = "mAP_scored" in summary
    header = ["class", "truth", "difficult", "predicted", "TP", "FP", "precision", "recall", "F1", "AP_nc"] + (["AP (scored)"] if scored else [])
    rows = []
    for c in classes:
        row = [c["label"], str(c["truth"]), str(c["difficult"]), str(c["predictions"]), str(c["true_positives"]),
               str(c["false_positives"]), _percent(c["precision"]), _percent(c["recall"]), _percent(c["f1"]), _percent(c["ap"])]
        rows.append(row + ([_percent(c.get("ap_scored"))] if scored else []))
    footer = ["mean", "", "", "", "", "", "", "", _percent(summary["mF1"]), _percent(summary["mAP_nc"])]
    footer += [_percent(summary["mAP_scored"])] if scored else []
    widths = [max(len(r[i]) for r in [header, footer, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule, line(footer)])


def write_json(path: Path, document: dict) -> Path:
    return write_text(path, json.dumps(document, indent=2) + "\n")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_precision_recall(scores: DetectionScores, path: Path, title: str) -> Path:
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 5.5))
    for c in scores.classes:
        recall, precision = c.curve
        if len(recall):
            axes.step(recall, precision, where="post", label=f"{c.label} ({_percent(c.ap)})")
    axes.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, loc="lower left")
    with staged_file(path) as staging:
        figure.savefig(staging, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return Path(path)


def plot_threshold_sweep(sweep: list[dict], chosen: float | None, path: Path) -> Path:
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 5))
    thresholds = [row["threshold"] for row in sweep]
    labels = sorted({label for row in sweep for label in row["f1"]})
    for label in labels:
        values = [row["f1"].get(label) for row in sweep]
        axes.plot(thresholds, [float("nan") if v is None else v for v in values], lw=0.8, alpha=0.5, label=f"F1 {label}")
    axes.plot(thresholds, [float("nan") if r["mF1"] is None else r["mF1"] for r in sweep], "k-", lw=2, label="mF1")
    axes.plot(thresholds, [float("nan") if r["mAP_nc"] is None else r["mAP_nc"] for r in sweep], "r--", lw=2, label="mAP_nc")
    if chosen is not None:
        axes.axvline(chosen, color="grey", ls=":", label=f"chosen threshold {chosen:g}")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold (kept: score over it)", ylabel="value",
             title="F1 and AP_nc against the score threshold")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")
    with staged_file(path) as staging:
        figure.savefig(staging, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return Path(path)
