"""Model downloads run by the service (backend.model_download), one at a time in a thread of
their own, the others queued in order; finished ones are kept for the result TTL. A thread is
enough here, unlike training: a download is network and disk, and cancelling it stops at the
next chunk written."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

from backend.contract import DownloadProgress, ModelDownloadRequest, ModelDownloadStatus, ModelFolderInfo
from backend.errors import Cancelled, UserError
from backend.model_download import download_model
from backend.model_folders import ModelFolder, check_hub_id
from backend.server.job_table import JobTable
from backend.server.jobs import ServiceBusy

log = logging.getLogger("rscovlm.server.models")

STOPPED = "the server was stopped"


def folder_info(folder: ModelFolder, in_use: tuple[str, ...] = ()) -> ModelFolderInfo:
    using = any(Path(path).expanduser().resolve() == Path(folder.path) for path in in_use if path)
    return ModelFolderInfo(name=folder.name, path=folder.path, kind=folder.kind, size_bytes=folder.size_bytes, classes=list(folder.classes),
                           source=folder.source, in_use=using)


class ModelDownload:
    def __init__(self, request: ModelDownloadRequest):
        self.id = uuid.uuid4().hex
        self.request = request
        self.state = "queued"
        self.progress = DownloadProgress()
        self.error: str | None = None
        self.model: ModelFolder | None = None
        self.submitted = time.time()
        self.finished: float | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def status(self) -> ModelDownloadStatus:
        with self.lock:
            return ModelDownloadStatus(
                id=self.id, repo_id=self.request.repo_id, state=self.state, progress=self.progress.model_copy(), url=f"/models/downloads/{self.id}",
                submitted=self.submitted, finished=self.finished, error=self.error, model=folder_info(self.model) if self.model else None,
            )  # fmt: skip

    def end(self, state: str, error: str | None = None) -> None:
        with self.lock:
            self.state, self.error, self.finished = state, error, time.time()


class ModelDownloads(JobTable[ModelDownload]):
    """The download queue of one models folder, and the thread that works through it."""

    def __init__(self, folder: Path, result_ttl_s: float = 3600.0, endpoint: str | None = None, max_queued: int = 20):
        super().__init__(result_ttl_s)
        self.folder = folder
        self.endpoint = endpoint  # None: huggingface_hub's ($HF_ENDPOINT, else the Hugging Face hub)
        self.max_queued = max_queued
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="rscovlm-downloads", daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        with self.cond:
            self.stopping = True
            for job in self.jobs.values():
                job.stop.set()
            self.cond.notify_all()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout_s)

    def submit(self, request: ModelDownloadRequest) -> ModelDownload:
        request = request.model_copy(update={"repo_id": check_hub_id(request.repo_id)})
        with self.cond:
            if self.stopping:
                raise ServiceBusy("the server is stopping.")
            active = [job for job in self.jobs.values() if job.active]
            if any(job.request.repo_id == request.repo_id for job in active):
                raise UserError(f"{request.repo_id} is being downloaded already.", "Follow that download, or cancel it first.")
            if len(active) >= self.max_queued:
                raise ServiceBusy(f"{len(active)} downloads are queued already; try again when one has finished.")
            job = ModelDownload(request)
            self.jobs[job.id] = job
            self.cond.notify_all()
            return job

    def cancel(self, job_id: str) -> ModelDownload | None:
        job = self.get(job_id)
        if job is not None:
            job.stop.set()
            with self.cond:
                if job.state == "queued":
                    job.end("cancelled", "cancelled by the client before it started")
        return job

    def _loop(self) -> None:
        while True:
            with self.cond:
                job = next((j for j in self.jobs.values() if j.state == "queued"), None)
                while job is None and not self.stopping:
                    self.cond.wait(timeout=1.0)
                    job = next((j for j in self.jobs.values() if j.state == "queued"), None)
                if self.stopping:
                    for queued in (j for j in self.jobs.values() if j.state == "queued"):
                        queued.end("cancelled", STOPPED)
                    return
                with job.lock:
                    job.state = "running"
            self._run(job)

    def _run(self, job: ModelDownload) -> None:
        def progress(done: int, total: int) -> None:
            with job.lock:
                job.progress = DownloadProgress(done=done, total=total)

        request = job.request
        try:
            model = download_model(request.repo_id, self.folder, request.revision, request.token, progress, job.stop.is_set, self.endpoint)
        except Cancelled as exc:
            job.end("cancelled", STOPPED if self.stopping else str(exc))
        except UserError as exc:
            job.end("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug ends this download, not the service
            log.exception("download of %s failed", request.repo_id)
            job.end("failed", f"unexpected error: {exc!r}; see the server's log.")
        else:
            log.warning("downloaded %s into %s", request.repo_id, model.path)
            with job.lock:
                job.model = model
            job.end("done")
