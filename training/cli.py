"""`rscovlm train ...`: export labelled layers as a dataset, fine-tune, merge an adapter."""

from __future__ import annotations

import argparse
import json
import sys

from backend.resolution import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE
from training import fit as fitting
from training.export import ExportOptions
from training.grpo import add_arguments as grpo_arguments

EXPORT_HELP = "cut a raster and its labelled polygons into tiles + RSCoVLM conversations + DOTA labels"
FIT_HELP = "fine-tune (LoRA, QLoRA or full) on a data mixture; resumes when run again"
GRPO_HELP = "reinforcement fine-tuning (GRPO, TRL) with task rewards, from a base or an SFT adapter; resumes when run again"
MERGE_HELP = "merge a LoRA adapter into its base: a full checkpoint folder for --model"


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="export training data from labelled layers; fine-tune RSCoVLM",
                                  description="Export training data from labelled layers and fine-tune RSCoVLM.")
    commands = train.add_subparsers(dest="train_command", metavar="STEP", required=True)

    export = commands.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP)
    export.add_argument("--raster", required=True, help="the imagery (GeoTIFF or any raster GDAL reads)")
    export.add_argument("--labels", required=True, help="polygon layer (GeoPackage, GeoJSON, shapefile...), any CRS")
    export.add_argument("--layer", help="layer name inside --labels (default: the first)")
    classes = export.add_mutually_exclusive_group(required=True)
    classes.add_argument("--class-field", help="field holding each object's class")
    classes.add_argument("--class-name", help="one class for every object, e.g. building")
    export.add_argument("--text-field", help="field with a referring expression: adds grounding samples")
    export.add_argument("--caption-field", help="field with a description of the object: adds region-caption samples")
    export.add_argument("--out", required=True, help="dataset folder to write (docs/DATASET.md)")
    export.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help=f"tile side in working pixels (default {DEFAULT_TILE_SIZE})")
    export.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, help=f"(default {DEFAULT_TILE_OVERLAP})")
    export.add_argument("--gsd", type=float, help="resample to this many metres per pixel (default: native)")
    export.add_argument("--bands", help="1-based bands: one (grey) or three as R,G,B")
    export.add_argument("--extent", help="xmin,ymin,xmax,ymax (default: the whole raster)")
    export.add_argument("--extent-crs", help="CRS of --extent (default: the raster's)")
    export.add_argument("--min-visible", type=float, default=0.5, help="keep an object cut by a tile edge when this share of it is inside (default 0.5)")
    export.add_argument("--keep-empty", type=float, default=0.25, help="share of tiles without objects to keep (default 0.25)")
    export.add_argument("--val-fraction", type=float, default=0.2, help="share of spatial blocks held out for validation (default 0.2)")
    export.add_argument("--block-size", type=int, default=2048, help="side of a split block in working pixels (default 2048)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--no-progress", action="store_true")
    export.set_defaults(handler=run_export)

    fit = commands.add_parser("fit", help=FIT_HELP, description=FIT_HELP)
    fitting.add_arguments(fit)
    fit.set_defaults(handler=fitting.run)

    grpo = commands.add_parser("grpo", help=GRPO_HELP, description=GRPO_HELP)
    grpo_arguments(grpo)
    grpo.set_defaults(handler=run_grpo)

    merge = commands.add_parser("merge", help=MERGE_HELP, description=MERGE_HELP)
    merge.add_argument("--model", required=True, help="the base checkpoint the adapter was trained on")
    merge.add_argument("--adapter", required=True, help="adapter folder (runs/x/adapter)")
    merge.add_argument("--out", required=True, help="checkpoint folder to write")
    merge.set_defaults(handler=run_merge)


def run_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.cli.tasks import _numbers
    from training.export import export_dataset

    options = ExportOptions(
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        gsd=args.gsd,
        bands=_numbers(args.bands, None, "--bands", int) if args.bands else None,
        extent=_numbers(args.extent, 4, "--extent") if args.extent else None,
        extent_crs=args.extent_crs,
        min_visible=args.min_visible,
        keep_empty=args.keep_empty,
        val_fraction=args.val_fraction,
        block_size=args.block_size,
        seed=args.seed,
    )
    with tqdm(unit="tile", desc="export", file=sys.stderr, disable=True if args.no_progress else None) as bar:

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        manifest = export_dataset(
            args.raster, args.labels, args.out, args.class_field, args.class_name, args.text_field, args.caption_field,
            args.layer, options, args.overwrite, progress=show,
        )
    counts = manifest["counts"]
    for split in ("train", "val"):
        c = counts[split]
        objects = sum(c["objects"].values())
        samples = ", ".join(f"{task} {n}" for task, n in c["samples"].items()) or "none"
        print(f"{split}: {c['tiles']} tile(s), {objects} object(s); samples: {samples}")
    skipped = counts["labels"]["skipped"]
    if skipped:
        print("skipped features: " + ", ".join(f"{n} {why}" for why, n in skipped.items()), file=sys.stderr)
    for warning in manifest["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out} (classes: {json.dumps(manifest['classes'])})")
    return 0


def run_grpo(args: argparse.Namespace) -> int:
    from training.grpo import run

    return run(args)


def run_merge(args: argparse.Namespace) -> int:
    path = fitting.merge_adapter(args.model, args.adapter, args.out)
    print(f"wrote {path}")
    return 0
