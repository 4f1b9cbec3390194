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
answer) one turn at a time. `backend.drive.drive` routes a run here when `run.zoom.zoomed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from shapely.geometry import Polygon, mapping

from backend.contract import Feature, TaskResult, ZoomTrace, ZoomTurn
from backend.engine import Engine, Generation
from backend.errors import Cancelled
from backend.georef import View, raster_to_map
from backend.parsing import parse_tool_call
from backend.pipeline import TaskRun
from backend.prompts import ZOOM_FOLLOW_UP, Conversation, Message
from backend.resolution import visual_tokens
from backend.zoom_plan import TURN_MIN_NEW_TOKENS, zoom_view


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
        run.accept(final, replace(generations[-1], prompt_tokens=0, visual_tokens=0, new_tokens=0))  # counted above
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
