"""A local backend as a child process of QGIS (QProcess, never blocking the UI thread).

QGIS runs with its own PYTHONPATH, PYTHONHOME, library paths and GDAL/PROJ settings; handed to
the backend's Python they would load QGIS's numpy and GDAL into it. So the child gets the user's
environment without them. Its token is made here and passed in the environment (not on the
command line, where `ps` would show it); its URL is read from the line it prints once it listens.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
from collections import deque
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from .client import Connection
from .environment import clean_environment
from .jobs import log
from .settings import PluginSettings

READY_LINE = re.compile(r"^serving (?P<model>.+) at (?P<url>https?://\S+)\s*$")
TOKEN_VARIABLE = "RSCOVLM_TOKEN"


def serve_command(settings: PluginSettings, server_file: str) -> list[str]:
    """The backend's command line. `command` is the `rscovlm` command (any launcher words before
    it, e.g. `conda run -n rs rscovlm`) or the Python of the backend's environment."""
    words = shlex.split(settings.command.strip(), posix=os.name != "nt") or ["rscovlm"]
    if Path(words[-1]).name.lower().startswith("python"):
        words += ["-c", "import sys; from backend.cli import main; sys.exit(main())"]
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--server-file", server_file]
    if settings.model.strip():
        args += ["--model", settings.model.strip()]
    if settings.adapter.strip():
        args += ["--adapter", settings.adapter.strip()]
    args += ["--device", settings.device, "--quantize", settings.quantize, "--batch-size", str(settings.batch_size)]
    args += ["--models-dir", str(settings.models_path())]
    return words + args


class LocalBackend(QObject):
    """Start, watch and stop one `rscovlm serve` child. Signals fire on the main thread."""

    ready = pyqtSignal(object)  # Connection
    # One line, why it did not start or why it stopped, and the kind of failure: 'not running'
    # (the command is wrong: the settings help) or 'backend' (it ran and failed: its log helps).
    failed = pyqtSignal(str, str)
    stopped = pyqtSignal()

    def __init__(self, parent: QObject | None = None, start_timeout_s: float = 900.0):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.connection: Connection | None = None
        self.start_timeout_s = start_timeout_s
        self.lines: deque[str] = deque(maxlen=200)  # the child's last output, for diagnostics
        self._token = ""
        self._stopping = False
        self._buffer = b""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._start_timed_out)

    @property
    def state(self) -> str:
        if self.process is None:
            return "stopped"
        return "running" if self.connection is not None else "starting"

    def start(self, settings: PluginSettings) -> None:
        if self.process is not None:
            return
        # The server file is where Processing algorithms and scripts find this backend too.
        command = serve_command(settings, settings.server_file_path())
        self._token = secrets.token_urlsafe(32)
        environment = QProcessEnvironment()
        for name, value in clean_environment(dict(os.environ)).items():
            environment.insert(name, value)
        environment.insert(TOKEN_VARIABLE, self._token)
        environment.insert("PYTHONUNBUFFERED", "1")
        self.process = QProcess(self)
        self.process.setProcessEnvironment(environment)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.errorOccurred.connect(self._error)
        self.process.finished.connect(self._finished)
        self.lines.clear()
        self._buffer = b""
        self._stopping = False
        log(f"starting the backend: {' '.join(shlex.quote(word) for word in command)}")
        self._timer.start(int(self.start_timeout_s * 1000))
        self.process.start(command[0], command[1:])

    def stop(self, wait_ms: int = 10000) -> None:
        """SIGTERM (the backend finishes the batch in flight and cancels the rest), then kill."""
        process = self.process
        if process is None:
            return
        self._stopping = True
        self._timer.stop()
        if process.state() != QProcess.ProcessState.NotRunning:
            process.terminate()
            if not process.waitForFinished(wait_ms):
                process.kill()
                process.waitForFinished(2000)
        self._cleanup()

    def _read(self) -> None:
        if self.process is None:
            return
        self._buffer += bytes(self.process.readAllStandardOutput())
        *complete, self._buffer = self._buffer.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.lines.append(line)
            log(f"backend: {line}")
            match = READY_LINE.match(line)
            if match and self.connection is None:
                self._timer.stop()
                self.connection = Connection(match["url"], self._token, "the backend started by QGIS")
                self.ready.emit(self.connection)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.process is not None:
            message = (
                f"The backend command could not be started ({self.process.errorString()}). Set the backend's "
                "`rscovlm` command or its Python in RSCoVLM settings."
            )
            log(message, Qgis.MessageLevel.Critical)
            self._cleanup()
            self.failed.emit(message, "not running")

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        if self.process is None:
            return
        self._read()
        was_running = self.connection is not None
        expected = self._stopping
        self._cleanup()
        if expected:
            return
        last = next((line for line in reversed(self.lines) if line.strip()), "no output")
        what = "stopped" if was_running else "exited before it was ready"
        message = f"The local backend {what} (exit status {code}): {last}"
        log(message, Qgis.MessageLevel.Critical)
        self.failed.emit(message, "backend")

    def _start_timed_out(self) -> None:
        if self.process is None or self.connection is not None:
            return
        self.stop()
        message = f"The local backend did not start within {self.start_timeout_s:g} s. See the RSCoVLM log for its output."
        log(message, Qgis.MessageLevel.Critical)
        self.failed.emit(message, "backend")

    def _cleanup(self) -> None:
        process, self.process = self.process, None
        self.connection = None
        self._timer.stop()
        if process is not None:
            for signal in (process.readyReadStandardOutput, process.errorOccurred, process.finished):
                try:
                    signal.disconnect()
                except TypeError:
                    pass
            process.deleteLater()
        self.stopped.emit()
