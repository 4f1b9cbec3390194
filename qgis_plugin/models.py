"""The Models list without its widgets: what the backend's models folder holds (GET /models),
downloads from the hub through the backend (POST /models/downloads, followed with progress,
cancelled with DELETE), deleting a folder by its name, and picking one as the model the local
backend runs. Every request runs in a QgsTask; results arrive as signals on the main thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import QgsApplication, QgsFeedback, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .client import BackendClient, BackendError, Connection
from .jobs import BackendTask, submit_and_follow

DOWNLOADS = "/models/downloads"


class ModelsTask(BackendTask):
    """One piece of work on the backend, `work(client, feedback, report)`, whose return value is
    the task's `result`; `progressed` carries what `report(done, total)` is given."""

    def __init__(self, description: str, connection: Connection, timeout_s: float, work: Callable[..., Any],
                 on_finished: Callable[[ModelsTask], None], visible: bool = False):
        flags = QgsTask.Flag.CanCancel | QgsTask.Flag.Silent
        super().__init__(description, flags if visible else flags | QgsTask.Flag.Hidden, on_finished)
        self.connection, self.timeout_s, self.request = connection, timeout_s, work
        self.result: Any = None

    def work(self) -> None:
        self.result = self.request(BackendClient(self.connection, self.timeout_s, self.feedback), self.feedback, self._progress)


class ModelManager(QObject):
    listed = pyqtSignal(object)  # the body of GET /models
    progressed = pyqtSignal(int, int)  # bytes of the download on disk, in all
    message = pyqtSignal(str, bool)  # one line for the dialog; True: it is an error
    downloading_changed = pyqtSignal(bool)

    def __init__(self, controller):
        super().__init__()
        self.controller = controller
        self.models: dict | None = None
        self.tasks: list[ModelsTask] = []
        self.download_task: ModelsTask | None = None

    def _start(self, description: str, work, on_done: Callable[[Any], None], visible: bool = False) -> ModelsTask | None:
        try:
            connection = self.controller.connection()
        except BackendError as exc:
            self.message.emit(exc.message, True)
            return None
        settings = self.controller.settings()

        def finished(task: ModelsTask) -> None:
            self.tasks.remove(task)
            if task is self.download_task:
                self.download_task = None
                self.downloading_changed.emit(False)
            if task.error is not None:
                self.message.emit(task.error.message, task.error.kind != "cancelled")
            else:
                on_done(task.result)

        task = ModelsTask(description, connection, float(settings.timeout_s), work, finished, visible)
        task.progressed.connect(self.progressed)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def refresh(self) -> None:
        self._start("RSCoVLM: listing the models", lambda client, feedback, report: client.get("/models"), self._listed)

    def _listed(self, models: dict) -> None:
        self.models = models
        self.listed.emit(models)

    def download(self, repo_id: str) -> bool:
        """Download a hub model into the backend's models folder, with its progress in the task
        manager and `progressed`; the list is refreshed when it is there."""
        repo_id = repo_id.strip()
        if not repo_id:
            self.message.emit("Enter a hub id to download, e.g. Qingyun/RSCoVLM-7B-2512.", True)
            return False
        if self.download_task is not None:
            self.message.emit("A download is running already; cancel it or wait for it.", True)
            return False
        poll_ms = self.controller.settings().poll_interval_ms

        def work(client: BackendClient, feedback: QgsFeedback, report) -> dict:
            def show(status: dict) -> None:
                progress = status.get("progress") or {}
                report(int(progress.get("done", 0)), int(progress.get("total", 0)))

            # a cancelled download is followed until it has stopped writing (the chunk in flight), so that
            # what it leaves can be deleted at once
            return submit_and_follow(client.connection, DOWNLOADS, {"repo_id": repo_id}, feedback, client.timeout_s, poll_ms, show, settle_s=60.0)

        def done(status: dict) -> None:
            model = status.get("model") or {}
            self.message.emit(f"Downloaded {repo_id} into {model.get('path', 'the models folder')}.", False)
            self.refresh()

        self.download_task = self._start(f"RSCoVLM: downloading {repo_id}", work, done, visible=True)
        if self.download_task is None:
            return False
        self.downloading_changed.emit(True)
        return True

    def cancel_download(self) -> None:
        if self.download_task is not None:
            self.download_task.cancel()

    def delete(self, name: str) -> None:
        def done(models: dict) -> None:
            self.message.emit(f"Deleted {name}.", False)
            self._listed(models)

        self._start(f"RSCoVLM: deleting {name}", lambda client, feedback, report: client.delete(f"/models/{name}"), done)

    def use(self, model: dict) -> str:
        """Make `model` (an entry of the list) the one the local backend runs: a checkpoint as
        the Model setting, an adapter as the LoRA adapter on it; a running local backend is
        restarted with it. Returns what was done, in a line."""
        settings = self.controller.settings()
        if settings.mode == "remote":
            return "The backend at a URL runs the model it was started with; picking one applies to a local backend (RSCoVLM settings)."
        if model.get("in_use"):
            return f"{model.get('name')} is the model the backend runs already."
        if model.get("kind") not in ("checkpoint", "adapter"):
            return f"{model.get('name')} is a download that stopped part way: download it again, or delete it."
        if model["kind"] == "adapter":
            settings.adapter = model["path"]
        else:
            settings.model, settings.adapter = model["path"], ""
        settings.save()
        if self.controller.backend.state == "stopped":
            return f"{model['name']} is the model now; Start in the dock runs it."
        self.controller.stop_backend()
        self.controller.start_backend()
        return f"Restarting the local backend with {model['name']}."

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
