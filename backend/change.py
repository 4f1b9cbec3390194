"""Two rasters of the same place at two dates: what changed between them.

The later raster is read on the earlier one's pixel grid (rasterio's WarpedVRT: another CRS,
resolution or extent is reprojected window by window), inside the intersection of both; the
two views of a tile are the same ground and the same size. Each pair goes to the model as one
video of two frames, earliest first, after TEOChat's prefix, as RSCoVLM's data builder feeds its
bi-temporal data (docs/CHANGE.md). `change` asks per tile and per class for the changed (or
appeared, or disappeared) objects, boxes mapped back through the tile and merged across tiles;
`change_caption` asks for a description of the changes on the whole intersection.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from backend.contract import Feature, RasterInfo, TaskResult
from backend.engine import Generation
from backend.errors import UserError
from backend.georef import View
from backend.parsing import parse_boxes
from backend.pipeline import TaskRun
from backend.prompts import CHANGE_CAPTION_PROMPT, Conversation, change_question, change_turn
from backend.raster import PixelWindow, RasterSource, crs_name

# Where a raster's acquisition date is found: GDAL's TIFF tag, then metadata keys of common
# products (Maxar IMD, Landsat/Sentinel MTL), else its file name stands for it.
DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME",
             "PRODUCT_START_TIME", "DATETIME")
_DATE = re.compile(r"(\d{4})[-:/](\d{2})[-:/](\d{2})")


def acquisition_date(source: RasterSource) -> str:
    """'YYYY-MM-DD' from the raster's metadata when it has a date, else its file name."""
    dataset = source.base or source.dataset
    for domain in (None, "IMD", "IMAGERY"):
        try:
            tags = dataset.tags(ns=domain) if domain else dataset.tags()
        except Exception:  # noqa: BLE001 - a domain the driver does not have
            continue
        upper = {k.upper(): v for k, v in tags.items()}
        for key in DATE_TAGS:
            match = _DATE.search(upper.get(key, ""))
            if match:
                try:
                    return datetime.date(*map(int, match.groups())).isoformat()
                except ValueError:
                    continue
    return Path(source.path).stem


class ChangeRun(TaskRun):
    """A TaskRun over two rasters: the earlier one's grid, the later one warped onto it."""

    def __init__(self, request, model_id: str, defaults=None):
        super().__init__(request, model_id, defaults)
        try:
            self.after_stretch = self.after.stretch_for(self.window)
            self.dates = (acquisition_date(self.source), acquisition_date(self.after))
            self._plan_questions()
        except BaseException:
            self.close()
            raise

    def _window(self) -> PixelWindow:
        request = self.request
        self.after = RasterSource.aligned(request.raster_after, request.options.bands, self.source)
        own = self.after.base
        kept = list(self.source.warnings)
        if own is None:  # two images without georeferencing, of one size: pixel for pixel
            footprint = PixelWindow(0, 0, self.source.width, self.source.height)
        else:
            try:  # the later raster's footprint on the earlier grid; reaching past it is no news
                footprint = self.source.window_for_extent(own.bounds, crs_name(own.crs))
            except UserError:
                footprint = None
        self.source.warnings[:] = kept
        asked = self.source.window_for_extent(request.extent, request.extent_crs)
        overlap = _intersection(asked, footprint) if footprint is not None else None
        if overlap is None:
            raise UserError(
                f"{Path(request.raster_after).name} and {Path(request.raster).name} do not overlap"
                + (" within the extent" if request.extent else "") + ".",
                "Give two rasters of the same place (any CRS or resolution), and an extent inside both.",
            )
        return overlap

    def close(self) -> None:
        super().close()
        after = getattr(self, "after", None)
        if after is not None:
            after.close()

    def _prompt(self) -> tuple[str | None, str]:
        return None, CHANGE_CAPTION_PROMPT if self.request.task == "change_caption" else ""

    def _plan_questions(self) -> None:
        """Every tile once per class and change kind asked (`change`): views get their own index."""
        if self.request.task == "change_caption":
            self.questions = {0: ("", "", CHANGE_CAPTION_PROMPT)}
            return
        tiles, self.views, self.questions = self.views, [], {}
        for tile in tiles:
            for label in self.request.classes:
                for kind in self.request.options.change_kinds:
                    index = len(self.views)
                    self.views.append(View(tile.col_off, tile.row_off, tile.width, tile.height, tile.out_width, tile.out_height, index))
                    self.questions[index] = (label, kind, change_question(label, kind))
        self.stats.views = len(self.views)

    def view_prompt(self, view: View) -> str:
        return self.questions[view.index][2]

    def conversation(self, view: View) -> Conversation | None:
        """Both dates' pixels of the view; None (counted) when either has none."""
        before = self.source.read_view(view, self.stretch)
        after = self.after.read_view(view, self.after_stretch)
        if before.valid_fraction == 0.0 or after.valid_fraction == 0.0:
            self.stats.views_skipped_nodata += before.valid_fraction == 0.0
            self.stats.views_skipped_no_overlap += before.valid_fraction > 0.0
            self.done += 1
            return None
        return change_turn(before.image, after.image, self.view_prompt(view))

    def accept(self, view: View, generation: Generation) -> None:
        if self.request.task == "change_caption":
            super().accept(view, generation)
            return
        self.done += 1
        self.stats.visual_tokens += generation.visual_tokens
        self.stats.prompt_tokens += generation.prompt_tokens
        self.stats.new_tokens += generation.new_tokens
        self.stats.views_truncated += not generation.finished
        label, kind, _ = self.questions[view.index]
        answer = parse_boxes(generation.text, (view.out_width, view.out_height))  # labels: the question's, whatever is written
        for raw, reason in answer.skipped:
            self._skip(view, raw, reason)
        if answer.boxes:
            pixels = view.to_raster(np.stack([box.points for box in answer.boxes]))
            edges = view.edge_distance(pixels.mean(axis=1)).tolist()
            for box, corners, edge in zip(answer.boxes, pixels, edges):
                self.candidates.append({"pixels": corners, "label": label, "change": kind, "group": (label, kind), "view": view.index,
                                        "raw": box.raw, "edge": edge})
        self.stats.boxes_parsed += len(answer.boxes)

    def features(self) -> list[Feature]:
        dates = {"date_before": self.dates[0], "date_after": self.dates[1]}
        if self.request.task == "change_caption":
            return [Feature(geometry=f.geometry, properties={**f.properties, **dates}) for f in super().features()]
        chosen = self._merged_detections()
        return self._features(
            [c["pixels"] for c in chosen],
            [{**self._base_properties(c["view"], c["raw"]), "prompt": self.questions[c["view"]][2], "label": c["label"], "change": c["change"],
              **dates} for c in chosen],
        )

    def result(self) -> TaskResult:
        result = super().result()
        d = self.after.base or self.after.dataset
        result.raster_after = RasterInfo(path=self.after.path, width=d.width, height=d.height, crs=crs_name(d.crs),
                                         transform=tuple(d.transform)[:6], window=result.raster.window)
        return result


def _intersection(a: PixelWindow, b: PixelWindow) -> PixelWindow | None:
    c0, r0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    c1, r1 = min(a.col_off + a.width, b.col_off + b.width), min(a.row_off + a.height, b.row_off + b.height)
    return PixelWindow(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None
