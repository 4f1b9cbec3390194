"""The task commands: detect, ground, caption, classify, ask, and describe-region (the features
of a vector layer described, each answer written into the layer as an attribute)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from backend.contract import TaskOptions, TaskRequest, TaskResult
from backend.engine.factory import add_engine_options, engine_choice, load_engine
from backend.errors import UserError, validation_problem
from backend.model_defaults import model_defaults
from backend.prompts import DOTA_CLASSES
from backend.resolution import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE
from backend.zoom import zoom_summary
from backend.zoom_plan import ZOOM_TASKS

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "demo"

TASK_HELP = {
    "detect": "find objects of the given classes; rotated boxes",
    "ground": "find the object a phrase refers to; one box",
    "caption": "describe the extent in a sentence",
    "classify": "pick the scene class of the extent",
    "ask": "answer a question about the extent",
    "describe-region": "describe each feature of a vector layer (or a box); the answers as an attribute",
    "change": "compare two rasters of the same place (before, after): changed objects as boxes, or --caption",
}
COMMAND_TASKS = {"describe-region": "describe"}  # a command's name where it is not the task's


def _numbers(text: str, count: int | None, what: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UserError(f"{what} '{text}' is not a comma-separated list of numbers.", None) from None
    if count is not None and len(values) != count:
        raise UserError(f"{what} '{text}' has {len(values)} numbers, not {count}.", None)
    return values


def _classes(text: str) -> list[str]:
    if text.strip().lower() == "dota":
        return list(DOTA_CLASSES)
    return [c.strip() for c in text.split(",") if c.strip()]


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raster", help="raster file (GeoTIFF or any format GDAL reads)")
    model = parser.add_argument_group("model")
    add_engine_options(model)
    model.add_argument("--max-new-tokens", type=int, help="answer length limit, tokens (default: 4096 for detection, 64-128 otherwise)")
    model.add_argument("--min-pixels", type=int, help="least pixels a view is shown at (default: the model's trained range)")
    model.add_argument("--max-pixels", type=int, help="most pixels a view is shown at (default: the model's trained range)")
    where = parser.add_argument_group("where")
    where.add_argument(
        "--extent",
        help="xmin,ymin,xmax,ymax (default: the whole raster); write --extent=-77.5,... for a negative first value",
    )
    where.add_argument("--extent-crs", help="CRS of --extent: EPSG:xxxx, WKT or PROJ (default: the raster's)")
    where.add_argument("--bands", help="1-based bands: one (grey) or three as R,G,B (default: RGB by colour interpretation)")
    where.add_argument("--gsd", type=float, help="resample to this many metres per pixel (default: native)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", help="write features to .gpkg, .geojson, .fgb or .txt (DOTA)")
    out.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    out.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal anyway)")


def register(subparsers) -> None:
    for command, help_text in TASK_HELP.items():
        task = COMMAND_TASKS.get(command, command)
        parser = subparsers.add_parser(command, help=help_text, description=help_text)
        _common_options(parser)
        if task in ("detect", "classify"):
            example = "plane,ship,small vehicle" if task == "detect" else "airport,harbor,farmland"
            parser.add_argument("--classes", required=True, help=f"comma-separated, e.g. \"{example}\"; 'dota' for the DOTA-v1.0 list")
        if task == "change":
            parser.add_argument("after", help="the later raster of the same place (any CRS, resolution or extent; read on the first's grid)")
            parser.add_argument("--classes", help='what changed, comma-separated, e.g. "building,small vehicle" (not with --caption)')
            parser.add_argument("--changes", help="per class: changed (default; TEOChat's question), appeared, disappeared, comma-separated")
            parser.add_argument("--caption", action="store_true", help="describe the changes in words instead")
        if task == "detect":
            parser.add_argument("--tile-size", type=int, help=f"tile side in pixels (default {DEFAULT_TILE_SIZE}, or the checkpoint's own)")
            parser.add_argument(
                "--tile-overlap", type=int, help=f"(default: a quarter of the tile, at most {DEFAULT_TILE_OVERLAP}, or the checkpoint's own)"
            )
            parser.add_argument("--box-form", choices=["polygon", "rbox", "hbox"], help="answer form asked for (default polygon)")
            parser.add_argument("--nms-iou", type=float, help="merge duplicates across tiles above this IoU (default 0.1)")
        if task == "ground":
            parser.add_argument("--expression", required=True, help='what to find, e.g. "the white ship next to the pier"')
            parser.add_argument("--box-form", choices=["hbox", "polygon"], help="a box (hbox, default) or a rotated polygon (polygon grounding)")
        if task == "ask":
            parser.add_argument("--question", required=True)
            parser.add_argument("--choices", help='multiple choice: the answers, separated by ";", e.g. "Yellow;Red;Blue" or "(A) Yellow;(B) Red"')
        if task == "describe":
            regions = parser.add_argument_group("what to describe (one of)")
            regions.add_argument("--feature-layer", help="a vector file (GeoPackage, GeoJSON...): every feature is described")
            regions.add_argument("--layer", help="the layer inside --feature-layer (default: the first)")
            regions.add_argument("--box", help="one box xmin,ymin,xmax,ymax in --extent-crs (default: the raster's CRS)")
        if task in ZOOM_TASKS:
            _zoom_options(parser, task)
        parser.set_defaults(handler=run_command, task=task, feature_layer=None, box=None)


def _zoom_options(parser: argparse.ArgumentParser, task: str) -> None:
    zoom = parser.add_argument_group("Zoom-in Chain (rasters larger than the model can see)")
    zoom.add_argument(
        "--zoom", nargs="?", const="on", choices=["auto", "on", "off"],
        help="look at the whole extent, zoom into the region the model picks, answer from there; "
        "auto (default): when the extent exceeds the pixel budget by --zoom-factor; --zoom alone means on",
    )
    factor, steps = (TaskOptions.model_fields[name].default for name in ("zoom_factor", "zoom_steps"))
    zoom.add_argument("--zoom-factor", type=float, help=f"auto zooms above this many times the pixel budget (default {factor:g})")
    zoom.add_argument("--zoom-steps", type=int, help=f"further zoom steps allowed after the first (default {steps}, at most 8)")
    if task == "ask":
        zoom.add_argument(
            "--zoom-counting", action="store_true", default=None, help="zoom for counting questions too (not trained; off by default)"
        )


def build_request(args: argparse.Namespace, regions: list | None = None) -> TaskRequest:
    """The request the options ask for; options not given stay unset, for the model's defaults
    to fill (`backend.model_defaults`). `regions`: describe's boxes."""
    options = {"gsd": args.gsd, "max_new_tokens": args.max_new_tokens, "min_pixels": args.min_pixels, "max_pixels": args.max_pixels}
    if args.bands:
        options["bands"] = _numbers(args.bands, None, "--bands", int)
    if args.task == "detect":
        options.update(tile_size=args.tile_size, tile_overlap=args.tile_overlap, box_form=args.box_form, nms_iou=args.nms_iou)
    if args.task == "ground":
        options["box_form"] = args.box_form
    task = args.task
    if task == "change":
        if args.caption == bool(args.classes):
            raise UserError("change needs --classes (what changed) or --caption (the changes in words), not both.", "See rscovlm change --help.")
        task = "change_caption" if args.caption else "change"
        options["change_kinds"] = [c.strip() for c in args.changes.split(",") if c.strip()] if args.changes else None
    if args.task in ZOOM_TASKS:
        options.update(zoom=args.zoom, zoom_factor=args.zoom_factor, zoom_steps=args.zoom_steps)
    if args.task == "ask":
        options["zoom_counting"] = args.zoom_counting
    fields = {
        "task": task,
        "raster": args.raster,
        "raster_after": getattr(args, "after", None),
        "extent": _numbers(args.extent, 4, "--extent") if args.extent else None,
        "extent_crs": args.extent_crs,
        "classes": _classes(args.classes) if getattr(args, "classes", None) is not None else None,
        "expression": getattr(args, "expression", None),
        "question": getattr(args, "question", None),
        "choices": [c for c in args.choices.split(";") if c.strip()] if getattr(args, "choices", None) else None,
        "regions": regions,
    }
    try:
        return TaskRequest(**fields, options=TaskOptions(**{k: v for k, v in options.items() if v is not None}))
    except ValidationError as exc:
        raise UserError(validation_problem(exc.errors()), "See rscovlm " + args.command + " --help.") from None


