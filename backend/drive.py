"""Driving a planned run with an engine: the Zoom-in Chain turn by turn, every other task in
batches of views. The CLI, `eval run` and the server's chained jobs come here; the server's
scheduler batches plain views across jobs itself (backend.server.jobs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backend.change import ChangeRun
from backend.contract import CHANGE_TASKS, TaskRequest, TaskResult
from backend.engine import Engine
from backend.errors import Cancelled
from backend.georef import View
from backend.model_defaults import ModelDefaults
from backend.pipeline import TaskRun
from backend.zoom import zoom_chain

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


def open_run(request: TaskRequest, model_id: str, defaults: ModelDefaults | None = None) -> TaskRun:
    """The request planned: its raster (two, for a change task) open, its views cut."""
    return (ChangeRun if request.task in CHANGE_TASKS else TaskRun)(request, model_id, defaults)


def drive(run: TaskRun, engine: Engine, progress: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> TaskResult:
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
            generations = engine.generate([conv for _, conv in pending], run.max_new_tokens, run.repetition_penalty)
            for (view, _), generation in zip(pending, generations):
                run.accept(view, generation)
        if progress is not None:
            progress(run.done, run.total)
    return run.result()


def run_task(request: TaskRequest, engine: Engine, progress: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> TaskResult:
    """Plan, drive and close one request, with the engine's model defaults."""
    with open_run(request, engine.model_id, engine.defaults) as run:
        return drive(run, engine, progress, should_stop)
