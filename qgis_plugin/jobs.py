"""Jobs on the backend, from input to result: write the GeoTIFF when a raster layer has no file,
upload files when the backend is on another machine, submit, poll with progress, cancel on
request, clean up. `run_job` (a task on a raster) and the training algorithms share these
steps; they block, so they run in a QgsTask (the dock) or in a Processing algorithm's thread;
the tasks hand their results to the main thread from QgsTask.finished.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsCoordinateTransformContext, QgsFeedback, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QThread, pyqtSignal

from .client import BackendClient, BackendError, Connection
from .raster_input import InputProblem, RasterInput, write_geotiff

LOG_TAG = "RSCoVLM"
FINAL_STATES = ("done", "failed", "cancelled")


def log(message: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def _wait(feedback: QgsFeedback, milliseconds: int) -> None:
    """Sleep between polls, waking early when cancelled."""
    deadline = time.monotonic() + milliseconds / 1000
    while not feedback.isCanceled() and time.monotonic() < deadline:
        QThread.msleep(20)


def _cancelled() -> BackendError:
    return BackendError("cancelled", "Cancelled.")


class JobFiles:
    """The files one job needs on the backend, removed again when the `with` block ends: GeoTIFFs
    written for raster layers without a file (in a scratch folder) and uploads."""

    def __init__(self, connection: Connection, timeout_s: float, feedback: QgsFeedback):
        self.connection = connection
        self.timeout_s = timeout_s
        self.client = BackendClient(connection, timeout_s, feedback)
        self.feedback = feedback
        self.scratch = Path(tempfile.mkdtemp(prefix="rscovlm-qgis-"))
        self.uploaded: list[str] = []  # paths to DELETE afterwards

    def __enter__(self) -> JobFiles:
        return self

    def __exit__(self, *exc) -> None:
        for path in self.uploaded:
            _quietly(lambda path=path: BackendClient(self.connection, self.timeout_s).delete(path))
        shutil.rmtree(self.scratch, ignore_errors=True)

    def raster(self, raster: RasterInput, context: QgsCoordinateTransformContext, name: str = "extent") -> str:
        """The raster as the backend sees it: its file, or a GeoTIFF of the extent (`name`.tif);
        uploaded if need be."""
        path = raster.file
        if path is None:
            log(f"writing '{raster.layer_name}' ({raster.export.columns} x {raster.export.rows} px) to a temporary GeoTIFF")
            path = write_geotiff(raster, str(self.scratch / f"{name}.tif"), context)
            if self.feedback.isCanceled():
                raise _cancelled()
        return self.upload(path, "/rasters")["raster"] if self.connection.uploads else path

    def upload(self, path: str, route: str) -> dict:
        """POST a file to `route` (/rasters, /vectors); the answer names it as the backend sees it."""
        log(f"uploading {path} to {self.connection.url}")
        answer = self.client.post_file(route, path)
        self.uploaded.append(f"{route}/{answer['id']}")
        return answer


def submit_and_follow(
    connection: Connection,
    route: str,
    body: dict,
    feedback: QgsFeedback,
    timeout_s: float = 30.0,
    poll_ms: int = 500,
    on_status: Callable[[dict], None] | None = None,
    settle_s: float = 0.0,
) -> dict:
    """Submit `body` to `route`, poll the job's `url` until it ends, and return its final status.
    When the feedback is cancelled the job is cancelled on the backend; with `settle_s` the
    cancelled job is followed that much longer until it has stopped (a fit writing its
    checkpoint), and its own account of where it stopped becomes the error's message.
    Raises BackendError: kind 'cancelled', or 'failed' with the job's error."""
    client = BackendClient(connection, timeout_s, feedback)
    created = client.post_json(route, body)
    url = created["url"]
    log(f"job {created['id']} submitted to {route}")
    try:
        while True:
            status = client.get(url)
            if on_status is not None:
                on_status(status)
            if status["state"] in FINAL_STATES:
                break
            _wait(feedback, poll_ms)
            if feedback.isCanceled():
                raise _cancelled()
    except BackendError as exc:
        if exc.kind not in ("cancelled", "timeout"):
            raise
        _cancel_on_backend(connection, url, timeout_s)
        stopped = _settle(connection, url, timeout_s, poll_ms, settle_s, on_status) if settle_s else None
        if feedback.isCanceled():
            reason = (stopped or {}).get("error")
            raise BackendError("cancelled", f"Cancelled: {reason}" if reason else "Cancelled.") from None
        raise
    if status["state"] != "done":
        raise BackendError("failed", f"The backend's job {status['state']}: {status.get('error') or 'no reason given'}")
    return status


def _settle(connection: Connection, url: str, timeout_s: float, poll_ms: int, settle_s: float, on_status) -> dict | None:
    """The status of a cancelled job once it has stopped, or None if it takes over `settle_s`."""
    client = BackendClient(connection, timeout_s)  # the feedback is cancelled: this one must still ask
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        try:
            status = client.get(url)
        except BackendError:
            return None
        if on_status is not None:
            on_status(status)
        if status["state"] in FINAL_STATES:
            return status
        QThread.msleep(poll_ms)
    return None


