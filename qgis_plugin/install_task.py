"""Install backend... in QGIS: the installer (installer.py) run in a QgsTask, with its steps as
progress, its output in a log file beside the environment (which Copy diagnostics quotes), Cancel,
and QGIS's proxy settings passed on to pip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsSettings, QgsTask

from .installer import LOG_FILE, InstallError, install, proxy_url, shipped_backend_wheel
from .settings import PluginSettings, plugin_data_folder


def backend_prefix(settings: PluginSettings) -> Path:
    """Where the backend's environment is built: the settings' folder, by default one in the
    plugin's data folder."""
    return Path(settings.backend_folder) if settings.backend_folder else plugin_data_folder() / "backend"


def qgis_proxy() -> str | None:
    """Settings > Options > Network's proxy, as pip takes it."""
    stored = QgsSettings()
    enabled = str(stored.value("proxy/proxyEnabled", False)).lower() in ("true", "1")
    port = stored.value("proxy/proxyPort", 0)
    return proxy_url(enabled, str(stored.value("proxy/proxyHost", "") or ""), int(port or 0), str(stored.value("proxy/proxyUser", "") or ""),
                     str(stored.value("proxy/proxyPassword", "") or ""), str(stored.value("proxy/proxyType", "HttpProxy") or "HttpProxy"))


def install_log(prefix: Path) -> list[str]:
    path = prefix.parent / LOG_FILE
    return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []


class InstallBackendTask(QgsTask):
    """Builds the environment at `prefix`; `on_finished(task)` then reads `command` or `error`."""

    def __init__(self, prefix: Path, torch: str, bundle: Path | None, on_finished: Callable[[InstallBackendTask], None],
                 models_dir: Path | None = None):
        super().__init__("RSCoVLM: installing the backend", QgsTask.Flag.CanCancel)
        self.prefix, self.torch, self.bundle, self.on_finished = prefix, torch, bundle, on_finished
        self.models_dir = models_dir  # where a bundle's models go
        self.proxy = qgis_proxy()  # read here, in the main thread
        self.command: Path | None = None
        self.error: str | None = None

    def run(self) -> bool:
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        with open(self.prefix.parent / LOG_FILE, "w", encoding="utf-8") as log:

            def write(line: str) -> None:
                log.write(line + "\n")
                log.flush()

            def step(number: int, total: int, what: str) -> None:
                self.setDescription(f"RSCoVLM: installing the backend ({what})")
                self.setProgress(100.0 * (number - 1) / total)

            try:
                self.command = install(self.prefix, shipped_backend_wheel(), self.torch, self.bundle, proxy=self.proxy, log=write,
                                       should_stop=self.isCanceled, on_step=step, models_dir=self.models_dir)
                return True
            except InstallError as exc:
                self.error = str(exc)
            except OSError as exc:
                self.error = f"{exc}: check that {self.prefix.parent} is writable."
            write(f"error: {self.error}")
            return False

    def finished(self, result: bool) -> None:
        self.on_finished(self)
