"""Co-training data for the demo checkpoint: generated scenes cut into views, with conversations
for all six tasks, in the dataset layout of docs/DATASET.md (train/ and val/ from disjoint seeds).

Every view is read from a written GeoTIFF through `backend.raster` the way the task commands
read it, so the pixels a conversation shows are the pixels inference will show:

- detection tiles: 224 px windows at native resolution (64 visual tokens), MODEL_IO's polygon
  answers and DOTA labels (`training.export` cuts and answers them), some asking for a subset of
  the classes; grounding, VQA, captions and the scene class on the same tiles;
- whole-scene views: the scene read into the demo pixel budget (448 x 448), as `rscovlm caption`
  or `classify` shows a scene;
- Zoom-in Chain conversations on countryside mosaics (and towns): the overview in the budget
  under the tool-description system prompt, the `image_zoom_in` call around the object the
  question is about, the crop re-read from the raster as `backend.zoom` reads it, the answer.
  The validation split keeps its mosaics in `val/rasters/`, so `rscovlm eval run` can run the
  real chain on them.

    python -m training.demo_data --out data/demo [--scenes 300] [--zoom-scenes 60] [--val-scenes 40] [--val-zoom-scenes 12]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import shapely
from PIL import Image

from backend.atomic import staged_folder
from backend.contract import TaskOptions, TaskRequest
from backend.errors import UserError
from backend.georef import View
from backend.pipeline import TaskRun
from backend.prompts import (
    CAPTION_PROMPT,
    CHANGE_CAPTION_PROMPT,
    CHANGE_KINDS,
    CHANGE_PREFIX,
    NO_OBJECTS,
    ZOOM_FOLLOW_UP,
    ZOOM_SYSTEM,
    change_answer_label,
    change_question,
    classification_prompt,
    detection_prompt,
    grounding_prompt,
    vqa_prompt,
    zoom_request,
    zoom_tool_call,
)
from backend.raster import RasterSource
from backend.resolution import MIN_PIXELS, view_size
from backend.zoom_plan import zoom_view
from training.change_pairs import CHANGES, CHANGING, ChangePair, change_boxes, plan_change, write_pair
from training.data import VIDEO_PLACEHOLDER
from training.export import DATASET_FORMAT, DATASET_VERSION, detection_answer, dota_lines, objects_in_view
from training.labels import LabelledObject
from training.layouts import KINDS, SITE_KINDS, plan_layout
from training.questions import Seen, caption, colour_question, counted, groundings, listing, vqa_pairs
from training.synthetic import render_block, write_scene
from training.world import CLASSES, Scene

DEMO_MAX_PIXELS = 448 * 448  # the demo model's pixel budget: views of at most 256 visual tokens
TILE = 224  # detection tile side at the world's GSD: 64 visual tokens
MAX_TILE_OBJECTS = 14  # denser tiles make answers longer than the demo's training budget allows
SCENE_KINDS = KINDS + ("town",)
ZOOM_CLASSES = tuple(SITE_KINDS)  # classes a zoom question may be about (one object each)
VAL_SEED_OFFSET = 1_000_000  # validation scenes: seeds training never uses

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoDataPlan:
    scenes: int = 480  # scenes of one kind (and towns) cut into tiles, per training split
    tiles_per_scene: int = 20
    zoom_scenes: int = 100  # countryside mosaics for the Zoom-in Chain
    val_scenes: int = 30
    val_zoom_scenes: int = 12
    seed: int = 0
    scene_sizes: tuple[int, ...] = (768, 1024, 1280)  # sides of single-kind scenes, px
    town_size: int = 1536
    mosaic_sizes: tuple[int, int] = (3072, 12288)  # training mosaics: sides log-uniform in this range
    val_mosaic_sizes: tuple[int, int] = (10240, 12288)  # validation mosaics: the large scenes of the zoom bar
    ground_share: float = 0.5  # chance a tile also gets a grounding sample
    vqa_share: float = 0.2
    caption_share: float = 0.06
    classify_share: float = 0.1
    subset_share: float = 0.0  # detection samples asking for a random subset of the classes (RSCoVLM always listed all)
    empty_keep: float = 0.3  # share of empty tiles kept
    # Sparse views: at most this many objects per tile (a uniform draw from 1 to it), the tile
    # drawn again with only those; 0: every object the tile holds.
    max_objects: int = 0
    # Detection tiles show a window 1/view_zoom of the tile's side, enlarged to the tile: each
    # object spans view_zoom times the pixels (and visual tokens) a side, as a checkpoint that
    # declares gsd = the world's / view_zoom would see it. 1: the world's own GSD.
    view_zoom: float = 1.0
    whole_views: bool = True  # the whole scene in the budget, with grounding, VQA, caption and class
    change_scenes: int = 120  # pairs of a scene at two dates (training.change_pairs), per training split
    val_change_scenes: int = 12
    change_tiles_per_scene: int = 12


def _objects(scene: Scene) -> tuple[list[LabelledObject], shapely.STRtree, dict[int, str]]:
    """The scene's objects as labelled polygons (raster pixels) and their colours by identity."""
    labelled = [LabelledObject(shapely.Polygon(o.box()), o.label, "", "") for o in scene.objects]
    colours = {id(item): o.colour_name for item, o in zip(labelled, scene.objects)}
    return labelled, shapely.STRtree([o.geometry for o in labelled]), colours


