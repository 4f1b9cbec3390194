"""Export a raster and its labelled polygons as an RSCoVLM training/evaluation dataset.

The raster is cut the way detection cuts it (backend.pipeline.plan_views: tiles with overlap at
the working GSD, each read at its smart_resize size), so a stored tile holds exactly the pixels
the backend would show the model, and conversation coordinates are pixels of that image. The
extent is first divided into spatial blocks, each block tiled on its own and assigned as a
whole to train or val: neighbouring tiles share pixels, so a random tile split would leak.

The folder layout is docs/DATASET.md. Everything is written into a staging folder beside the
target and renamed at the end (backend.atomic), so an interrupted or failed export leaves
nothing half-written.

    rscovlm train export --raster ortho.tif --labels boats.gpkg --class-field type --out data/boats
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from pydantic import ValidationError

from backend.atomic import staged_folder
from backend.contract import TaskOptions, TaskRequest
from backend.errors import Cancelled, UserError
from backend.geometry import order_vertices
from backend.georef import View, raster_to_map
from backend.pipeline import plan_views, working_scale
from backend.prompts import (
    NO_OBJECTS,
    detection_categories,
    detection_prompt,
    grounding_expression,
    grounding_prompt,
    region_caption_prompt,
)
from backend.raster import PixelWindow, RasterSource, crs_name
from backend.resolution import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, MAX_PIXELS, MIN_PIXELS
from training.labels import LabelledObject, read_labels

DATASET_FORMAT = "rscovlm-dataset"
DATASET_VERSION = 1
SPLITS = ("train", "val")
WHOLE = 0.999  # share of an object's area inside a tile above which it counts as uncut

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class ExportOptions:
    tile_size: int = DEFAULT_TILE_SIZE  # pixels at the working GSD, as `detect --tile-size`
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    gsd: float | None = None  # metres per pixel; None: native
    bands: Sequence[int] | None = None
    extent: Sequence[float] | None = None
    extent_crs: str | None = None
    min_visible: float = 0.5  # keep an object cut by a tile edge when this share of its area is inside
    keep_empty: float = 0.25  # share of tiles without objects kept, answered "There are none."
    val_fraction: float = 0.2  # share of spatial blocks held out for validation
    block_size: int = 2048  # side of a split block, pixels at the working GSD
    seed: int = 0
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS


@dataclass(frozen=True)
class TileObject:
    """An object as one tile shows it: a quadrilateral in the tile image's pixels."""

    obj: LabelledObject
    points: np.ndarray  # (4, 2) float, clockwise from the top-most vertex, inside the image
    cut: bool  # part of it lies outside the tile

    def integer_points(self) -> np.ndarray:
        """As the answer writes them: rounded first, then ordered (rounding can tie the top-most
        vertex with its neighbour, and the order rule must see the tie)."""
        return order_vertices(np.rint(self.points)).astype(int)


@dataclass
class SplitCounts:
    tiles: int = 0
    tiles_with_objects: int = 0
    empty_tiles: int = 0
    objects: Counter = field(default_factory=Counter)
    samples: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "tiles": self.tiles,
            "tiles_with_objects": self.tiles_with_objects,
            "empty_tiles": self.empty_tiles,
            "objects": dict(sorted(self.objects.items())),
            "samples": dict(sorted(self.samples.items())),
        }


def _check_options(options: ExportOptions) -> None:
    checks = (
        (0.0 < options.min_visible <= 1.0, f"--min-visible {options.min_visible} must be in (0, 1]"),
        (0.0 <= options.keep_empty <= 1.0, f"--keep-empty {options.keep_empty} must be in [0, 1]"),
        (0.0 <= options.val_fraction < 1.0, f"--val-fraction {options.val_fraction} must be in [0, 1)"),
        (options.block_size >= options.tile_size, f"--block-size {options.block_size} must be at least the tile size {options.tile_size}"),
    )
    for ok, problem in checks:
        if not ok:
            raise UserError(problem + ".", "See rscovlm train export --help.")


