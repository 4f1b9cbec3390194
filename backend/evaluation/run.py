"""`rscovlm eval run`: a checkpoint over a dataset split through the pipeline a user runs, then
scored.

Every image and sample goes through `backend.pipeline.TaskRun` (the views, prompts, parsing and
mapping back of `rscovlm detect` and friends); the runs of a chunk share the engine's batches.
Each answer is written to `<out>/predictions/` under a temporary name and renamed, so an
interrupted run keeps everything finished before it and the same command resumes where it
stopped. Detection predictions are per-image DOTA files, so `rscovlm eval detection --pred
<out>/predictions/detect --gt <data>/labelTxt` gives the same numbers again.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from rasterio.errors import NotGeoreferencedWarning

from backend.atomic import write_text
from backend.contract import TaskOptions, TaskRequest, TaskResult
from backend.drive import drive, open_run
from backend.engine import Engine
from backend.errors import Cancelled, UserError, validation_problem
from backend.evaluation.dataset import REGION_CAPTION_PREFIX, DatasetSplit, Sample
from backend.evaluation.detection import Metric
from backend.evaluation.dota_io import read_image_files
from backend.evaluation.grounding import score_grounding
from backend.evaluation.protocols import detection_report
from backend.evaluation.report import plot_precision_recall, write_json
from backend.evaluation.text import caption_scores, contained_accuracy
from backend.pipeline import TaskRun
from backend.writers import write_dota

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]
PREDICTIONS = "predictions"
RUN_FILE = "run.json"


def prediction_file(folder: Path, sample: Sample) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sample.id)[:80]
    return folder / sample.task / f"{safe}-{hashlib.sha1(sample.id.encode()).hexdigest()[:8]}.json"


def _request(task: str, image: Path, options: TaskOptions, classes: Sequence[str] | None = None, argument: str = "",
             after: Path | None = None) -> TaskRequest:
    fields = {"task": task, "raster": str(image), "options": options}
    if task in ("detect", "classify", "change"):
        fields["classes"] = list(classes or [])
    if after is not None:
        fields["raster_after"] = str(after)
    if task == "ground":
        fields["expression"] = argument
    if task == "ask":
        fields["question"] = argument
    try:
        return TaskRequest(**fields)
    except ValidationError as exc:
        raise UserError(f"{image.name}: {validation_problem(exc.errors())}", "Check the dataset's prompts and classes.") from None


def _run_together(runs: list[TaskRun], engine: Engine) -> list[TaskResult]:
    """Drive several runs of one task, their views sharing the engine's batches."""
    pending = [(run, view) for run in runs for view in run.views]
    for start in range(0, len(pending), engine.batch_size):
        batch = [(run, view, run.conversation(view)) for run, view in pending[start : start + engine.batch_size]]
        batch = [(run, view, conv) for run, view, conv in batch if conv is not None]
        if batch:
            answers = engine.generate([c for _, _, c in batch], runs[0].max_new_tokens, runs[0].repetition_penalty)
            for (run, view, _), generation in zip(batch, answers):
                run.accept(view, generation)
    return [run.result() for run in runs]


def _settings_guard(out: Path, settings: dict) -> None:
    """Resume only what the same model, adapter, data and options started."""
    record = out / RUN_FILE
    if record.is_file():
        try:
            previous = json.loads(record.read_text())
        except ValueError:
            previous = None
        if previous != settings:
            raise UserError(
                f"{out} holds predictions of another run (different model, data or options, see {record}).",
                "Choose another --out, or delete that folder to start again.",
            )
    else:
        write_json(record, settings)


