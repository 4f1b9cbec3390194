"""One task from request to FeatureCollection: views -> model -> parse -> map back -> merge.

A `TaskRun` holds the state of one request: the open raster, the planned views and what the
model said so far. It does not call the model itself; `run_task` drives it with an engine, in
batches. Keeping the two apart lets a server batch the views of several queued runs together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely

from backend.contract import Feature, RasterInfo, SkippedLine, TaskRequest, TaskResult, TaskStats
from backend.engine import Engine, Generation
from backend.errors import Cancelled, UserError
from backend.geometry import rotated_nms
from backend.georef import View, raster_to_map
from backend.parsing import match_class_in_text, parse_boxes
from backend.prompts import (
    CAPTION_PROMPT,
    ZOOM_SYSTEM,
    Conversation,
    classification_prompt,
    detection_prompt,
    grounding_prompt,
    single_turn,
    vqa_prompt,
    zoom_request,
)
from backend.raster import PixelWindow, RasterSource, crs_name
from backend.resolution import FACTOR, default_tile_overlap, plan_tiles, view_size
from backend.zoom import decide_zoom, zoom_chain

DEFAULT_MAX_NEW_TOKENS = {"detect": 1024, "ground": 64, "caption": 128, "classify": 32, "ask": 64}
MAX_SKIPPED_KEPT = 50

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


# Upsampling finer than this adds no detail, only tiles: a typo (0.0001 for 0.1) would plan
# billions of them.
MAX_UPSAMPLING = 8.0


def working_scale(source: RasterSource, window: PixelWindow, gsd: float | None) -> tuple[float, float]:
    """Working pixels per raster pixel (x, y): 1 at native resolution, else native GSD / gsd."""
    if gsd is None:
        return 1.0, 1.0
    size = source.pixel_size_m(window)
    if size is None:
        raise UserError("--gsd needs a georeferenced raster; this one has no georeference.", "Leave out --gsd.")
    native = min(size)
    if gsd * MAX_UPSAMPLING < native:
        raise UserError(
            f"--gsd {gsd:g} m is {native / gsd:.0f}x finer than the raster's {native:.3g} m pixels.",
            f"Choose a GSD of at least {native / MAX_UPSAMPLING:.3g} m (upsampling adds no detail), or leave out --gsd.",
        )
    return size[0] / gsd, size[1] / gsd


def plan_views(source: RasterSource, window: PixelWindow, request: TaskRequest) -> list[View]:
    """Detection: tiles at the working GSD. Other tasks: the whole extent as one view inside
    the pixel budget (a decimated read when the extent is larger)."""
    options = request.options
    sx, sy = working_scale(source, window, options.gsd)
    work_w, work_h = max(1, round(window.width * sx)), max(1, round(window.height * sy))
    px_x, px_y = window.width / work_w, window.height / work_h  # raster pixels per working pixel
    try:
        if request.task != "detect":
            out_h, out_w = view_size(work_h, work_w, options.min_pixels, options.max_pixels)
            return [View(window.col_off, window.row_off, window.width, window.height, out_w, out_h, 0)]
        # A tile is as many working pixels as the model sees: MODEL_IO's 512 px tiles reach the
        # model as 504 px, so 504 px are read 1:1. No resampling blurs small objects, the read
        # is a plain windowed read, and the model sees objects at 1.016x the training scale,
        # well inside the random rescaling it was trained with.
        budget_side = view_size(options.tile_size, options.tile_size, options.min_pixels, options.max_pixels)[0]
        tile_side = min(max(FACTOR, round(options.tile_size / FACTOR) * FACTOR), max(budget_side, FACTOR))
        overlap = options.tile_overlap if options.tile_overlap is not None else default_tile_overlap(options.tile_size)
        overlap = min(overlap, tile_side // 2)
        views = []
        for tile in plan_tiles(work_w, work_h, tile_side, overlap):
            out_h, out_w = view_size(tile.height, tile.width, options.min_pixels, options.max_pixels)
            views.append(
                View(
                    window.col_off + tile.x * px_x,
                    window.row_off + tile.y * px_y,
                    tile.width * px_x,
                    tile.height * px_y,
                    out_w,
                    out_h,
                    tile.index,
                )
            )
        return views
    except ValueError as exc:
        raise UserError(f"cannot plan views for this extent: {exc}.", "Choose a wider extent or other tile options.") from exc


class TaskRun:
    """State of one request between planning and its FeatureCollection."""

    def __init__(self, request: TaskRequest, model_id: str):
        self.request = request
        self.model_id = model_id
        self.source = RasterSource.open(request.raster, request.options.bands)
        try:
            self.window = self.source.window_for_extent(request.extent, request.extent_crs)
            self.views = plan_views(self.source, self.window, request)
            self.stretch = self.source.stretch_for(self.window)
            self.work_scale = working_scale(self.source, self.window, request.options.gsd)
        except BaseException:
            self.source.close()
            raise
        # ask/ground: the Zoom-in Chain's decision, then its trace (None for other tasks)
        self.zoom = decide_zoom(request, self.window.width * self.work_scale[0], self.window.height * self.work_scale[1])
        self.system, self.user = self._prompt()
        self.max_new_tokens = request.options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[request.task]
        self.stats = TaskStats(views=len(self.views))
        self.done = 0
        self.candidates: list[dict] = []  # detections/groundings in raster pixels, before merging
        self.texts: list[str] = []
        self.warnings = list(self.source.warnings)

    def __enter__(self) -> TaskRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.source.close()

    @property
    def total(self) -> int:
        """Views to answer; for the Zoom-in Chain, the most turns it may take."""
        return 1 + self.zoom.max_steps if self.zoom is not None and self.zoom.zoomed else len(self.views)

    def _prompt(self) -> tuple[str | None, str]:
        r = self.request
        if self.zoom is not None and self.zoom.zoomed:
            return ZOOM_SYSTEM, zoom_request(r.question if r.task == "ask" else grounding_prompt(r.expression)[1])
        if r.task == "detect":
            return detection_prompt(r.classes, r.options.box_form)
        if r.task == "ground":
            return grounding_prompt(r.expression)
        if r.task == "classify":
            return None, classification_prompt(r.classes)
        if r.task == "ask":
            return None, vqa_prompt(r.question)
        return None, CAPTION_PROMPT

    def conversation(self, view: View) -> Conversation | None:
        """Read the view's pixels; None (and counted as done) when all of them are nodata."""
        pixels = self.source.read_view(view, self.stretch)
        if pixels.valid_fraction == 0.0:
            self.stats.views_skipped_nodata += 1
            self.done += 1
            return None
        return single_turn(pixels.image, self.user, self.system)

    def _skip(self, view: View, line: str, reason: str) -> None:
        self.stats.lines_skipped += 1
        if len(self.stats.skipped) < MAX_SKIPPED_KEPT:
            self.stats.skipped.append(SkippedLine(view=view.index, line=line, reason=reason))

    def accept(self, view: View, generation: Generation) -> None:
        self.done += 1
        self.stats.visual_tokens += generation.visual_tokens
        self.stats.prompt_tokens += generation.prompt_tokens
        self.stats.new_tokens += generation.new_tokens
        task = self.request.task
        if task in ("detect", "ground"):
            classes = self.request.classes if task == "detect" else None
            answer = parse_boxes(generation.text, (view.out_width, view.out_height), classes)
            for raw, reason in answer.skipped:
                self._skip(view, raw, reason)
            boxes = answer.boxes if task == "detect" else answer.boxes[:1]  # grounding: first line
            if boxes:
                pixels = view.to_raster(np.stack([box.points for box in boxes]))
                edges = view.edge_distance(pixels.mean(axis=1)).tolist()
                for box, corners, edge in zip(boxes, pixels, edges):
                    label = box.label if task == "detect" else self.request.expression.strip()
                    self.candidates.append({"pixels": corners, "label": label, "view": view.index, "raw": box.raw, "edge": edge})
            self.stats.boxes_parsed += len(boxes)
        else:
            self.texts.append(generation.text)

    def _features(self, pixels: list[np.ndarray], properties: list[dict]) -> list[Feature]:
        """Polygons from raster-pixel corners, mapped to map coordinates in one pass."""
        if not pixels:
            return []
        rings = raster_to_map(np.stack(pixels), self.source.transform).tolist()
        return [
            Feature(geometry={"type": "Polygon", "coordinates": [ring + ring[:1]]}, properties=props)
            for ring, props in zip(rings, properties)
        ]

    def _base_properties(self, view: int, raw: str) -> dict:
        return {"task": self.request.task, "model": self.model_id, "prompt": self.user, "tile": view, "raw_text": raw}

    def _merged_detections(self) -> list[dict]:
        """Rotated NMS per class across tiles. All VLM boxes score alike, so ties go to the box
        seen farther from its tile's edge: the one the model saw whole, with context."""
        kept: list[dict] = []
        by_label: dict[str, list[dict]] = {}
        for candidate in self.candidates:
            by_label.setdefault(candidate["label"], []).append(candidate)
        for label in sorted(by_label):
            group = by_label[label]
            polygons = shapely.polygons(np.stack([c["pixels"] for c in group]))
            order = rotated_nms(polygons, [-c["edge"] for c in group], self.request.options.nms_iou)
            kept.extend(group[i] for i in sorted(order.tolist()))
        self.stats.boxes_merged_away = len(self.candidates) - len(kept)
        return kept

    def features(self) -> list[Feature]:
        """The features the answers so far give, merged; a server shows them while a job runs."""
        task = self.request.task
        if task in ("detect", "ground"):
            chosen = self._merged_detections() if task == "detect" else self.candidates[:1]
            return self._features(
                [c["pixels"] for c in chosen],
                [{**self._base_properties(c["view"], c["raw"]), "label": c["label"]} for c in chosen],
            )
        if not self.texts:
            return []
        text = self.texts[0]
        label = match_class_in_text(text, self.request.classes) if task == "classify" else None
        properties = {**self._base_properties(0, text), "label": label or "", "text": text}
        return self._features([self.views[0].corners()], [properties])

    def result(self) -> TaskResult:
        task = self.request.task
        features = self.features()
        text = self.texts[0] if self.texts and task not in ("detect", "ground") else None
        if task == "ground" and not features and self.done:
            self.warnings.append("the model's answer held no box for the expression.")
        if task == "classify" and features and not features[0].properties["label"]:
            self.warnings.append(f"the answer '{text[:80]}' names none of the given classes.")
        if self.stats.lines_skipped:
            self.warnings.append(f"{self.stats.lines_skipped} answer line(s) could not be used (see stats.skipped).")
        w = self.window
        return TaskResult(
            task=task,
            model=self.model_id,
            crs=crs_name(self.source.crs),
            features=features,
            text=text,
            raster=RasterInfo(
                path=self.source.path,
                width=self.source.width,
                height=self.source.height,
                crs=crs_name(self.source.crs),
                transform=tuple(self.source.transform)[:6],
                window=(w.col_off, w.row_off, w.width, w.height),
            ),
            stats=self.stats,
            warnings=self.warnings,
            zoom=self.zoom,
        )


def drive(
    run: TaskRun,
    engine: Engine,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TaskResult:
    """Feed a planned run to an engine in batches. Stops between batches (raising `Cancelled`,
    so nothing partial is written) when `should_stop()` turns true."""
    run.model_id = engine.model_id
    if run.zoom is not None and run.zoom.zoomed:
        return zoom_chain(run, engine, progress, should_stop)
    for start in range(0, run.total, engine.batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped after {run.done} of {run.total} views")
        batch: Sequence[View] = run.views[start : start + engine.batch_size]
        pending = [(view, run.conversation(view)) for view in batch]
        pending = [(view, conv) for view, conv in pending if conv is not None]
        if pending:
            generations = engine.generate([conv for _, conv in pending], run.max_new_tokens)
            for (view, _), generation in zip(pending, generations):
                run.accept(view, generation)
        if progress is not None:
            progress(run.done, run.total)
    return run.result()


def run_task(
    request: TaskRequest,
    engine: Engine,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TaskResult:
    with TaskRun(request, engine.model_id) as run:
        return drive(run, engine, progress, should_stop)