class SplitWriter:
    """Images and DOTA labels of one split, written as they come; the conversations and counts
    of one scene, kept for the split's conversations.jsonl."""

    def __init__(self, folder: Path, split: str):
        self.split, self.folder = split, folder
        self.records: list[dict] = []
        self.samples: Counter = Counter()
        self.objects: Counter = Counter()
        self.images = 0

    def image(self, name: str, pixels: np.ndarray) -> str:
        Image.fromarray(pixels).save(self.folder / "images" / f"{name}.png", compress_level=3)
        self.images += 1
        return f"images/{name}.png"

    def labels(self, name: str, text: str) -> None:
        (self.folder / "labelTxt" / f"{name}.txt").write_text(text)

    def sample(self, name: str, task: str, images: list[str], sizes: list[tuple[int, int]], messages: list[dict], **extra) -> None:
        """A record of docs/DATASET.md; `extra` may hold `videos` (frame files per <video>)."""
        record = {
            "id": f"{self.split}/{name}",
            "task": task,
            "images": images,
            "image_size": [list(s) for s in sizes] if len(sizes) > 1 else list(sizes[0]),
            "resized_size": [list(s) for s in sizes] if len(sizes) > 1 else list(sizes[0]),
            "messages": messages,
            **extra,
        }
        self.records.append(record)
        self.samples[task] += 1


def _seen(shown, colours: dict[int, str]) -> list[Seen]:
    return [Seen(t.obj.label, colours[id(t.obj)], t.points, t.cut) for t in shown]


def _view_samples(writer: SplitWriter, name: str, image: str, size: tuple[int, int], seen: list[Seen], kind: str | None,
                  plan: DemoDataPlan, rng: np.random.Generator, always: bool = False) -> None:
    """Grounding, VQA, caption and classification samples on one stored view; `always` gives
    one of each (whole-scene views), otherwise each comes with its share."""
    found = groundings(seen)
    if found and (always or rng.random() < plan.ground_share):
        expression, target = found[int(rng.integers(len(found)))]
        system, user = grounding_prompt(expression)
        answer = ",".join(str(v) for v in target.hbox()) + f" {expression}"
        writer.sample(f"{name}/ground", "ground", [image], [size], [
            {"role": "system", "content": system}, {"role": "user", "content": "<image>" + user},
            {"role": "assistant", "content": answer}])
    if always or rng.random() < plan.vqa_share:
        pairs = vqa_pairs(seen, kind, CLASSES, rng)
        question, answer = pairs[int(rng.integers(len(pairs)))]
        writer.sample(f"{name}/vqa", "vqa", [image], [size], [
            {"role": "user", "content": "<image>" + vqa_prompt(question)}, {"role": "assistant", "content": answer}])
    if always or rng.random() < plan.caption_share:
        writer.sample(f"{name}/caption", "caption", [image], [size], [
            {"role": "user", "content": "<image>" + CAPTION_PROMPT}, {"role": "assistant", "content": caption(seen, kind, rng)}])
    if kind is not None and (always or rng.random() < plan.classify_share):
        writer.sample(f"{name}/classify", "classify", [image], [size], [
            {"role": "user", "content": "<image>" + classification_prompt(KINDS)}, {"role": "assistant", "content": kind}])


