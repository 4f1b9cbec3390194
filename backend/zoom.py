"""The Zoom-in Chain: answer about an extent far larger than the model can see at once.

Turn 1 shows the whole extent inside the pixel budget (one decimated read, which GDAL serves
from overviews) under the tool-description system prompt; the model answers with an
`image_zoom_in` call whose box is in that image's pixels. The box is mapped to raster pixels
and that window is read again at native (working) resolution, or at the budget's resolution
when it is still too large, and shown in turn 2 with the trained follow-up text. Coordinates in
the final answer are pixels of the last image shown, so they map back through its View.

RSCoVLM trained one zoom step and cut the crop from the full-resolution image; its public
evaluator crops the already-downsampled image instead, which throws away the detail the chain
exists for. Here the crop is always a fresh read from the raster.

The chain speaks only the Engine protocol, so a local model and an OpenAI-compatible server
run it alike, and drives a `TaskRun` (open raster, stretch, prompts, parsing of the final
answer) one turn at a time. `backend.pipeline.drive` routes a run here when `run.zoom.zoomed`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from shapely.geometry import Polygon, mapping

from backend.contract import BruteForceCost, Feature, TaskRequest, TaskResult, ZoomTrace, ZoomTurn
from backend.engine import Engine, Generation
from backend.errors import Cancelled
from backend.georef import View, raster_to_map
from backend.parsing import parse_tool_call
from backend.prompts import ZOOM_FOLLOW_UP, Conversation, Message
from backend.raster import PixelWindow
from backend.resolution import FACTOR, plan_tiles, view_size, visual_tokens

if TYPE_CHECKING:
    from backend.pipeline import TaskRun

ZOOM_TASKS = ("ask", "ground")
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
    """Whether an ask/ground request goes through the chain (None for the other tasks). The
    extent is `work_width` x `work_height` pixels at the working resolution."""
    if request.task not in ZOOM_TASKS:
        return None
    options = request.options
    ratio = work_width * work_height / options.max_pixels
    if options.zoom == "off":
        zoomed, reason = False, "zoom is off"
    elif request.task == "ask" and not options.zoom_counting and is_counting_question(request.question):
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


def _window(view: View) -> tuple[float, float, float, float]:
    return (float(view.col_off), float(view.row_off), float(view.width), float(view.height))


def zoom_chain(
    run: TaskRun,
    engine: Engine,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TaskResult:
    """Answer a planned run through the chain; `run.zoom` becomes the trace of what happened.
    Stops between turns (raising `Cancelled`) when `should_stop()` turns true."""
    trace = run.zoom
    trace.system = run.system
    options = run.request.options
    overview = run.views[0]
    conversation = run.conversation(overview)
    if conversation is None:
        trace.outcome = "no data"
        return _finish(run, None, None)
    generations: list[Generation] = []

    def answer(conversation: Conversation, view: View, kind: str, pixels_read: int) -> Generation:
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped after {len(trace.turns)} of at most {run.total} turns")
        generation = engine.generate([conversation], max(run.max_new_tokens, TURN_MIN_NEW_TOKENS))[0]
        generations.append(generation)
        trace.turns.append(
            ZoomTurn(
                turn=len(trace.turns) + 1,
                image=kind,
                window=_window(view),
                image_size=(view.out_width, view.out_height),
                user=conversation[-1].text,
                answer=generation.text,
                image_tokens=visual_tokens(view.out_height, view.out_width),
                visual_tokens=generation.visual_tokens,
                prompt_tokens=generation.prompt_tokens,
                new_tokens=generation.new_tokens,
                pixels_read=pixels_read,
            )
        )
        if progress is not None:
            progress(len(trace.turns), run.total)
        return generation

    view, image = overview, conversation[-1].images[0]
    generation = answer(conversation, view, "overview", run.source.decoded_pixels(overview))
    fell_back = False
    final: View | None = None
    while True:
        call = parse_tool_call(generation.text, (view.out_width, view.out_height))
        turn = trace.turns[-1]
        turn.zoom_box, turn.note = call.box, call.note or None
        if not call.called:
            final = view
            break
        if len(trace.turns) > trace.max_steps:
            trace.outcome = "step bound"
            run.warnings.append(
                f"the model still asked to zoom after {trace.max_steps} step(s); stopped there without an answer "
                "(allow more with --zoom-steps)."
            )
            break
        kind, pixels_read = "repeat", 0
        if call.box is not None:
            try:
                step_view = zoom_view(view, call.box, run.window, run.work_scale, options.min_pixels, options.max_pixels, trace.steps + 1)
            except ValueError as exc:
                turn.note = f"the zoom window cannot be shown: {exc}"
            else:
                view, kind, pixels_read = step_view, "zoom", run.source.decoded_pixels(step_view)
                image = run.source.read_view(view, run.stretch).image
                trace.steps += 1
        if kind == "repeat":
            fell_back = True
            run.warnings.append(f"turn {turn.turn}: the zoom request could not be used ({turn.note}); the model answered on the whole image instead.")
        conversation = conversation + [Message("assistant", generation.text), Message("user", ZOOM_FOLLOW_UP, (image,))]
        generation = answer(conversation, view, kind, pixels_read)
    if final is not None:
        trace.outcome = "fell back" if fell_back else "answered after zooming" if trace.steps else "answered without zooming"
    return _finish(run, final, generations)


def _finish(run: TaskRun, final: View | None, generations: list[Generation] | None) -> TaskResult:
    trace = run.zoom
    generations = generations or []
    run.stats.views = len(trace.turns)
    run.stats.visual_tokens += sum(g.visual_tokens for g in generations)
    run.stats.prompt_tokens += sum(g.prompt_tokens for g in generations)
    run.stats.new_tokens += sum(g.new_tokens for g in generations)
    trace.visual_tokens = sum(t.visual_tokens for t in trace.turns)
    trace.pixels_read = sum(t.pixels_read for t in trace.turns)
    if final is not None:
        run.accept(final, Generation(generations[-1].text, 0, 0, 0))
    result = run.result()
    for feature in result.features:
        feature.properties["role"] = "answer"
    result.features.extend(_zoom_features(run))
    return result


def _zoom_features(run: TaskRun) -> list[Feature]:
    """Where the model looked: one polygon per zoomed window, with the call that asked for it."""
    features, step = [], 0
    for previous, turn in zip(run.zoom.turns, run.zoom.turns[1:]):
        if turn.image != "zoom":
            continue
        step += 1
        c, r, w, h = turn.window
        ring = raster_to_map(np.array([[c, r], [c + w, r], [c + w, r + h], [c, r + h]], dtype=float), run.source.transform)
        properties = {
            "task": run.request.task,
            "model": run.model_id,
            "prompt": run.user,
            "tile": step,
            "raw_text": previous.answer,
            "label": f"zoom {step}",
            "role": "zoom",
            "step": step,
            "turn": turn.turn,
        }
        features.append(Feature(geometry=mapping(Polygon(ring)), properties=properties))
    return features


def zoom_summary(trace: ZoomTrace) -> str:
    """One line for the terminal: what the chain did and what it saved."""
    if not trace.zoomed:
        return f"zoom: not used ({trace.reason})"
    line = f"zoom: {trace.outcome}, {trace.steps} step(s) in {len(trace.turns)} turn(s); {trace.visual_tokens:,} visual tokens"
    line += f", {trace.pixels_read / 1e6:.2f} Mpx read"
    brute = trace.brute_force
    if brute is not None:
        line += f" (native tiling: {brute.tiles:,} tiles, {brute.visual_tokens:,} tokens, {brute.pixels_read / 1e6:.1f} Mpx)"
    return line