def plan_blocks(window: PixelWindow, work_width: int, work_height: int, block_size: int) -> list[PixelWindow]:
    """Equal, non-overlapping blocks of about block_size working pixels covering the window."""

    def edges(offset: int, length: int, work_length: int) -> list[int]:
        parts = max(1, round(work_length / block_size))
        return [offset + round(i * length / parts) for i in range(parts + 1)]

    xs = edges(window.col_off, window.width, work_width)
    ys = edges(window.row_off, window.height, work_height)
    return [
        PixelWindow(x0, y0, x1 - x0, y1 - y0)
        for y0, y1 in zip(ys[:-1], ys[1:])
        for x0, x1 in zip(xs[:-1], xs[1:])
    ]


def assign_splits(block_count: int, val_fraction: float, seed: int) -> list[str]:
    """Which split each block goes to; at least one block each way when there are two or more."""
    if block_count < 2 or val_fraction <= 0:
        return ["train"] * block_count
    val_count = min(block_count - 1, max(1, round(val_fraction * block_count)))
    val = set(np.random.default_rng(seed).choice(block_count, size=val_count, replace=False).tolist())
    return ["val" if i in val else "train" for i in range(block_count)]


def objects_in_view(
    view: View, objects: Sequence[LabelledObject], tree: shapely.STRtree, min_visible: float
) -> tuple[list[TileObject], int]:
    """Objects a tile shows, clipped to it and converted to its image pixels, and how many were
    dropped for lying mostly outside it."""
    footprint = shapely.Polygon(view.corners())
    shown, dropped = [], 0
    for i in sorted(tree.query(footprint, predicate="intersects").tolist()):
        obj = objects[i]
        inside = obj.geometry.intersection(footprint)
        share = inside.area / obj.geometry.area
        if share < min_visible:
            dropped += int(inside.area > 0)
            continue
        in_image = shapely.transform(inside, view.from_raster)
        rectangle = shapely.oriented_envelope(in_image)
        if rectangle.geom_type != "Polygon":
            continue
        corners = np.asarray(rectangle.exterior.coords, dtype=float)[:4]
        corners[:, 0] = corners[:, 0].clip(0, view.out_width)
        corners[:, 1] = corners[:, 1].clip(0, view.out_height)
        points = order_vertices(corners)
        if shapely.Polygon(np.rint(points)).area < 1.0:
            continue  # smaller than a pixel of the image the model sees
        shown.append(TileObject(obj, points, share < WHOLE))
    return shown, dropped


def detection_answer(shown: Sequence[TileObject]) -> str:
    """MODEL_IO's answer: one `x1,y1,...,x4,y4 class` line per object, sorted by (class, y1, x1)."""
    if not shown:
        return NO_OBJECTS
    lines = []
    for item in shown:
        pts = item.integer_points()
        lines.append((item.obj.label, int(pts[0, 1]), int(pts[0, 0]), ",".join(str(v) for v in pts.reshape(-1))))
    return "\n".join(f"{coords} {label}" for label, _, _, coords in sorted(lines))


def dota_lines(shown: Sequence[TileObject]) -> str:
    """DOTA labelTxt: image pixels, class names with '-' for spaces; cut objects are difficult."""
    return "".join(
        " ".join(f"{v:.1f}" for v in item.points.reshape(-1)) + f" {item.obj.label.replace(' ', '-')} {int(item.cut)}\n"
        for item in shown
    )


def _hbox(points: np.ndarray) -> list[int]:
    pts = np.rint(points).astype(int)
    return [int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max())]


def _record(split: str, name: str, task: str, view: View, messages: list[dict], suffix: str = "") -> dict:
    size = [view.out_width, view.out_height]
    return {
        "id": f"{split}/{name}{suffix}",
        "task": task,
        "images": [f"images/{name}.png"],
        "image_size": size,
        "resized_size": size,
        "window": [round(v, 3) for v in (view.col_off, view.row_off, view.width, view.height)],
        "messages": messages,
    }