def _request(task: str, raster: Path, **fields) -> TaskRequest:
    return TaskRequest(task=task, raster=str(raster), options=TaskOptions(max_pixels=DEMO_MAX_PIXELS, zoom="on"), **fields)


def _sparse(scene: Scene, labelled: list[LabelledObject], shown: list, x: int, y: int, window: int, plan: DemoDataPlan,
            rng: np.random.Generator) -> tuple[list, np.ndarray | None]:
    """A sparse view: some of the objects a tile shows, and the tile drawn with only those
    (None: the tile as it is), its window enlarged to the tile as read_view enlarges it."""
    keep = int(rng.integers(1, plan.max_objects + 1))
    if not shown or len(shown) <= keep:
        return shown, None
    kept = sorted(rng.choice(len(shown), size=keep, replace=False).tolist())
    shown = [shown[k] for k in kept]
    index = {id(item): i for i, item in enumerate(labelled)}
    objects = [scene.objects[index[id(item.obj)]] for item in shown]
    block = render_block(replace(scene, objects=tuple(objects)), x, y, window, window, objects)
    if window == TILE:
        return shown, block
    return shown, np.asarray(Image.fromarray(block).resize((TILE, TILE), Image.Resampling.BILINEAR))


def tile_scene(writer: SplitWriter, prefix: str, scene: Scene, raster: Path, plan: DemoDataPlan, rng: np.random.Generator) -> None:
    """Detection tiles at random places (with the other tasks on some), then the whole scene
    in the pixel budget."""
    labelled, tree, colours = _objects(scene)
    window = round(TILE / plan.view_zoom)
    with TaskRun(_request("caption", raster), "data") as run:
        whole = run.views[0]
        kept = 0
        for t in range(plan.tiles_per_scene * 3):
            if kept == plan.tiles_per_scene:
                break
            x, y = (int(rng.integers(0, max(1, n - window + 1))) for n in (scene.width, scene.height))
            view = View(x, y, window, window, TILE, TILE, t)
            shown, _ = objects_in_view(view, labelled, tree, 0.5)
            if len(shown) > MAX_TILE_OBJECTS or (not shown and rng.random() >= plan.empty_keep):
                continue
            name = f"{prefix}t{t:02d}"
            kept += 1
            drawn = None
            if plan.max_objects:
                shown, drawn = _sparse(scene, labelled, shown, x, y, window, plan, rng)
            image = writer.image(name, run.source.read_view(view, run.stretch).image if drawn is None else drawn)
            if rng.random() < plan.subset_share:
                asked = sorted(rng.choice(CLASSES, size=int(rng.integers(1, len(CLASSES))), replace=False).tolist())
            else:
                asked = list(CLASSES)
            mine = [item for item in shown if item.obj.label in asked]
            writer.labels(name, dota_lines(shown))
            writer.objects.update(item.obj.label for item in shown)
            system, user = detection_prompt(asked)
            writer.sample(f"{name}/detect", "detect", [image], [(TILE, TILE)], [
                {"role": "system", "content": system}, {"role": "user", "content": "<image>" + user},
                {"role": "assistant", "content": detection_answer(mine)}])
            zone = scene.zone_of(x, y, x + window, y + window)
            _view_samples(writer, name, image, (TILE, TILE), _seen(shown, colours), zone.kind if zone else None, plan, rng)
        if not plan.whole_views:
            return
        shown, _ = objects_in_view(whole, labelled, tree, 0.5)
        name = f"{prefix}whole"
        image = writer.image(name, run.source.read_view(whole, run.stretch).image)
        kind = scene.zones[0].kind if len(scene.zones) == 1 else None
        _view_samples(writer, name, image, (whole.out_width, whole.out_height), _seen(shown, colours), kind, plan, rng, always=True)