def evaluate_model(
    engine: Engine,
    split: DatasetSplit,
    out: str | Path,
    classes: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    iou_threshold: float = 0.5,
    metric: Metric = "voc07",
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> dict:
    """Predict what is not predicted yet, then score everything; returns the report document
    (also written to `<out>/report.json`). Raises `Cancelled` between chunks when asked to stop.
    Requests take the options they leave unset from the engine's model (its declared pixel budget)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = list(classes or split.classes)
    if split.images and not classes:
        raise UserError("the dataset names no classes (no manifest.json and no object in labelTxt/).", "Give them with --classes.")
    options = TaskOptions(**({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
    declared = engine.defaults.options
    settings = {"model": engine.model_id, "data": str(split.root.resolve()), "classes": classes, "max_new_tokens": max_new_tokens}
    _settings_guard(out, settings | ({"task_options": declared} if declared else {}))
    folder = out / PREDICTIONS
    (folder / "detect").mkdir(parents=True, exist_ok=True)
    jobs = [("detect", stem, folder / "detect" / f"{stem}.txt") for stem in split.images]
    jobs += [(sample.task, sample, prediction_file(folder, sample)) for sample in split.samples]
    total = len(jobs)
    todo = [job for job in jobs if not job[2].is_file()]
    done = total - len(todo)
    if progress is not None:
        progress(done, total)
    chunk = max(1, engine.batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # dataset tiles are plain PNG/JPEG, in pixels by design
        for task in ("detect", "ground", "classify", "ask", "caption", "zoom", "change", "change_caption"):
            mine = [job for job in todo if job[0] == task]
            for start in range(0, len(mine), chunk):
                if should_stop is not None and should_stop():
                    raise Cancelled(f"stopped after {done} of {total}; the predictions written so far are kept for resuming")
                if task == "zoom":  # one chain at a time: each turn depends on the last
                    for job in mine[start : start + chunk]:
                        _predict_zoom(job, engine, options)
                else:
                    _predict_chunk(mine[start : start + chunk], engine, split, classes, options)
                done += len(mine[start : start + chunk])
                if progress is not None:
                    progress(done, total)
    document = score_predictions(split, out, classes, iou_threshold, metric)
    document["run"] = {"model": engine.model_id, "data": str(split.root), "images": len(split.images), "samples": len(split.samples),
                       "not_scored": dict(split.skipped)}
    write_json(out / "report.json", document)
    return document


def _predict_chunk(jobs: list, engine: Engine, split: DatasetSplit, classes: list[str], options: TaskOptions) -> None:
    runs = []
    try:
        for task, item, _ in jobs:
            if task == "detect":
                runs.append(TaskRun(_request("detect", split.images[item], options, classes), engine.model_id, engine.defaults))
                continue
            sample_classes = item.argument.split(",") if task == "classify" else [item.argument] if task == "change" else None
            sample_options = TaskOptions(**options.model_dump(exclude_unset=True), change_kinds=[item.change_kind]) if task == "change" else options
            run = open_run(_request(task, item.image, sample_options, sample_classes, item.argument, item.image_after), engine.model_id,
                           engine.defaults)
            if task == "caption" and item.prompt.startswith(REGION_CAPTION_PREFIX):
                run.user = item.prompt  # the pipeline has no region-caption task: ask the sample's own question
            runs.append(run)
        results = _run_together(runs, engine)
    finally:
        for run in runs:
            run.close()
    for (task, item, target), result in zip(jobs, results):
        if task == "detect":
            write_dota(result, target)
            continue
        box = None
        if task == "ground" and result.features:
            box = np.asarray(result.features[0].geometry["coordinates"][0], dtype=float)[:4].tolist()
        boxes = [np.asarray(f.geometry["coordinates"][0], dtype=float)[:4].tolist() for f in result.features] if task == "change" else None
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = result.features[0].properties.get("raw_text") if result.features else None
        write_text(target, json.dumps({"id": item.id, "task": task, "answer": result.text, "box": box, "boxes": boxes, "raw": raw}))


def _predict_zoom(job: tuple, engine: Engine, options: TaskOptions) -> None:
    """The whole Zoom-in Chain on the sample's raster, as `rscovlm ask --zoom` runs it."""
    _, sample, target = job
    zoomed = TaskOptions(**options.model_dump(exclude_unset=True), zoom="on")
    with TaskRun(_request("ask", sample.image, zoomed, argument=sample.argument), engine.model_id, engine.defaults) as run:
        result = drive(run, engine)
    trace = result.zoom
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, json.dumps({"id": sample.id, "task": "zoom", "answer": result.text, "outcome": trace.outcome,
                                   "steps": trace.steps, "calls": [turn.answer for turn in trace.turns[:-1]]}))