def tile_samples(split: str, name: str, view: View, classes: Sequence[str], shown: Sequence[TileObject], counts: Counter) -> list[dict]:
    """The conversations of one tile: detection, then grounding and region captions of the
    objects it shows whole."""
    system, user = detection_prompt(classes)
    samples = [
        _record(split, name, "detect", view, [
            {"role": "system", "content": system},
            {"role": "user", "content": "<image>" + user},
            {"role": "assistant", "content": detection_answer(shown)},
        ])
    ]
    whole = [item for item in shown if not item.cut]
    expressions = Counter(item.obj.text.lower() for item in whole if item.obj.text)
    for k, item in enumerate(whole):
        if item.obj.text:
            if expressions[item.obj.text.lower()] > 1:
                counts["grounding skipped: same expression twice in a tile"] += 1
                continue
            system, user = grounding_prompt(item.obj.text)
            box = ",".join(str(v) for v in _hbox(item.points))
            expression = grounding_expression(item.obj.text)
            samples.append(
                _record(split, name, "ground", view, [
                    {"role": "system", "content": system},
                    {"role": "user", "content": "<image>" + user},
                    {"role": "assistant", "content": f"{box} {expression}"},
                ], f"/ground{k}")
            )
        if item.obj.caption:
            samples.append(
                _record(split, name, "caption", view, [
                    {"role": "user", "content": "<image>" + region_caption_prompt(_hbox(item.points))},
                    {"role": "assistant", "content": item.obj.caption},
                ], f"/caption{k}")
            )
    return samples


def _detect_request(raster: str, classes: list[str], options: ExportOptions) -> TaskRequest:
    try:
        return TaskRequest(
            task="detect",
            raster=raster,
            classes=classes,
            options=TaskOptions(
                tile_size=options.tile_size,
                tile_overlap=options.tile_overlap,
                gsd=options.gsd,
                bands=list(options.bands) if options.bands else None,
                min_pixels=options.min_pixels,
                max_pixels=options.max_pixels,
            ),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"invalid tile options: {first.get('msg', exc)}.", "See rscovlm train export --help.") from None