def zoom_scene(writer: SplitWriter, prefix: str, scene: Scene, raster: Path, rng: np.random.Generator,
               variants: int, keep_raster: str | None = None) -> None:
    """Zoom-in Chain conversations about every object that is the only one of its class in the
    scene (`variants` windows around each)."""
    counts = Counter(o.label for o in scene.objects)
    targets = [o for o in scene.objects if counts[o.label] == 1 and o.label in ZOOM_CLASSES]
    if not targets:
        return
    with TaskRun(_request("ask", raster, question=colour_question(targets[0].label)), "data") as run:
        overview = run.views[0]
        overview_image = writer.image(f"{prefix}overview", run.source.read_view(overview, run.stretch).image)
        size = (overview.out_width, overview.out_height)
        for k, obj in enumerate(targets):
            question = colour_question(obj.label)
            for variant in range(variants):
                # A window near the largest the budget shows at native resolution: the box the
                # model must draw on the overview is then as large as it can be.
                side = rng.uniform(0.8, 1.0) * math.sqrt(DEMO_MAX_PIXELS)
                cx = obj.cx + rng.uniform(-0.15, 0.15) * side
                cy = obj.cy + rng.uniform(-0.15, 0.15) * side
                corners = overview.from_raster(np.array([[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]]))
                box = [int(np.clip(round(v), 0, limit)) for v, limit in zip(corners.reshape(-1), size * 2)]
                crop = zoom_view(overview, tuple(box), run.window, run.work_scale, MIN_PIXELS, DEMO_MAX_PIXELS, 1)
                name = f"{prefix}q{k}v{variant}"
                crop_image = writer.image(name, run.source.read_view(crop, run.stretch).image)
                extra = {"raster": keep_raster} if keep_raster else {}
                writer.sample(name, "zoom", [overview_image, crop_image], [size, (crop.out_width, crop.out_height)], [
                    {"role": "system", "content": ZOOM_SYSTEM},
                    {"role": "user", "content": "<image>" + zoom_request(question)},
                    {"role": "assistant", "content": zoom_tool_call(box)},
                    {"role": "user", "content": "<image>" + ZOOM_FOLLOW_UP},
                    {"role": "assistant", "content": obj.colour_name},
                ], **extra)


def _change_answer(boxes: list, label: str, kind: str, view: View, question: str) -> str:
    """The boxes of one class's changes of one kind a view shows, as RSCoVLM writes TEOChat's
    box answers (`x1,y1,x2,y2 <label>`, by position), or 'There are none.'."""
    footprint = shapely.box(view.col_off, view.row_off, view.col_off + view.width, view.row_off + view.height)
    lines = []
    for corners, name, change in boxes:
        if name != label or (kind != "changed" and change != kind):
            continue
        shape = shapely.Polygon(corners)
        if shape.intersection(footprint).area < 0.5 * shape.area:
            continue
        (x0, y0), (x1, y1) = np.clip(view.from_raster(np.array([corners.min(axis=0), corners.max(axis=0)])), 0, [view.out_width, view.out_height])
        lines.append((int(round(y0)), int(round(x0)), f"{int(round(x0))},{int(round(y0))},{int(round(x1))},{int(round(y1))}"))
    if not lines:
        return NO_OBJECTS
    return "\n".join(f"{coords} {change_answer_label(question)}" for _, _, coords in sorted(lines))


def change_caption(pair_changes: list) -> str:
    """What changed, counted by class: '2 buildings appeared and a small vehicle disappeared.'"""
    parts = []
    for change in CHANGES:
        counts = Counter(label for _, label, kind in pair_changes if kind == change)
        parts += [f"{counted(label, n)} {change}" for label, n in sorted(counts.items())]
    return (listing(parts) + ".").capitalize() if parts else "Nothing changed."


