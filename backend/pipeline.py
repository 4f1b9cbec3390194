"""One task from request to FeatureCollection: views -> model -> parse -> map back -> merge.

A `TaskRun` holds the state of one request: the open raster, the planned views and what the
model said so far. It does not call the model itself; `backend.drive` drives it with an engine,
in batches. Keeping the two apart lets a server batch the views of several queued runs together.

A run asks the model the way it was trained (its `ModelDefaults`): options the request leaves
unset are the model's, detection prompts list every class the model was trained on (and keep
the requested ones from the answer), and detection decodes with repetition penalty 1.0.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from backend.contract import DEFAULT_MAX_NEW_TOKENS, Feature, RasterInfo, SkippedLine, TaskRequest, TaskResult, TaskStats
from backend.engine import Generation
from backend.errors import UserError
from backend.geometry import rotated_nms
from backend.georef import View, raster_to_map
from backend.model_defaults import ModelDefaults, with_model_defaults
from backend.parsing import match_choice, match_class_in_text, parse_boxes
from backend.prompts import (
    CAPTION_PROMPT,
    ZOOM_SYSTEM,
    Conversation,
    classification_prompt,
    detection_categories,
    detection_prompt,
    grounding_prompt,
    lettered_choices,
    multiple_choice_prompt,
    normalise_category,
    region_caption_prompt,
    single_turn,
    vqa_prompt,
    zoom_request,
)
from backend.raster import PixelWindow, RasterSource, crs_name
from backend.resolution import FACTOR, default_tile_overlap, plan_tiles, view_size
from backend.zoom_plan import decide_zoom

MAX_SKIPPED_KEPT = 50
# RSCoVLM's detection was measured with vLLM at repetition penalty 1.0 (MODEL_IO); a
# checkpoint's generation config may carry another (Qwen2.5-VL-Instruct's: 1.05).
DETECTION_REPETITION_PENALTY = 1.0
# Upsampling finer than this adds no detail, only tiles: a typo (0.0001 for 0.1) would plan
# billions of them.
MAX_UPSAMPLING = 8.0
# A region to describe is shown with context: a window of at least the detection tile and
# twice the region's longest side, centred on it.
REGION_CONTEXT = 2.0


def gsd_problem(size: tuple[float, float] | None, gsd: float) -> UserError | None:
    """Why a raster of pixels `size` metres (None: no georeference) cannot be read at `gsd`
    (upsampled past MAX_UPSAMPLING); None when it can."""
    if size is None:
        return UserError("--gsd needs a georeferenced raster; this one has no georeference.", "Leave out --gsd.")
    native = min(size)
    if gsd * MAX_UPSAMPLING < native:
        return UserError(
            f"--gsd {gsd:g} m is {native / gsd:.0f}x finer than the raster's {native:.3g} m pixels.",
            f"Choose a GSD of at least {native / MAX_UPSAMPLING:.3g} m (upsampling adds no detail), or leave out --gsd.",
        )
    return None


def working_scale(source: RasterSource, window: PixelWindow, gsd: float | None) -> tuple[float, float]:
    """Working pixels per raster pixel (x, y): 1 at native resolution, else native GSD / gsd."""
    if gsd is None:
        return 1.0, 1.0
    size = source.pixel_size_m(window)
    problem = gsd_problem(size, gsd)
    if problem is not None:
        raise problem
    return size[0] / gsd, size[1] / gsd


TILED_TASKS = ("detect", "change")


def plan_views(source: RasterSource, window: PixelWindow, request: TaskRequest) -> list[View]:
    """Detection (and change detection): tiles at the working GSD. Describe: a window around each
    region. Other tasks: the whole extent as one view inside the pixel budget (a decimated read
    when it is larger)."""
    options = request.options
    sx, sy = working_scale(source, window, options.gsd)
    work_w, work_h = max(1, round(window.width * sx)), max(1, round(window.height * sy))
    px_x, px_y = window.width / work_w, window.height / work_h  # raster pixels per working pixel
    try:
        if request.task == "describe":
            return [region_view(source, request, box, (sx, sy), i) for i, box in enumerate(region_boxes(source, request))]
        if request.task not in TILED_TASKS:
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


def region_boxes(source: RasterSource, request: TaskRequest) -> list[tuple[float, float, float, float]]:
    """Each region to describe as a raster-pixel box (col0, row0, col1, row1), clipped to the raster."""
    boxes = []
    for number, region in enumerate(request.regions or []):
        c0, r0, c1, r1 = source.pixel_box(region, request.extent_crs)
        c0, r0, c1, r1 = max(c0, 0.0), max(r0, 0.0), min(c1, float(source.width)), min(r1, float(source.height))
        if c1 <= c0 or r1 <= r0:
            raise UserError(f"region {number + 1} ({', '.join(f'{v:g}' for v in region)}) lies outside the raster.",
                            "Describe features that lie on the raster, or give extent_crs when they are in another CRS.")
        boxes.append((c0, r0, c1, r1))
    return boxes


def region_view(source: RasterSource, request: TaskRequest, box: tuple[float, float, float, float], scale: tuple[float, float], index: int) -> View:
    """A window around a region with context, kept on the raster, inside the pixel budget."""
    options = request.options
    c0, r0, c1, r1 = box
    side = max(options.tile_size / max(scale), REGION_CONTEXT * max(c1 - c0, r1 - r0))  # raster pixels
    width, height = min(side, float(source.width)), min(side, float(source.height))
    col = min(max(0.0, (c0 + c1 - width) / 2), source.width - width)
    row = min(max(0.0, (r0 + r1 - height) / 2), source.height - height)
    col, row = math.floor(col), math.floor(row)
    width, height = min(math.ceil(width), source.width - col), min(math.ceil(height), source.height - row)
    out_h, out_w = view_size(max(1, round(height * scale[1])), max(1, round(width * scale[0])), options.min_pixels, options.max_pixels)
    return View(col, row, width, height, out_w, out_h, index)


class TaskRun:
    """State of one request between planning and its FeatureCollection."""

    def __init__(self, request: TaskRequest, model_id: str, defaults: ModelDefaults | None = None):
        defaults = defaults or ModelDefaults()
        user_gsd = "gsd" in request.options.model_fields_set
        self.request = request = with_model_defaults(request, defaults)
        self.model_id = model_id
        self.source = RasterSource.open(request.raster, request.options.bands)
        notes = []
        try:
            self.window = self._window()
            # A GSD the model declares, unlike the user's, gives way on a raster that cannot take it.
            problem = None if user_gsd or request.options.gsd is None else gsd_problem(self.source.pixel_size_m(self.window), request.options.gsd)
            if problem is not None:
                notes.append(f"the model reads {request.task} at {request.options.gsd:g} m per pixel, as it was trained, but this raster "
                             f"cannot be read at it ({problem.problem}): read at its own pixels.")
                self.request = request = request.model_copy(update={"options": request.options.model_copy(update={"gsd": None})})
            self.views = plan_views(self.source, self.window, request)
            self.stretch = self.source.stretch_for(self.window)
            self.work_scale = working_scale(self.source, self.window, request.options.gsd)
            # On a rotated geotransform the window is the extent's pixel bounding box: results are clipped back to the extent.
            self.clip = shapely.box(*self.source.map_bounds(request.extent, request.extent_crs)) if request.extent and self.source.rotated else None
        except BaseException:
            self.close()
            raise
        self.warnings = list(self.source.warnings) + notes + trained_range_warnings(request, defaults)
        # detection: the prompt lists every class the model was trained on, then any other requested
        self.asked: dict[str, str] = {normalise_category(c): c for c in request.classes or []} if request.task == "detect" else {}
        self.prompt_classes = detection_categories(list(defaults.classes) + list(request.classes or [])) if request.task == "detect" else []
        untrained = [c for key, c in self.asked.items() if key not in detection_categories(defaults.classes)]
        if untrained:
            self.warnings.append(
                f"the model was not trained to detect {', '.join(repr(c) for c in untrained)}: added to the prompt beside its own "
                f"classes ({', '.join(defaults.classes)}), but expect little."
            )
        self.zoom = decide_zoom(request, self.window.width * self.work_scale[0], self.window.height * self.work_scale[1])
        self.system, self.user = self._prompt()
        self.max_new_tokens = request.options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[request.task]
        self.repetition_penalty = DETECTION_REPETITION_PENALTY if request.task in ("detect", "change") else None
        self.stats = TaskStats(views=len(self.views))
        self.done = 0
        self.candidates: list[dict] = []  # detections/groundings in raster pixels, before merging
        self.texts: dict[int, str] = {}  # text answers by view
        if request.task != "ask" and request.options.zoom == "on":
            self.warnings.append(f"the Zoom-in Chain was trained on questions only: {request.task} is answered on the whole view.")
        if request.task == "ground" and self._budget_ratio() > request.options.zoom_factor:
            self.warnings.append(
                f"the extent is {self._budget_ratio():.0f}x the pixel budget, so the model sees it at 1/{math.sqrt(self._budget_ratio()):.1f} "
                "of its resolution (grounding was not trained with the Zoom-in Chain): narrow --extent around the object if it is small in it."
            )

    def __enter__(self) -> TaskRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _window(self) -> PixelWindow:
        """The raster pixels the request is about."""
        return self.source.window_for_extent(self.request.extent, self.request.extent_crs)

    def close(self) -> None:
        self.source.close()

    @property
    def total(self) -> int:
        """Views to answer; for the Zoom-in Chain, the most turns it may take."""
        return 1 + self.zoom.max_steps if self.zoom is not None and self.zoom.zoomed else len(self.views)

    def _budget_ratio(self) -> float:
        return self.window.width * self.work_scale[0] * self.window.height * self.work_scale[1] / self.request.options.max_pixels

    def _prompt(self) -> tuple[str | None, str]:
        r = self.request
        if self.zoom is not None and self.zoom.zoomed:
            return ZOOM_SYSTEM, zoom_request(r.question)
        if r.task == "detect":
            return detection_prompt(self.prompt_classes, r.options.box_form or "polygon")
        if r.task == "ground":
            return grounding_prompt(r.expression, r.options.box_form or "hbox")
        if r.task == "classify":
            return None, classification_prompt(r.classes)
        if r.task == "ask":
            return None, multiple_choice_prompt(r.question, r.choices) if r.choices else vqa_prompt(r.question)
        if r.task == "describe":
            return None, region_caption_prompt([0, 0, 0, 0])  # each view asks about its own region: view_prompt
        return None, CAPTION_PROMPT

    def view_prompt(self, view: View) -> str:
        """The user text of one view: a region to describe names its box in the view's pixels."""
        if self.request.task != "describe":
            return self.user
        c0, r0, c1, r1 = region_boxes(self.source, self.request)[view.index]
        (x0, y0), (x1, y1) = view.from_raster(np.array([[c0, r0], [c1, r1]], dtype=float))
        return region_caption_prompt([max(0, math.floor(x0)), max(0, math.floor(y0)), min(view.out_width, math.ceil(x1)), min(view.out_height, math.ceil(y1))])

    def conversation(self, view: View) -> Conversation | None:
        """Read the view's pixels; None (and counted as done) when all of them are nodata."""
        pixels = self.source.read_view(view, self.stretch)
        if pixels.valid_fraction == 0.0:
            self.stats.views_skipped_nodata += 1
            self.done += 1
            return None
        return single_turn(pixels.image, self.view_prompt(view), self.system)

    def _skip(self, view: View, line: str, reason: str) -> None:
        self.stats.lines_skipped += 1
        if len(self.stats.skipped) < MAX_SKIPPED_KEPT:
            self.stats.skipped.append(SkippedLine(view=view.index, line=line, reason=reason))

    def accept(self, view: View, generation: Generation) -> None:
        self.done += 1
        self.stats.visual_tokens += generation.visual_tokens
        self.stats.prompt_tokens += generation.prompt_tokens
        self.stats.new_tokens += generation.new_tokens
        self.stats.views_truncated += not generation.finished
        task = self.request.task
        if task not in ("detect", "ground"):
            self.texts[view.index if task == "describe" else 0] = generation.text  # a zoomed answer is the extent's
            return
        answer = parse_boxes(generation.text, (view.out_width, view.out_height), self.prompt_classes if task == "detect" else None)
        for raw, reason in answer.skipped:
            self._skip(view, raw, reason)
        if task == "detect":
            boxes = [b for b in answer.boxes if normalise_category(b.label) in self.asked]
            self.stats.boxes_not_requested += len(answer.boxes) - len(boxes)
        else:
            boxes = answer.boxes[:1]  # grounding: the first box the answer gives
        if boxes:
            pixels = view.to_raster(np.stack([box.points for box in boxes]))
            edges = view.edge_distance(pixels.mean(axis=1)).tolist()
            for box, corners, edge in zip(boxes, pixels, edges):
                label = self.asked[normalise_category(box.label)] if task == "detect" else self.request.expression.strip()
                self.candidates.append({"pixels": corners, "label": label, "view": view.index, "raw": box.raw, "edge": edge})
        self.stats.boxes_parsed += len(boxes)

    def _features(self, pixels: list[np.ndarray], properties: list[dict]) -> list[Feature]:
        """Polygons from raster-pixel corners, mapped to map coordinates in one pass (and clipped
        to the extent when the raster's geotransform is rotated)."""
        if not pixels:
            return []
        rings = raster_to_map(np.stack(pixels), self.source.transform)
        if self.clip is None:
            return [Feature(geometry={"type": "Polygon", "coordinates": [ring + ring[:1]]}, properties=props)
                    for ring, props in zip(rings.tolist(), properties)]
        features = []
        for polygon, props in zip(shapely.intersection(shapely.polygons(rings), self.clip), properties):
            if polygon.geom_type == "Polygon" and not polygon.is_empty:
                features.append(Feature(geometry={"type": "Polygon", "coordinates": [np.asarray(polygon.exterior.coords).tolist()]}, properties=props))
        return features

    def _base_properties(self, view: int, raw: str) -> dict:
        return {"task": self.request.task, "model": self.model_id, "prompt": self.user, "tile": view, "raw_text": raw}

    def _merged_detections(self) -> list[dict]:
        """Rotated NMS per class across tiles. All VLM boxes score alike, so ties go to the box
        seen farther from its tile's edge: the one the model saw whole, with context."""
        kept: list[dict] = []
        by_label: dict[str, list[dict]] = {}
        for candidate in self.candidates:  # change detection merges per class and kind of change
            by_label.setdefault(candidate.get("group", candidate["label"]), []).append(candidate)
        for label in sorted(by_label):
            group = by_label[label]
            polygons = shapely.polygons(np.stack([c["pixels"] for c in group]))
            order = rotated_nms(polygons, [-c["edge"] for c in group], self.request.options.nms_iou)
            kept.extend(group[i] for i in sorted(order.tolist()))
        self.stats.boxes_merged_away = len(self.candidates) - len(kept)
        return kept

    def text(self) -> str | None:
        """The text answer of a caption, class or question (a chosen option's text for a
        multiple-choice question)."""
        text = self.texts.get(0)
        if text is not None and self.request.task == "ask" and self.request.choices:
            return match_choice(text, lettered_choices(self.request.choices)) or text
        return text

    def features(self) -> list[Feature]:
        """The features the answers so far give, merged; a server shows them while a job runs."""
        task = self.request.task
        if task in ("detect", "ground"):
            chosen = self._merged_detections() if task == "detect" else self.candidates[:1]
            return self._features(
                [c["pixels"] for c in chosen],
                [{**self._base_properties(c["view"], c["raw"]), "label": c["label"]} for c in chosen],
            )
        if task == "describe":
            boxes = region_boxes(self.source, self.request)
            views = [v for v in self.views if v.index in self.texts]
            return self._features(
                [np.array([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]) for b in (boxes[v.index] for v in views)],
                [{**self._base_properties(v.index, self.texts[v.index]), "prompt": self.view_prompt(v), "label": "",
                  "text": self.texts[v.index], "region": v.index} for v in views],
            )
        text = self.text()
        if text is None:
            return []
        label = match_class_in_text(text, self.request.classes) if task == "classify" else None
        properties = {**self._base_properties(0, self.texts[0]), "label": label or "", "text": text}
        return self._features([self.views[0].corners()], [properties])

    def result(self) -> TaskResult:
        task = self.request.task
        features = self.features()
        text = self.text() if task not in ("detect", "ground", "describe") else None
        if task == "ground" and not features and self.done:
            self.warnings.append("the model's answer held no box for the expression.")
        if task == "classify" and features and not features[0].properties["label"]:
            self.warnings.append(f"the answer '{text[:80]}' names none of the given classes.")
        if self.stats.lines_skipped:
            self.warnings.append(f"{self.stats.lines_skipped} answer line(s) could not be used (see stats.skipped).")
        if self.stats.views_truncated:
            lost = "objects may be missing" if task in ("detect", "change") else "the answer may be cut short"
            self.warnings.append(
                f"{self.stats.views_truncated} of {self.done} view(s) stopped at the answer limit of {self.max_new_tokens} tokens before "
                f"the model finished: {lost}. Raise --max-new-tokens (or options.max_new_tokens)."
            )
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


def trained_range_warnings(request: TaskRequest, defaults: ModelDefaults) -> list[str]:
    """A pixel budget the user set that leaves the range the model was trained on."""
    options = request.options
    trained = type(options)(**{k: v for k, v in defaults.options.items() if k in ("min_pixels", "max_pixels")})
    notes = []
    if "min_pixels" in options.model_fields_set and options.min_pixels < trained.min_pixels:
        notes.append(f"min_pixels {options.min_pixels} is below the {trained.min_pixels} the model was trained with")
    if "max_pixels" in options.model_fields_set and options.max_pixels > trained.max_pixels:
        notes.append(f"max_pixels {options.max_pixels} is above the {trained.max_pixels} the model was trained with")
    return [f"{note}: views outside the trained range may be answered worse." for note in notes]
