"""Planning the Zoom-in Chain, pure: whether a request goes through it, the window a zoom box
in an image stands for, and what answering on every native tile instead would cost.

RSCoVLM trained the chain on questions only (LRS-VQA): grounding and detection never zoom, and
counting questions (whose answer needs several regions) skip it too.
"""

from __future__ import annotations

import math
import re

import numpy as np

from backend.contract import BruteForceCost, TaskRequest, ZoomTrace
from backend.georef import View
from backend.raster import PixelWindow
from backend.resolution import FACTOR, plan_tiles, view_size, visual_tokens

ZOOM_TASKS = ("ask",)
# Training left counting (and comparison) questions out of the chain: their answer needs
# several regions, and one zoomed window would hide the rest.
COUNTING_QUESTION = re.compile(r"\b(how many|count|counts|counting|number of)\b", re.IGNORECASE)
# Every turn may be the one that asks to zoom: leave room for a tool call (about 45 tokens with
# Qwen's tokenizer, digits spelt one by one) whatever the task's own answer limit.
TURN_MIN_NEW_TOKENS = 96


def is_counting_question(question: str | None) -> bool:
    return bool(question) and COUNTING_QUESTION.search(question) is not None


def brute_force_cost(work_width: float, work_height: float, min_pixels: int, max_pixels: int) -> BruteForceCost:
    """Seeing every pixel at native resolution instead: square tiles as large as the budget
    allows, side by side, each read whole and shown once."""
    side = max(FACTOR, math.isqrt(max_pixels) // FACTOR * FACTOR)
    tiles = plan_tiles(max(1, round(work_width)), max(1, round(work_height)), side, 0)
    tokens = sum(visual_tokens(*view_size(t.height, t.width, min_pixels, max_pixels)) for t in tiles)
    return BruteForceCost(tiles=len(tiles), tile_size=side, visual_tokens=tokens, pixels_read=sum(t.width * t.height for t in tiles))


def decide_zoom(request: TaskRequest, work_width: float, work_height: float) -> ZoomTrace | None:
    """Whether a question goes through the chain (None for the other tasks). The extent is
    `work_width` x `work_height` pixels at the working resolution."""
    if request.task not in ZOOM_TASKS:
        return None
    options = request.options
    ratio = work_width * work_height / options.max_pixels
    if options.zoom == "off":
        zoomed, reason = False, "zoom is off"
    elif not options.zoom_counting and is_counting_question(request.question):
        zoomed, reason = False, "a counting question is answered on the whole view (the chain was not trained on counting)"
    elif options.zoom == "on":
        zoomed, reason = True, "zoom is on"
    elif ratio > options.zoom_factor:
        zoomed, reason = True, f"the extent is {ratio:.1f}x the pixel budget, over the zoom factor {options.zoom_factor:g}"
    else:
        zoomed, reason = False, f"the extent is {ratio:.1f}x the pixel budget, within the zoom factor {options.zoom_factor:g}"
    return ZoomTrace(
        mode=options.zoom,
        zoomed=zoomed,
        reason=reason,
        max_steps=1 + options.zoom_steps,
        brute_force=brute_force_cost(work_width, work_height, options.min_pixels, options.max_pixels),
    )


def zoom_view(
    view: View,
    box: tuple[float, float, float, float],
    extent: PixelWindow,
    scale: tuple[float, float],
    min_pixels: int,
    max_pixels: int,
    index: int,
) -> View:
    """The window a box in `view`'s pixels covers, grown to whole raster pixels and kept inside
    the extent, shown at the working resolution (`scale` working pixels per raster pixel) or
    scaled into the pixel budget. Raises ValueError for a window no image can show (aspect
    ratio over 200)."""
    (x0, y0), (x1, y1) = view.to_raster(np.array([[box[0], box[1]], [box[2], box[3]]], dtype=float))
    right, bottom = extent.col_off + extent.width, extent.row_off + extent.height
    # The tolerance keeps a box edge that maps onto a pixel edge from taking in one more pixel.
    c0 = min(max(extent.col_off, math.floor(x0 + 1e-6)), right - 1)
    r0 = min(max(extent.row_off, math.floor(y0 + 1e-6)), bottom - 1)
    c1 = max(min(right, math.ceil(x1 - 1e-6)), c0 + 1)
    r1 = max(min(bottom, math.ceil(y1 - 1e-6)), r0 + 1)
    width, height = c1 - c0, r1 - r0
    out_h, out_w = view_size(max(1, round(height * scale[1])), max(1, round(width * scale[0])), min_pixels, max_pixels)
    return View(c0, r0, width, height, out_w, out_h, index)