def change_scene(writer: SplitWriter, prefix: str, pair: ChangePair, before: Path, after: Path, plan: DemoDataPlan,
                 rng: np.random.Generator) -> None:
    """Tiles of the pair as `rscovlm change` reads them (the later image warped onto the
    earlier grid), each asked about one class and kind of change, and the whole pair captioned."""
    boxes = change_boxes(pair)
    with RasterSource.open(before) as first, RasterSource.aligned(after, None, first) as second:
        whole = first.window_for_extent(None)
        stretch, later = first.stretch_for(whole), second.stretch_for(whole)
        centres = [corners.mean(axis=0) for corners, _, _ in boxes]
        for t in range(plan.change_tiles_per_scene):
            if centres and rng.random() < 0.7:  # mostly tiles where something changed
                cx, cy = centres[int(rng.integers(len(centres)))] + rng.uniform(-0.35, 0.35, 2) * TILE
                x, y = (int(np.clip(v - TILE / 2, 0, n - TILE)) for v, n in ((cx, pair.before.width), (cy, pair.before.height)))
            else:
                x, y = (int(rng.integers(0, max(1, n - TILE + 1))) for n in (pair.before.width, pair.before.height))
            view = View(x, y, TILE, TILE, TILE, TILE, t)
            shown = [b for b in boxes if shapely.Polygon(b[0]).intersects(shapely.box(x, y, x + TILE, y + TILE))]
            if shown and rng.random() < 0.8:  # a change the tile shows, asked as its kind or as 'changed'
                _, label, change = shown[int(rng.integers(len(shown)))]
                kind = (change, "changed")[int(rng.integers(2))]
            else:
                label, kind = str(rng.choice(sorted(CHANGING))), CHANGE_KINDS[int(rng.integers(len(CHANGE_KINDS)))]
            question = change_question(label, kind)
            name = f"{prefix}c{t:02d}"
            frames = [writer.image(f"{name}a", first.read_view(view, stretch).image), writer.image(f"{name}b", second.read_view(view, later).image)]
            writer.sample(name, "change", [], [(TILE, TILE)], [
                {"role": "user", "content": CHANGE_PREFIX + VIDEO_PLACEHOLDER + question},
                {"role": "assistant", "content": _change_answer(boxes, label, kind, view, question)}], videos=[frames],
                change={"label": label, "kind": kind})
        out_h, out_w = view_size(pair.before.height, pair.before.width, MIN_PIXELS, DEMO_MAX_PIXELS)
        overview = View(0, 0, pair.before.width, pair.before.height, out_w, out_h, 0)
        frames = [writer.image(f"{prefix}ca", first.read_view(overview, stretch).image), writer.image(f"{prefix}cb", second.read_view(overview, later).image)]
        writer.sample(f"{prefix}cap", "change_caption", [], [(out_w, out_h)], [
            {"role": "user", "content": CHANGE_PREFIX + VIDEO_PLACEHOLDER + CHANGE_CAPTION_PROMPT},
            {"role": "assistant", "content": change_caption(boxes)}], videos=[frames])


def _mosaic_size(rng: np.random.Generator, sizes: tuple[int, int]) -> int:
    return int(round(math.exp(rng.uniform(math.log(sizes[0]), math.log(sizes[1]))) / 64) * 64)


@dataclass(frozen=True)
class SceneJob:
    """One scene of a split: its seed says everything about it, so jobs run in any order."""

    folder: str  # the split folder
    split: str
    index: int  # scene number within the split
    seed: int
    kind: str  # "tiles": a scene cut into tiles; "mosaic": countryside for the Zoom-in Chain; "change": a pair of dates
    plan: DemoDataPlan


def run_job(job: SceneJob) -> SplitWriter:
    """Generate one scene, cut its views into the split folder; the writer holds its
    conversations. Runs in a worker process."""
    plan, folder, val = job.plan, Path(job.folder), job.split == "val"
    rng = np.random.default_rng([job.seed, 7])
    writer = SplitWriter(folder, job.split)
    with tempfile.TemporaryDirectory(prefix="demo-scene-") as scratch:
        if job.kind == "change":
            kind = SCENE_KINDS[job.index % len(SCENE_KINDS)]
            size = plan.town_size if kind == "town" else int(rng.choice(plan.scene_sizes))
            pair = plan_change(plan_layout(kind, size, size, seed=job.seed), job.seed, share=0.25)
            written = write_pair(pair, Path(scratch) / "before.tif", Path(scratch) / "after.tif")
            change_scene(writer, f"p{job.index}", pair, written["before"], written["after"], plan, rng)
            return writer
        if job.kind == "tiles":
            kind = SCENE_KINDS[job.index % len(SCENE_KINDS)]
            size = plan.town_size if kind == "town" else int(rng.choice(plan.scene_sizes))
            scene = plan_layout(kind, size, size, seed=job.seed)
            raster = write_scene(scene, Path(scratch) / "scene.tif")
            tile_scene(writer, f"s{job.index}", scene, raster, plan, rng)
            if kind == "town" and not val:
                zoom_scene(writer, f"s{job.index}z", scene, raster, rng, variants=2)
            return writer
        size = _mosaic_size(rng, plan.val_mosaic_sizes if val else plan.mosaic_sizes)
        scene = plan_layout("countryside", size, size, seed=job.seed)
        name = f"m{job.index}"
        if val:  # kept: `rscovlm eval run` runs the chain on the mosaic itself
            raster = write_scene(scene, folder / "rasters" / f"{name}.tif")
            zoom_scene(writer, name, scene, raster, rng, variants=1, keep_raster=f"rasters/{name}.tif")
        else:
            raster = write_scene(scene, Path(scratch) / "mosaic.tif")
            zoom_scene(writer, name, scene, raster, rng, variants=2)
    return writer