def export_dataset(
    raster: str | Path,
    labels: str | Path,
    out: str | Path,
    class_field: str | None = None,
    class_name: str | None = None,
    text_field: str | None = None,
    caption_field: str | None = None,
    layer: str | None = None,
    options: ExportOptions = ExportOptions(),
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> dict:
    """Write the dataset folder and return its manifest. `progress(done, total)` is called after
    each tile; when `should_stop()` turns true the export raises `Cancelled` and leaves nothing."""
    _check_options(options)
    out = Path(out)
    with RasterSource.open(raster, options.bands) as source:
        window = source.window_for_extent(options.extent, options.extent_crs)
        layer_data = read_labels(labels, source, class_field, class_name, text_field, caption_field, layer)
        objects = layer_data.objects
        if not objects:
            reasons = ", ".join(f"{n} {why}" for why, n in layer_data.skipped.most_common()) or "the layer is empty"
            raise UserError(f"no usable polygon in {labels} ({reasons}).", "Label objects as polygons with a class value.")
        extent_box = shapely.box(window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height)
        tree = shapely.STRtree([o.geometry for o in objects])
        if len(tree.query(extent_box, predicate="intersects")) == 0:
            bounds = shapely.total_bounds([o.geometry for o in objects])
            corners = raster_to_map(np.array([[bounds[0], bounds[3]], [bounds[2], bounds[1]]]), source.transform)
            raise UserError(
                f"none of the {len(objects)} labelled polygons overlaps the raster (labels span "
                f"{corners[0, 0]:.10g},{corners[1, 1]:.10g},{corners[1, 0]:.10g},{corners[0, 1]:.10g}; "
                f"raster bounds: {source.bounds_text()}).",
                "Check that the labels belong to this raster and that the layer's CRS is set correctly.",
            )
        classes = detection_categories([o.label for o in objects])
        request = _detect_request(str(raster), classes, options)
        sx, sy = working_scale(source, window, options.gsd)
        blocks = plan_blocks(window, max(1, round(window.width * sx)), max(1, round(window.height * sy)), options.block_size)
        splits = assign_splits(len(blocks), options.val_fraction, options.seed)
        views = [(b, view) for b, block in enumerate(blocks) for view in plan_views(source, block, request)]
        stretch = source.stretch_for(window)

        # Decide every tile's content before reading pixels: dropped empty tiles are never read.
        rng = np.random.default_rng([options.seed, 1])
        planned = []
        tile_counts: Counter = Counter()
        for b, view in views:
            shown, dropped = objects_in_view(view, objects, tree, options.min_visible)
            tile_counts["objects dropped: mostly outside the tile"] += dropped
            if not shown and rng.random() >= options.keep_empty:
                tile_counts["empty tiles dropped"] += 1
                continue
            planned.append((b, view, shown))

        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            if not overwrite:
                raise UserError(f"{out} already exists.", "Choose another --out, or pass --overwrite to replace it.")
            if not (out / "manifest.json").is_file():  # --overwrite on a mistyped folder must not wipe it
                raise UserError(f"{out} is not empty and holds no earlier export (no manifest.json); --overwrite only replaces an export.",
                                "Choose another --out.")
        counts = {split: SplitCounts() for split in SPLITS}
        with staged_folder(out) as staging, contextlib.ExitStack() as files:
            handles = {}
            for split in SPLITS:
                (staging / split / "images").mkdir(parents=True)
                (staging / split / "labelTxt").mkdir()
                handles[split] = files.enter_context(open(staging / split / "conversations.jsonl", "w", encoding="utf-8"))
            for done, (b, view, shown) in enumerate(planned, start=1):
                if should_stop is not None and should_stop():
                    raise Cancelled(f"export stopped after {done - 1} of {len(planned)} tiles")
                pixels = source.read_view(view, stretch)
                if pixels.valid_fraction == 0.0:
                    tile_counts["tiles skipped: all nodata"] += 1
                else:
                    split, name = splits[b], f"b{b:03d}t{view.index:03d}"
                    # zlib level 1: half the time of level 3 for 12% more bytes on aerial tiles
                    Image.fromarray(pixels.image).save(staging / split / "images" / f"{name}.png", compress_level=1)
                    (staging / split / "labelTxt" / f"{name}.txt").write_text(dota_lines(shown))
                    c = counts[split]
                    c.tiles += 1
                    c.tiles_with_objects += bool(shown)
                    c.empty_tiles += not shown
                    c.objects.update(item.obj.label for item in shown)
                    for sample in tile_samples(split, name, view, classes, shown, tile_counts):
                        handles[split].write(json.dumps(sample, ensure_ascii=False) + "\n")
                        c.samples[sample["task"]] += 1
                if progress is not None:
                    progress(done, len(planned))
            manifest = _manifest(source, window, raster, labels, layer_data, class_field, class_name, text_field,
                                 caption_field, classes, options, blocks, splits, counts, tile_counts, len(views))
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _manifest(source, window, raster, labels, layer_data, class_field, class_name, text_field, caption_field, classes,
              options, blocks, splits, counts, tile_counts, planned_tiles) -> dict:
    warnings = []
    if "val" not in splits and options.val_fraction > 0:
        warnings.append(
            f"the extent makes {len(blocks)} split block(s) of about {options.block_size} px: no validation split. "
            "Lower --block-size to hold out part of it."
        )
    for split in SPLITS:
        missing = [c for c in classes if counts[split].tiles and not counts[split].objects.get(c)]
        if missing and counts[split].tiles:
            warnings.append(f"{split} has no object of class(es): {', '.join(missing)}.")
    policy = asdict(options) | {"bands": list(options.bands) if options.bands else None,
                                "extent": list(options.extent) if options.extent else None}
    return {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "source": {
            "raster": str(Path(raster).resolve()),
            "raster_crs": crs_name(source.crs),
            "raster_size": [source.width, source.height],
            "window": [window.col_off, window.row_off, window.width, window.height],
            "labels": str(Path(labels).resolve()),
            "layer": layer_data.layer,
            "labels_crs": layer_data.crs,
            "reprojected": layer_data.reprojected,
            "class_field": class_field,
            "class_name": class_name,
            "text_field": text_field,
            "caption_field": caption_field,
        },
        "classes": list(classes),
        "policy": policy,
        "blocks": [
            {
                "index": i,
                "split": splits[i],
                "window": [b.col_off, b.row_off, b.width, b.height],
                "bounds": _map_bounds(b, source),
            }
            for i, b in enumerate(blocks)
        ],
        "counts": {
            **{split: counts[split].as_dict() for split in SPLITS},
            "labels": {
                "features": layer_data.read,
                "usable": len(layer_data.objects),
                "skipped": dict(layer_data.skipped.most_common()),
            },
            "tiles_planned": planned_tiles,
            **{k: v for k, v in sorted(tile_counts.items())},
        },
        "warnings": warnings,
    }


def _map_bounds(block: PixelWindow, source: RasterSource) -> list[float]:
    corners = raster_to_map(
        np.array([[block.col_off, block.row_off], [block.col_off + block.width, block.row_off + block.height]], dtype=float),
        source.transform,
    )
    xs, ys = sorted(corners[:, 0]), sorted(corners[:, 1])
    return [float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])]