def resolve_model(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    if (BUNDLED_MODEL / "config.json").is_file():
        return str(BUNDLED_MODEL)
    raise UserError(
        "--model is required: no bundled demo checkpoint is installed yet.",
        "Pass a checkpoint folder or a hub id, e.g. --model Qingyun/RSCoVLM-7B-2512.",
    )


def described_regions(args: argparse.Namespace) -> tuple[dict | None, list, str | None]:
    """What describe-region asks about: the features of --feature-layer (their boxes, in the
    layer's CRS) or one --box (in --extent-crs); and that CRS."""
    if bool(args.feature_layer) == bool(args.box):
        raise UserError("describe-region needs either --feature-layer or --box.", "Give the features to describe, or one box.")
    if args.box:
        return None, [tuple(_numbers(args.box, 4, "--box"))], args.extent_crs
    from backend.feature_layer import feature_bounds, layer_crs, read_features

    features = read_features(args.feature_layer, args.layer)
    crs = layer_crs(features)
    if crs is None:
        raise UserError(f"{args.feature_layer} has no CRS, so its features cannot be placed on the raster.", "Assign the layer a CRS first.")
    return features, feature_bounds(features), crs


def summary(result: TaskResult) -> str:
    if result.task == "detect":
        counts = Counter(f.properties["label"] for f in result.features)
        listed = ", ".join(f"{label} {n}" for label, n in sorted(counts.items())) or "none"
        return f"{len(result.features)} object(s): {listed} ({result.stats.views} tile(s))"
    if result.task == "ground":
        found = [f for f in result.features if f.properties.get("role") != "zoom"]  # not where it only looked
        if not found:
            return "not found"
        coords = found[0].geometry["coordinates"][0]
        xs, ys = [c[0] for c in coords], [c[1] for c in coords]
        return f"found at {min(xs):.6g},{min(ys):.6g},{max(xs):.6g},{max(ys):.6g} ({result.crs or 'pixels'})"
    if result.task == "classify" and result.features:
        label = result.features[0].properties.get("label")
        return f"{label or '(no class)'}  [{result.text}]"
    if result.task == "change":
        counts = Counter(f"{f.properties['change']} {f.properties['label']}" for f in result.features)
        listed = ", ".join(f"{what} {n}" for what, n in sorted(counts.items())) or "none"
        dates = result.features[0].properties if result.features else {}
        between = f" between {dates['date_before']} and {dates['date_after']}" if dates else ""
        return f"{len(result.features)} change(s){between}: {listed} ({result.stats.views} view(s))"
    if result.task == "describe":
        return "\n".join(f"{f.properties['region'] + 1}: {f.properties['text']}" for f in result.features)
    return result.text or ""


def run_command(args: argparse.Namespace) -> int:
    from backend.drive import drive, open_run
    from backend.writers import output_format, write_result

    if args.output:
        output_format(args.output)
    features = None
    if args.task == "describe":
        features, regions, args.extent_crs = described_regions(args)
    choice = engine_choice(args, lambda: resolve_model(args))
    request = build_request(args, regions if args.task == "describe" else None)
    # A server is asked what its model was trained on; a checkpoint folder says it in its files,
    # so the raster is opened and the views planned before the weights load: bad input fails in a second.
    engine = load_engine(choice) if choice.url else None
    defaults = engine.defaults if engine is not None else model_defaults(choice.model, choice.adapter)
    with open_run(request, choice.label, defaults) as run:
        engine = engine or load_engine(choice)
        from tqdm import tqdm

        with tqdm(total=run.total, unit="view", desc=args.task, file=sys.stderr, disable=True if args.no_progress else None) as bar:
            result = drive(run, engine, progress=lambda done, total: bar.update(done - bar.n))
    if args.output and features is not None:
        from backend.feature_layer import write_described

        texts = {f.properties["region"]: f.properties["text"] for f in result.features}
        write_described(features, [texts.get(i) for i in range(len(regions))], args.output)
    elif args.output:
        write_result(result, args.output)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.model_dump(mode="json")))
    else:
        print(summary(result))
        if result.zoom is not None:
            print(zoom_summary(result.zoom))
        if args.output:
            print(f"wrote {args.output}")
    return 0