def split_jobs(root: Path, split: str, plan: DemoDataPlan) -> list[SceneJob]:
    val = split == "val"
    base = plan.seed + (VAL_SEED_OFFSET if val else 0)
    scenes = plan.val_scenes if val else plan.scenes
    mosaics = plan.val_zoom_scenes if val else plan.zoom_scenes
    folder = str(root / split)
    changes = plan.val_change_scenes if val else plan.change_scenes
    return ([SceneJob(folder, split, i, base + i, "tiles", plan) for i in range(scenes)]
            + [SceneJob(folder, split, i, base + scenes + i, "mosaic", plan) for i in range(mosaics)]
            + [SceneJob(folder, split, i, base + scenes + mosaics + i, "change", plan) for i in range(changes)])


def build_split(root: Path, split: str, plan: DemoDataPlan, workers: int = 1, progress: ProgressCallback | None = None) -> dict:
    """Every scene of a split (in `workers` processes), then its conversations.jsonl in scene order."""
    folder = root / split
    for sub in ("images", "labelTxt", "rasters"):
        (folder / sub).mkdir(parents=True)
    jobs = split_jobs(root, split, plan)
    totals = SplitWriter(folder, split)
    with open(folder / "conversations.jsonl", "w", encoding="utf-8") as handle:
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(run_job, jobs) if pool is not None else map(run_job, jobs)
            for done, writer in enumerate(results, start=1):
                handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in writer.records)
                totals.samples.update(writer.samples)
                totals.objects.update(writer.objects)
                totals.images += writer.images
                if progress is not None:
                    progress(done, len(jobs))
        finally:
            if pool is not None:
                pool.terminate()
    if not any((folder / "rasters").iterdir()):
        (folder / "rasters").rmdir()
    return {"images": totals.images, "samples": dict(sorted(totals.samples.items())), "objects": dict(sorted(totals.objects.items())),
            "seeds": [jobs[0].seed, jobs[-1].seed + 1] if jobs else []}


def check_demo_data(folder: Path, plan: DemoDataPlan) -> None:
    """A dataset kept from an earlier run may only be used for the plan it was made with (a plan
    field added since counts at its default, which is what the data was made with then)."""
    made = json.loads(json.dumps(asdict(DemoDataPlan()))) | (json.loads((folder / "manifest.json").read_text()).get("plan") or {})
    if made != json.loads(json.dumps(asdict(plan))):
        raise UserError(f"{folder} was generated with another plan.", "Delete it (or give another --data) to generate it again.")


def build_demo_data(out: str | Path, plan: DemoDataPlan = DemoDataPlan(), progress: ProgressCallback | None = None, workers: int = 1) -> dict:
    """Write the dataset folder (atomically) and return its manifest. The content does not
    depend on `workers`."""
    out = Path(out)
    with staged_folder(out) as staging:
        counts = {}
        for split in ("train", "val"):
            counts[split] = build_split(staging, split, plan, workers, progress)
        manifest = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "source": "training.demo_data (synthetic world, training.layouts)",
            "classes": sorted(CLASSES),
            "scene_classes": list(KINDS),
            "pixel_budget": {"min_pixels": MIN_PIXELS, "max_pixels": DEMO_MAX_PIXELS},
            "tile_size": TILE,
            "plan": asdict(plan),
            "counts": counts,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DemoDataPlan()
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write (replaced when it exists)")
    for field in ("scenes", "tiles_per_scene", "zoom_scenes", "val_scenes", "val_zoom_scenes", "seed"):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(defaults, field))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scene-generating processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    plan = DemoDataPlan(**{f: getattr(args, f) for f in ("scenes", "tiles_per_scene", "zoom_scenes", "val_scenes", "val_zoom_scenes", "seed")})
    from tqdm import tqdm

    with tqdm(unit="scene", desc="scenes", file=sys.stderr, disable=True if args.no_progress else None) as bar:

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        manifest = build_demo_data(args.out, plan, show, max(1, args.workers))
    for split in ("train", "val"):
        c = manifest["counts"][split]
        print(f"{split}: {c['images']} images; samples: " + ", ".join(f"{k} {v}" for k, v in c["samples"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
