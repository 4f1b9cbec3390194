"""One job on the backend, from raster to result: write the GeoTIFF when the layer has no file,
upload it when the backend is on another machine, submit, poll with progress and the features
merged so far, cancel on request, clean up. `run_job` blocks, so it runs in a QgsTask (the dock)
or in a Processing algorithm's thread; the tasks hand their results to the main thread from
QgsTask.finished.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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
) -> dict:
    """The JobStatus of the finished job (its `result` holds the TaskResult). Raises
    BackendError (kind 'cancelled' after the job was cancelled on the backend) or InputProblem."""
    if feedback.isCanceled():
        raise BackendError("cancelled", "Cancelled.")
    client = BackendClient(connection, timeout_s, feedback)
    scratch = Path(tempfile.mkdtemp(prefix="rscovlm-qgis-"))
    upload_id = None
    job_id = None
    try:
        path = raster.file
        if path is None:
            log(f"writing '{raster.layer_name}' ({raster.export.columns} x {raster.export.rows} px) to a temporary GeoTIFF")
            path = write_geotiff(raster, str(scratch / "extent.tif"), context)
            if feedback.isCanceled():
                raise BackendError("cancelled", "Cancelled.")
        if connection.uploads:
            log(f"uploading {path} to {connection.url}")
            upload = client.post_file("/rasters", path)
            upload_id, path = upload["id"], upload["raster"]
        request = {**body, "raster": path}
        created = client.post_json("/jobs", request)
        job_id = created["id"]
        log(f"job {job_id} submitted: {request['task']} on {request['raster']}")
        seen = None
        while True:
            status = client.get(f"/jobs/{job_id}")
            progress = status.get("progress") or {}
            done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
            if on_progress is not None:
                on_progress(done, total)
            if on_partial is not None and status.get("features") and (done, len(status["features"])) != seen:
                seen = (done, len(status["features"]))
                on_partial(status)
            if status["state"] in FINAL_STATES:
                break
            _wait(feedback, poll_ms)
            if feedback.isCanceled():
                raise BackendError("cancelled", "Cancelled.")
        if status["state"] != "done":
            reason = status.get("error") or "no reason given"
            raise BackendError("failed", f"The backend's job {status['state']}: {reason}")
        job_id = None  # finished: nothing to cancel
        return status
    except (BackendError, InputProblem) as exc:
        if job_id is not None and getattr(exc, "kind", "") in ("cancelled", "timeout"):
            _cancel_on_backend(connection, job_id, timeout_s)
        if feedback.isCanceled():
            raise BackendError("cancelled", "Cancelled.") from None
        raise
    finally:
        if upload_id is not None:
            _quietly(lambda: BackendClient(connection, timeout_s).delete(f"/rasters/{upload_id}"))
        shutil.rmtree(scratch, ignore_errors=True)


def _cancel_on_backend(connection: Connection, job_id: str, timeout_s: float) -> None:
    """DELETE the job (with a client that does not stop at the cancelled feedback)."""
    if _quietly(lambda: BackendClient(connection, timeout_s).delete(f"/jobs/{job_id}")):
        log(f"job {job_id} cancelled on the backend")


def _quietly(call: Callable[[], Any]) -> bool:
    try:
        call()
        return True
    except BackendError as exc:
        log(f"clean-up request failed: {exc}", Qgis.MessageLevel.Warning)
        return False


class JobTask(QgsTask):
    """A job in QGIS's task manager (progress, cancel button). Partial features and progress are
    signalled from the worker (queued to the main thread); the outcome is handed over in
    finished(), which QGIS calls on the main thread."""

    progressed = pyqtSignal(int, int)
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
    ):
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.connection = connection
        self.raster = raster
        self.body = body
        self.context = context
        self.on_finished = on_finished
        self.timeout_s = timeout_s
        self.poll_ms = poll_ms
        self.feedback = QgsFeedback()
        self.status: dict | None = None
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

    def run(self) -> bool:
        try:
            self.status = run_job(
                self.connection, self.raster, self.body, self.context, self.feedback, self.timeout_s, self.poll_ms, self._progress, self.partial.emit
            )
            return True
        except (BackendError, InputProblem) as exc:
            self.error = exc
            return False
        except Exception as exc:  # noqa: BLE001 - a bug must still end the task and reach the user
            self.error = BackendError("failed", f"Unexpected error: {exc!r}. Please report it with Copy diagnostics.")
            return False

    def finished(self, result: bool) -> None:
        self.on_finished(self)


class StatusTask(QgsTask):
    """GET /health and /model: is the backend there, and what does it run."""

    def __init__(self, connection: Connection, on_finished: Callable[[StatusTask], None], timeout_s: float = 10.0):
        super().__init__("RSCoVLM: checking the backend", QgsTask.Flag.CanCancel)
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