def score_predictions(split: DatasetSplit, out: Path, classes: Sequence[str], iou_threshold: float = 0.5, metric: Metric = "voc07") -> dict:
    """Score what `<out>/predictions/` holds against the split's references."""
    folder = Path(out) / PREDICTIONS
    document: dict = {"tasks": {}}
    if split.images and split.truth is not None:
        files = [folder / "detect" / f"{stem}.txt" for stem in split.images]
        predictions = read_image_files([f for f in files if f.is_file()], truth=False, scored=False, source=str(folder / "detect"))
        report = detection_report(split.truth, predictions, classes, iou_threshold, metric)
        document["tasks"]["detection"] = report.as_dict()
        plot_precision_recall(report.headline, Path(out) / "precision_recall.png", "precision-recall per class (AP_nc)")
    answers: dict[str, dict] = {}
    for sample in split.samples:
        target = prediction_file(folder, sample)
        if target.is_file():
            answers[sample.id] = json.loads(target.read_text())
    by_task: dict[str, list[Sample]] = {}
    for sample in split.samples:
        by_task.setdefault(sample.task, []).append(sample)
    if "ground" in by_task:
        references = {s.id: np.asarray(s.reference_box) for s in by_task["ground"]}
        boxes = {s.id: np.asarray(answers[s.id]["box"]) if answers.get(s.id, {}).get("box") else None for s in by_task["ground"]}
        document["tasks"]["grounding"] = score_grounding(references, boxes).as_dict()
    for task, name in (("classify", "classification"), ("ask", "vqa"), ("zoom", "zoom")):
        if task in by_task:
            document["tasks"][name] = contained_accuracy([answers.get(s.id, {}).get("answer") or "" for s in by_task[task]],
                                                         [s.references[0] for s in by_task[task]])
    if "zoom" in by_task:
        outcomes = Counter(answers.get(s.id, {}).get("outcome") or "not run" for s in by_task["zoom"])
        document["tasks"]["zoom"]["outcomes"] = dict(sorted(outcomes.items()))
    if "caption" in by_task:
        document["tasks"]["captioning"] = caption_scores([answers.get(s.id, {}).get("answer") or "" for s in by_task["caption"]],
                                                         [s.references for s in by_task["caption"]])
    if "change_caption" in by_task:
        document["tasks"]["change_captioning"] = caption_scores([answers.get(s.id, {}).get("answer") or "" for s in by_task["change_caption"]],
                                                                [s.references for s in by_task["change_caption"]])
    if "change" in by_task:
        document["tasks"]["change"] = _change_scores(by_task["change"], answers)
    return document


def _change_scores(samples: list[Sample], answers: dict) -> dict:
    """Object F1 of the changed objects, and pixel F1 of their boxes on each frame pair."""
    import shapely
    from PIL import Image

    from backend.evaluation.change import ChangeBox, PixelScores, object_scores, rasterised

    predicted, true, pixels = [], [], PixelScores()
    for sample in samples:
        mine = [ChangeBox(sample.id, sample.argument, sample.change_kind, shapely.Polygon(b)) for b in answers.get(sample.id, {}).get("boxes") or []]
        theirs = [ChangeBox(sample.id, sample.argument, sample.change_kind, shapely.Polygon(b)) for b in sample.reference_boxes]
        predicted += mine
        true += theirs
        with Image.open(sample.image) as frame:
            shape = (frame.height, frame.width)
        pixels.add(rasterised([b.polygon for b in mine], shape), rasterised([b.polygon for b in theirs], shape))
    return {**object_scores(predicted, true), **pixels.as_dict(), "samples": len(samples)}
