"""What the dock does, without its widgets: manage the backend, check input, run one job at a
time as a QgsTask, turn partial and final answers into layers, keep the history. The dock (and
the tests) drive it; it reports through signals and the message bar."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .client import BackendError, Connection, resolve_connection
from .diagnostics import diagnostics_text
from .feature_input import feature_box, features_to_describe, region_extent
from .install_task import InstallBackendTask, backend_prefix, install_log
from .installer import PLUGIN_VERSION
from .jobs import JobTask, StatusTask, log
from .layers import (
    STYLES,
    add_to_results,
    build_layer,
    crs_from_text,
    describe_layer,
    described_layer,
    remove_from_results,
    replace_features,
    save_geopackage,
    split_roles,
)
from .messages import Notifier
from .process import LocalBackend
from .raster_input import InputProblem, crs_text, prepare_raster
from .settings import PluginSettings
from .task_request import TASKS, RequestProblem, build_request, describe_request, request_abstract, short_name


@dataclass
class RunInput:
    """One question: the raster, the task and its words, the extent (None: the whole layer) and
    the options."""

    layer: QgsRasterLayer | None
    task: str
    classes: list[str] = field(default_factory=list)
    text: str = ""
    extent: QgsRectangle | None = None
    extent_crs: QgsCoordinateReferenceSystem | None = None
    pixel_size: float | None = None  # layer-CRS units per pixel for a layer without a file
    tile_size: int | None = None
    gsd: float | None = None
    zoom: str | None = None
    box_form: str | None = None  # ground: "polygon" for a rotated polygon
    choices: list[str] = field(default_factory=list)  # ask: multiple choice
    features: QgsVectorLayer | None = None  # describe: its selected features (all when none is selected)
    layer_after: QgsRasterLayer | None = None  # change tasks: the later raster of the same place
    change_kinds: list[str] = field(default_factory=list)  # change: what to look for (default: changed)


@dataclass
class HistoryEntry:
    question: str
    answer: str
    layer_name: str


def canvas_pixel_size(canvas, layer: QgsRasterLayer, project: QgsProject) -> float | None:
    """The canvas's pixel size in the layer's CRS units: the resolution a layer without a file
    is written at, so the model sees what the user sees."""
    settings = canvas.mapSettings()
    extent, width = settings.visibleExtent(), max(1, settings.outputSize().width())
    try:
        if settings.destinationCrs() != layer.crs():
            extent = QgsCoordinateTransform(settings.destinationCrs(), layer.crs(), project.transformContext()).transformBoundingBox(extent)
    except QgsCsException:
        return None
    return extent.width() / width if extent.width() > 0 else None


class Controller(QObject):
    status_changed = pyqtSignal(str, str)  # state ('stopped', 'starting', 'running', 'error'), text
    running_changed = pyqtSignal(bool)
    progressed = pyqtSignal(int, int)
    answered = pyqtSignal(str, str)  # question, answer (the text, or what a layer holds)
    history_changed = pyqtSignal()
    layers_changed = pyqtSignal()

    def __init__(self, iface, open_settings=lambda: None, project: QgsProject | None = None):
        super().__init__()
        self.iface = iface
        self.project = project or QgsProject.instance()
        self.notifier = Notifier(iface, open_settings)
        self.backend = LocalBackend(self)
        self.backend.ready.connect(self._backend_ready)
        self.backend.failed.connect(self._backend_failed)
        self.task: JobTask | None = None
        self.status_task: StatusTask | None = None
        self.install_task: InstallBackendTask | None = None
        self.backend_status: dict | None = None
        self.history: list[HistoryEntry] = []
        self.result_layers: list[QgsVectorLayer] = []
        self._partial: QgsVectorLayer | None = None
        self._question = ""
        self._raster_name = ""
        self._jobs_run = 0  # numbers the answers' layers: no two look alike, cancelled ones included
        self._described: tuple[QgsVectorLayer, list] | None = None  # describe: the layer and the features asked about

    # --- the backend ---

    def settings(self) -> PluginSettings:
        return PluginSettings.load()

    def connection(self) -> Connection:
        return resolve_connection(self.settings(), self.backend.connection)

    def start_backend(self) -> None:
        settings = self.settings()
        if settings.mode == "remote":
            self.notifier.error("RSCoVLM is set to connect to a URL, not to start a backend. Choose 'Start a local backend' in RSCoVLM settings.", "not running")
            return
        if self.backend.state != "stopped":
            return
        self.backend.start(settings)
        self.status_changed.emit("starting", "Starting the local backend (loading the model)…")

    def stop_backend(self) -> None:
        self.cancel()
        self.backend.stop()
        self.backend_status = None
        self.refresh_status()

    def install_backend(self, torch: str = "auto", bundle: str = "") -> bool:
        """Install backend...: build the environment (from an offline bundle when given) in a task;
        when it works, the settings' command is the installed one."""
        if self.install_task is not None:
            self.notifier.error("The backend is being installed already; wait for it or cancel it in the task manager.")
            return False
        if self.backend.state != "stopped":
            self.stop_backend()  # the environment it runs from is replaced
        settings = self.settings()
        prefix = backend_prefix(settings)
        self.install_task = InstallBackendTask(prefix, torch, Path(bundle) if bundle else None, self._install_finished, settings.models_path())
        QgsApplication.taskManager().addTask(self.install_task)
        self.notifier.info(f"Installing the backend into {prefix} (progress in the task manager).")
        return True

    def _install_finished(self, task: InstallBackendTask) -> None:
        self.install_task = None
        if task.command is None:
            log("The backend installer's last lines:\n" + "\n".join(install_log(task.prefix)[-30:]))
            self.notifier.error(f"Installing the backend failed: {task.error or 'cancelled'}", "install")
            return
        settings = self.settings()
        settings.mode, settings.command = "local", str(task.command)
        settings.save()
        self.notifier.success(f"The backend is installed ({task.command}); starting it.")
        self.start_backend()

    def _backend_ready(self, connection: Connection) -> None:
        self.notifier.success(f"The local backend is ready at {connection.url}.")
        self.refresh_status()

    def _backend_failed(self, message: str, kind: str) -> None:
        self.backend_status = None
        self.status_changed.emit("error", message)
        self.notifier.error(message, kind)

    def refresh_status(self) -> None:
        """Ask /health and /model in a task; the answer arrives through status_changed."""
        if self.backend.state == "starting":
            self.status_changed.emit("starting", "Starting the local backend (loading the model)…")
            return
        try:
            connection = self.connection()
        except BackendError as exc:
            self.backend_status = None
            self.status_changed.emit("stopped", exc.message)
            return
        if self.status_task is not None:
            return
        self.status_task = StatusTask(connection, self._status_finished, min(10.0, float(self.settings().timeout_s)))
        QgsApplication.taskManager().addTask(self.status_task)

    def _status_finished(self, task: StatusTask) -> None:
        self.status_task = None
        if task.error is not None:
            self.backend_status = None
            self.status_changed.emit("error" if task.error.kind == "token" else "stopped", task.error.message)
            return
        self.backend_status = {"health": task.health, "model": task.model, "url": task.connection.url, "source": task.connection.source}
        self.status_changed.emit("running", describe_backend(task.connection, task.model or {}))
        version = (task.health or {}).get("version")
        if version and version != PLUGIN_VERSION:
            self.notifier.error(f"The backend is version {version}, the plugin {PLUGIN_VERSION}: Settings > Install backend… updates it to match.",
                                "version")

    def model_defaults(self) -> dict:
        """What the backend's model was trained on (GET /model: the options a request gets when
        it sets none, the detection classes); {} until a backend has answered."""
        model = (self.backend_status or {}).get("model") or {}
        return model.get("defaults") or {}

    # --- a job ---

    @property
    def running(self) -> bool:
        return self.task is not None

    def question(self) -> str:
        """The job running or run last, as the history shows it."""
        return self._question

    def run(self, what: RunInput) -> bool:
        """Check the input and start the job; False (with a message bar entry) when it cannot."""
        if self.task is not None:
            self.notifier.error("A job is already running. Wait for it or cancel it first.")
            return False
        settings = self.settings()
        try:
            connection = self.connection()
            regions, self._described = [], None
            extent, extent_crs = what.extent, what.extent_crs
            if what.task == "describe":
                self._described = features_to_describe(what.features)
                regions = [feature_box(f) for f in self._described[1]]
                extent, extent_crs = region_extent(regions, what.features.extent()), what.features.crs()  # written around them if need be
            raster = prepare_raster(what.layer, extent, extent_crs, self.project.transformContext(), what.pixel_size)
            raster_after = None
            if TASKS[what.task].two_dates:  # the later raster over the same ground (its own CRS: the backend aligns it)
                if what.layer_after is None:
                    raise InputProblem("no layer", "No later raster chosen. Pick the raster of the second date beside 'Compared with'.")
                if what.layer_after.id() == what.layer.id():
                    raise InputProblem("no layer", f"'{what.layer.name()}' is chosen as both dates. Pick the raster of the second date beside 'Compared with'.")
                raster_after = prepare_raster(what.layer_after, raster.extent, raster.crs, self.project.transformContext(), what.pixel_size)
            body = build_request(
                what.task, raster.file or "", raster.extent_tuple(), raster.crs_text, what.classes, what.text, what.tile_size, what.gsd,
                what.zoom, what.box_form, what.choices, regions, crs_text(what.features.crs()) if regions else None,
                raster_after.file or "" if raster_after else None, what.change_kinds,
            )
        except BackendError as exc:
            self.notifier.error(exc.message, exc.kind)
            return False
        except (InputProblem, RequestProblem) as exc:
            self.notifier.error(str(exc), getattr(exc, "kind", "input"))
            return False
        self._question = describe_request(body)
        self._raster_name = raster.layer_name
        self._partial = None
        self._jobs_run += 1
        self.task = JobTask(
            f"RSCoVLM: {self._question} on {raster.layer_name}",
            connection,
            raster,
            body,
            self.project.transformContext(),
            self._finished,
            float(settings.timeout_s),
            int(settings.poll_interval_ms),
            raster_after,
        )
        self.task.progressed.connect(self.progressed)
        self.task.partial.connect(self._show_partial)
        QgsApplication.taskManager().addTask(self.task)
        log(f"running {self._question} on {raster.layer_name} ({'file' if raster.file else 'written by QGIS'})")
        self.running_changed.emit(True)
        return True

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _layer_name(self, body: dict, task: str | None = None) -> str:
        return short_name(body, self._jobs_run, task)

    def _describe(self, layer: QgsVectorLayer, body: dict, model: str | None) -> None:
        describe_layer(layer, f"{self._question} ({self._raster_name})", request_abstract(body, self._raster_name, model))

    def _show_partial(self, status: dict) -> None:
        """Features merged so far, while the job runs (detection tiles, mainly)."""
        if self.task is None:
            return
        answer, _ = split_roles(status.get("features") or [])
        body = self.task.body
        if self._partial is None:
            self._partial, _ = build_layer(self._layer_name(body) + " (running)", answer, status.get("crs"), STYLES[body["task"]])
            self._describe(self._partial, body, None)
            add_to_results(self.project, self._partial)
        else:
            replace_features(self._partial, answer)

    def _finished(self, task: JobTask) -> None:
        self.task = None
        partial, self._partial = self._partial, None
        self.running_changed.emit(False)
        if task.error is not None:
            self._failed(task, partial)
        else:
            self._done(task, partial)
        self.layers_changed.emit()
        self.refresh_status()  # memory and job counts moved

    def _failed(self, task: JobTask, partial: QgsVectorLayer | None) -> None:
        error = task.error
        if getattr(error, "kind", "") == "cancelled":
            if partial is not None and partial.featureCount():
                partial.setName(partial.name().replace(" (running)", " (cancelled)"))
                self.result_layers.append(partial)
            elif partial is not None:
                remove_from_results(self.project, partial)
            self.answered.emit(self._question, f"Cancelled ({partial.featureCount() if partial is not None else 0} feature(s) kept).")
            self.notifier.info(f"Cancelled: {self._question}.")
            return
        if partial is not None:
            remove_from_results(self.project, partial)
        self.answered.emit(self._question, f"Failed: {error}")
        self.notifier.error(str(error), getattr(error, "kind", "failed"))

    def _done(self, task: JobTask, partial: QgsVectorLayer | None) -> None:
        result = task.status.get("result") or {}
        kind = result.get("task", task.body["task"])
        answer, zoom = split_roles(result.get("features") or [])
        name = self._layer_name(task.body)
        skipped = 0
        if partial is not None and partial.crs() == crs_from_text(result.get("crs")):
            layer = partial
            layer.setName(name)
            skipped += replace_features(layer, answer)
        else:
            if partial is not None:
                remove_from_results(self.project, partial)
            layer, skipped = build_layer(name, answer, result.get("crs"), STYLES[kind])
            add_to_results(self.project, layer)
        self._describe(layer, task.body, result.get("model"))
        if self._described is not None:
            remove_from_results(self.project, layer)
            source, chosen = self._described
            texts = {int(f.get("properties", {}).get("region", -1)): f.get("properties", {}).get("text") for f in answer}
            layer = described_layer(name, source, chosen, [texts.get(i) for i in range(len(chosen))])
            add_to_results(self.project, layer)
        self.result_layers.append(layer)
        if zoom:
            zoom_layer, zoom_skipped = build_layer(self._layer_name(task.body, "zoom"), zoom, result.get("crs"), STYLES["zoom"])
            self._describe(zoom_layer, task.body, result.get("model"))
            add_to_results(self.project, zoom_layer)
            self.result_layers.append(zoom_layer)
            skipped += zoom_skipped
        for warning in result.get("warnings") or []:
            log(f"backend warning: {warning}")
        if skipped:
            log(f"{skipped} feature(s) of the answer had no usable geometry and were left out")
        text = result.get("text")
        if TASKS[kind].text_answer:
            shown = text if text else "(no answer)"
            self.history.append(HistoryEntry(self._question, shown, name))
            self.history_changed.emit()
            self.answered.emit(self._question, shown)
            self.notifier.success(f"{self._question} → {shown[:200]}")
        else:
            found = f"{layer.featureCount()} feature(s) in '{name}'"
            self.history.append(HistoryEntry(self._question, f"{layer.featureCount()} feature(s)", name))
            self.history_changed.emit()
            self.answered.emit(self._question, found)
            self.notifier.success(f"{self._question}: {found}.")

    # --- results and reports ---

    def save_geopackage(self, layer: QgsVectorLayer, path: str) -> str | None:
        try:
            written = save_geopackage(layer, path)
        except OSError as exc:
            self.notifier.error(f"Could not save '{layer.name()}' to {path}: {exc}. Choose another file.")
            return None
        self.notifier.success(f"Saved '{layer.name()}' to {written}.")
        return written

    def diagnostics(self) -> str:
        return diagnostics_text(self.settings().redacted(), self.backend_status, self.backend.state, self.backend.lines, self.notifier.errors,
                                install_log(backend_prefix(self.settings())))

    def unload(self) -> None:
        """Cancel the job (its task ends on its own), stop the child backend."""
        if self.task is not None:
            self.task.on_finished = lambda task: None
            self.task.cancel()
            self.task = None
        if self.status_task is not None:
            self.status_task.on_finished = lambda task: None
            self.status_task = None
        if self.install_task is not None:
            self.install_task.on_finished = lambda task: None
            self.install_task.cancel()
            self.install_task = None
        self.backend.stop()


def describe_backend(connection: Connection, model: dict) -> str:
    memory = model.get("memory") or {}
    used = memory.get("allocated_bytes") or memory.get("rss_bytes")
    parts = [
        model.get("model", "?"),
        f"{model.get('device') or '?'}" + (f" {model['dtype']}" if model.get("dtype") else ""),
        f"{model.get('quantize')} quantised" if model.get("quantize") not in (None, "none") else "",
        f"{used / 2**30:.1f} GiB" if used else "",
        connection.url,
    ]
    return " · ".join(part for part in parts if part)
