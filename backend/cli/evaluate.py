"""`rscovlm eval`: score predictions against ground truth (detection, grounding), or run a
checkpoint over a dataset split and score it (run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backend.errors import UserError

METRICS = ("voc07", "all")


def _detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a match must exceed (default 0.5)")
    parser.add_argument("--metric", choices=METRICS, default="voc07", help="AP: VOC07 11-point (default, as DOTA) or all-point")


def register(subparsers) -> None:
    group = subparsers.add_parser("eval", help="score predictions or a checkpoint with the RSCoVLM paper's protocols",
                                  description="Score predictions or a checkpoint with the protocols of the RSCoVLM paper.")
    commands = group.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)

    detection = commands.add_parser(
        "detection",
        help="AP_nc / mAP, precision, recall, F1 of detections",
        description="Score detections: DOTA txt folders (per image, or Task1 submission files) or vector layers. "
        "Without --scored every prediction scores 1 (AP_nc); ties rank by image name, then line order.",
    )
    detection.add_argument("--pred", required=True, help="folder of per-image DOTA txt or Task1_<class>.txt files, or a vector layer")
    detection.add_argument("--gt", required=True, help="folder of per-image DOTA label files (or a dataset split), or a vector layer")
    detection.add_argument("--label-field", help="class field of vector layers (default: label, class, category or type)")
    detection.add_argument("--image-field", help="field of vector layers naming the image a feature belongs to (default: one image)")
    detection.add_argument("--classes", help="comma-separated classes to score ('dota' for DOTA-v1.0); default: every class seen")
    detection.add_argument("--scored", action="store_true", help="predictions carry scores: report mAP, and AP_nc over a score threshold")
    detection.add_argument("--val-pred", help="with --scored: predictions on a validation split, to choose the threshold on")
    detection.add_argument("--val-gt", help="with --scored: ground truth of that validation split")
    detection.add_argument("--threshold", type=float, help="with --scored: keep predictions scoring over this (instead of choosing)")
    _detection_options(detection)
    detection.add_argument("--hbox", action="store_true", help="compare horizontal envelopes instead of rotated rectangles")
    _output_options(detection)
    detection.set_defaults(handler=detection_command)

    grounding = commands.add_parser("grounding", help="Acc@0.5 and mean IoU of grounding boxes",
                                    description="Score grounding: one reference box per sample, the first box of each answer.")
    grounding.add_argument("--pred", required=True, help="folder of per-sample DOTA txt files (file stem = sample id), or a vector layer")
    grounding.add_argument("--gt", required=True, help="the same for the reference boxes")
    grounding.add_argument("--id-field", help="field of vector layers holding the sample id")
    _output_options(grounding)
    grounding.set_defaults(handler=grounding_command)

    change = commands.add_parser("change", help="object F1 and pixel F1 of change detections",
                                 description="Score change detections (rscovlm change -o x.gpkg) against a layer of the changed objects: "
                                 "object F1 at IoU 0.5 per class and kind of change, and with --mask pixel F1 / IoU of the boxes "
                                 "rasterised against the change mask (TEOChat's localisation measure).")
    change.add_argument("--pred", required=True, help="the change layer rscovlm change wrote")
    change.add_argument("--gt", required=True, help="the true changes: polygons with 'label' and 'change' (appeared/disappeared) fields")
    change.add_argument("--mask", help="a change mask raster (non-zero: changed) to score pixels against")
    change.add_argument("--iou", type=float, default=0.5, help="IoU a match must reach (default 0.5)")
    _output_options(change)
    change.set_defaults(handler=change_command)

    run = commands.add_parser("run", help="run a checkpoint over a dataset split and score it",
                              description="Run a checkpoint over a dataset split (docs/DATASET.md) through the pipeline of the "
                              "task commands, write its answers to OUT/predictions (resumable), and score them.")
    from backend.engine.factory import add_engine_options

    add_engine_options(run.add_argument_group("model"))
    run.add_argument("--data", required=True, help="dataset split folder: images/, labelTxt/, conversations.jsonl")
    run.add_argument("--out", required=True, help="report folder; run again with the same options to resume")
    run.add_argument("--classes", help="detection classes (default: the dataset manifest's, or those in labelTxt/)")
    run.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the task commands')")
    _detection_options(run)
    run.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal anyway)")
    run.set_defaults(handler=run_command)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="report folder: report.json and PNG plots")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _check_iou(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"--iou {value:g} is outside [0, 1).", "Use e.g. --iou 0.5.")


def _out_folder(out: str | None) -> Path | None:
    if out is None:
        return None
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {out} is a file.", "Give a folder for the report.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from backend.cli.tasks import _classes as split_classes

    classes = split_classes(text)
    if not classes:
        raise UserError("--classes is empty.", "Give comma-separated class names, or leave it out to score every class.")
    return classes


def detection_command(args: argparse.Namespace) -> int:
    from backend.evaluation.protocols import detection_report
    from backend.evaluation.report import detection_table, plot_precision_recall, plot_threshold_sweep, write_json
    from backend.evaluation.sources import read_predictions, read_truth

    _check_iou(args.iou)
    if (args.val_pred is None) != (args.val_gt is None):
        raise UserError("--val-pred and --val-gt go together.", "Give both, or neither.")
    if (args.val_pred or args.threshold is not None) and not args.scored:
        raise UserError("--val-pred/--val-gt and --threshold only apply to scored predictions.", "Add --scored, or leave them out.")
    if args.threshold is not None and args.val_pred:
        raise UserError("--threshold and --val-pred both choose the score threshold.", "Give one of them.")
    out = _out_folder(args.out)
    truth, crs = read_truth(args.gt, args.label_field, args.image_field)
    predictions = read_predictions(args.pred, args.scored, args.label_field, args.image_field, crs)
    if len(predictions.boxes) and not set(predictions.images) & set(truth.images):
        raise UserError(
            f"no predicted image is in the ground truth (e.g. '{predictions.images[0]}' vs '{truth.images[0] if truth.images else '-'}').",
            "Prediction and label files must share image names (file stems), or give --image-field for vector layers.",
        )
    validation = None
    if args.val_pred:
        val_truth, val_crs = read_truth(args.val_gt, args.label_field, args.image_field)
        validation = (val_truth, read_predictions(args.val_pred, True, args.label_field, args.image_field, val_crs))
    report = detection_report(truth, predictions, _classes(args.classes), args.iou, args.metric, args.hbox, args.scored,
                              args.threshold, validation)
    document = report.as_dict() | {"inputs": {"pred": str(args.pred), "gt": str(args.gt), "val_pred": args.val_pred, "val_gt": args.val_gt}}
    if out is not None:
        write_json(out / "report.json", document)
        plot_precision_recall(report.headline, out / "precision_recall.png", "precision-recall per class (AP_nc)")
        if report.scored is not None:
            plot_precision_recall(report.scored, out / "precision_recall_scored.png", "precision-recall per class (ranked by score)")
            plot_threshold_sweep(report.sweep, report.threshold, out / "f1_threshold.png")
    if args.json:
        print(json.dumps(document))
        return 0
    print(detection_table(document))
    if report.scored is not None:
        print(f"AP_nc at score threshold {report.threshold:g} ({report.threshold_source}); AP (scored) ranks by score.")
    settings = report.headline.settings
    print(f"{settings['metric']}, IoU > {args.iou:g} on {settings['boxes']}; ties: {settings['ties']}.")
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if out is not None:
        print(f"wrote {out / 'report.json'}")
    return 0


def grounding_command(args: argparse.Namespace) -> int:
    from backend.evaluation.grounding import first_boxes, score_grounding
    from backend.evaluation.report import write_json
    from backend.evaluation.sources import read_predictions, read_truth

    out = _out_folder(args.out)
    truth, crs = read_truth(args.gt, None, args.id_field, labelled=False)
    predictions = read_predictions(args.pred, False, None, args.id_field, crs, labelled=False)
    references = first_boxes(truth.boxes)
    if not references:
        raise UserError(f"{args.gt} holds no reference box.", "Give one box per sample.")
    scores = score_grounding(references, first_boxes(predictions.boxes))
    document = {"task": "grounding", **scores.as_dict(), "inputs": {"pred": str(args.pred), "gt": str(args.gt)}}
    if out is not None:
        write_json(out / "report.json", document)
    if args.json:
        print(json.dumps(document))
        return 0
    print(f"Acc@0.5 {100 * scores.accuracy:.2f}  mean IoU {100 * scores.mean_iou:.2f}  "
          f"({scores.correct} of {scores.samples} samples over IoU 0.5; {scores.samples - scores.answered} without a box)")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from backend.cli.tasks import resolve_model
    from backend.engine.factory import engine_choice, load_engine
    from backend.evaluation.dataset import open_split
    from backend.evaluation.report import detection_table
    from backend.evaluation.run import evaluate_model

    _check_iou(args.iou)
    out = _out_folder(args.out)
    split = open_split(args.data)  # bad data fails before the model loads
    choice = engine_choice(args, lambda: resolve_model(args))
    engine = load_engine(choice)
    from tqdm import tqdm

    bar = tqdm(unit="item", desc="eval", file=sys.stderr, disable=True if args.no_progress else None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        document = evaluate_model(engine, split, out, _classes(args.classes), args.max_new_tokens, args.iou, args.metric, progress)
    except KeyboardInterrupt:
        bar.close()
        print(f"rscovlm: interrupted; the answers written so far are in {out}/predictions: run the same command to resume.", file=sys.stderr)
        return 130
    bar.close()
    if args.json:
        print(json.dumps(document))
        return 0
    tasks = document["tasks"]
    if "detection" in tasks:
        print(detection_table(tasks["detection"]))
    for name, key in (("grounding", "Acc@0.5"), ("classification", "accuracy"), ("vqa", "accuracy"), ("zoom", "accuracy"), ("captioning", "CIDEr")):
        if name in tasks and tasks[name].get(key) is not None:
            value = tasks[name][key]
            print(f"{name}: {key} {value if name == 'captioning' else 100 * value:.2f} ({tasks[name]['samples']} samples)")
    print(f"wrote {out / 'report.json'}")
    return 0


def _change_boxes(path: Path, target_crs: str | None) -> tuple[list, str | None]:
    """ChangeBoxes of a layer (one sample: the layer), reprojected into `target_crs`."""
    import pyogrio.raw
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError

    from backend.evaluation.change import ChangeBox
    from backend.evaluation.layers import reprojected
    from backend.prompts import normalise_category

    try:
        meta, _, geometry, values = pyogrio.raw.read(str(path))
    except (DataSourceError, DataLayerError) as exc:
        raise UserError(f"{path} is not a readable vector layer ({str(exc).splitlines()[0]}).", "Pass a GeoPackage or GeoJSON file.") from None
    columns = dict(zip([str(f) for f in meta["fields"]], values))
    if "label" not in columns:
        raise UserError(f"{path} has no 'label' field.", "Give the layer rscovlm change wrote, or the true changes with label and change fields.")
    geoms = shapely.from_wkb(geometry) if geometry is not None else []
    geoms, crs = reprojected(geoms, meta.get("crs"), target_crs)
    kinds = columns.get("change", ["changed"] * len(geoms))
    boxes = [ChangeBox("layer", normalise_category(str(label)), str(kind), g) for g, label, kind in zip(geoms, columns["label"], kinds)
             if g is not None and g.geom_type == "Polygon" and g.area > 0]
    return boxes, crs


def change_command(args: argparse.Namespace) -> int:
    import rasterio

    from backend.evaluation.change import PixelScores, object_scores, rasterised
    from backend.evaluation.report import write_json

    _check_iou(args.iou)
    out = _out_folder(args.out)
    truths, crs = _change_boxes(Path(args.gt), None)
    predictions, _ = _change_boxes(Path(args.pred), crs)
    document = {"task": "change", "objects": object_scores(predictions, truths, args.iou), "inputs": {"pred": args.pred, "gt": args.gt}}
    if args.mask:
        try:
            with rasterio.open(args.mask) as mask_file:
                mask, transform, mask_crs = mask_file.read(1) > 0, mask_file.transform, mask_file.crs
        except rasterio.errors.RasterioIOError as exc:
            raise UserError(f"--mask {args.mask} is not a readable raster ({exc}).", "Give the change mask GeoTIFF.") from None
        if mask_crs is not None and crs:
            predictions, _ = _change_boxes(Path(args.pred), mask_crs.to_wkt())
        pixels = PixelScores()
        pixels.add(rasterised([b.polygon for b in predictions], mask.shape, transform), mask)
        document["pixels"] = pixels.as_dict()
        document["inputs"]["mask"] = args.mask
    if out is not None:
        write_json(out / "report.json", document)
    if args.json:
        print(json.dumps(document))
        return 0
    objects = document["objects"]

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    print(f"objects: F1 {pct(objects['F1'])}  precision {pct(objects['precision'])}  recall {pct(objects['recall'])}  "
          f"({objects['matched']} matched of {objects['predicted']} predicted, {objects['true']} true)")
    if "pixels" in document:
        print(f"pixels: F1 {pct(document['pixels']['pixel_F1'])}  IoU {pct(document['pixels']['pixel_IoU'])}")
    return 0