def run_job(
    connection: Connection,
    raster: RasterInput,
    body: dict,
    context: QgsCoordinateTransformContext,
    feedback: QgsFeedback,
    timeout_s: float = 30.0,
    poll_ms: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
    on_partial: Callable[[dict], None] | None = None,
    raster_after: RasterInput | None = None,
) -> dict:
    """The JobStatus of the finished task job (its `result` holds the TaskResult); a comparison
    of two dates sends `raster_after` as the later raster. Raises BackendError (kind 'cancelled'
    after the job was cancelled on the backend) or InputProblem."""
    if feedback.isCanceled():
        raise _cancelled()
    seen = None

    def show(status: dict) -> None:
        nonlocal seen
        progress = status.get("progress") or {}
        done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
        if on_progress is not None:
            on_progress(done, total)
        if on_partial is not None and status.get("features") and (done, len(status["features"])) != seen:
            seen = (done, len(status["features"]))
            on_partial(status)

    try:
        with JobFiles(connection, timeout_s, feedback) as files:
            request = {**body, "raster": files.raster(raster, context)}
            if raster_after is not None:
                request["raster_after"] = files.raster(raster_after, context, "after")
            log(f"{request['task']} on {request['raster']}")
            return submit_and_follow(connection, "/jobs", request, feedback, timeout_s, poll_ms, show)
    except (BackendError, InputProblem):
        if feedback.isCanceled():
            raise _cancelled() from None
        raise


def _cancel_on_backend(connection: Connection, url: str, timeout_s: float) -> None:
    """DELETE the job (with a client that does not stop at the cancelled feedback)."""
    if _quietly(lambda: BackendClient(connection, timeout_s).delete(url)):
        log(f"job {url} cancelled on the backend")


def _quietly(call: Callable[[], Any]) -> bool:
    try:
        call()
        return True
    except BackendError as exc:
        log(f"clean-up request failed: {exc}", Qgis.MessageLevel.Warning)
        return False


class BackendTask(QgsTask):
    """Work on the backend in QGIS's task manager (progress, cancel button): `work()` runs in
    the worker and leaves its result on the task, or the error it raised in `error`; the outcome
    is handed to `on_finished(task)` in finished(), which QGIS calls on the main thread.
    Progress is signalled from the worker (queued to the main thread)."""

    progressed = pyqtSignal(int, int)

    def __init__(self, description: str, flags, on_finished: Callable[[Any], None]):
        super().__init__(description, flags)
        self.on_finished = on_finished
        self.feedback = QgsFeedback()
        self.error: Exception | None = None

    def cancel(self) -> None:
        """Cancel through the feedback only: run() sees it after the request in flight and ends as
        cancelled after telling the backend. QgsTask.cancel() would also end a task that is still
        queued from this (main) thread, racing with a worker that starts it that moment."""
        self.feedback.cancel()

    def _progress(self, done: int, total: int) -> None:
        if total:
            self.setProgress(100.0 * done / total)
        self.progressed.emit(done, total)

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> bool:
        try:
            self.work()
            return True
        except (BackendError, InputProblem) as exc:
            self.error = exc
            return False
        except Exception as exc:  # noqa: BLE001 - a bug must still end the task and reach the user
            self.error = BackendError("failed", f"Unexpected error: {exc!r}. Please report it with Copy diagnostics.")
            return False

    def finished(self, result: bool) -> None:
        self.on_finished(self)


class JobTask(BackendTask):
    """A task job on a raster; partial features are signalled as they arrive."""

    partial = pyqtSignal(object)

    def __init__(
        self,
        description: str,
        connection: Connection,
        raster: RasterInput,
        body: dict,
        context: QgsCoordinateTransformContext,
        on_finished: Callable[[JobTask], None],
        timeout_s: float = 30.0,
        poll_ms: int = 500,
        raster_after: RasterInput | None = None,
    ):
        # Silent: the plugin tells the user itself (one message bar entry); no "Task complete" too.
        super().__init__(description, QgsTask.Flag.CanCancel | QgsTask.Flag.Silent, on_finished)
        self.connection = connection
        self.raster = raster
        self.raster_after = raster_after
        self.body = body
        self.context = context
        self.timeout_s = timeout_s
        self.poll_ms = poll_ms
        self.status: dict | None = None

    def work(self) -> None:
        self.status = run_job(
            self.connection, self.raster, self.body, self.context, self.feedback, self.timeout_s, self.poll_ms, self._progress, self.partial.emit,
            self.raster_after,
        )


class StatusTask(QgsTask):
    """GET /health and /model: is the backend there, and what does it run."""

    def __init__(self, connection: Connection, on_finished: Callable[[StatusTask], None], timeout_s: float = 10.0):
        super().__init__("RSCoVLM: checking the backend", QgsTask.Flag.CanCancel | QgsTask.Flag.Silent | QgsTask.Flag.Hidden)
        self.connection = connection
        self.on_finished = on_finished
        self.timeout_s = timeout_s
        self.health: dict | None = None
        self.model: dict | None = None
        self.error: BackendError | None = None

    def run(self) -> bool:
        client = BackendClient(self.connection, self.timeout_s)
        try:
            self.health = client.get("/health")
            self.model = client.get("/model")
            return True
        except BackendError as exc:
            self.error = exc
            return False

    def finished(self, result: bool) -> None:
        self.on_finished(self)
