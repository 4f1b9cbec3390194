"""Telling the user: message bar entries (with a button to the settings or the log where that
helps), lines in the message log under "RSCoVLM", and the last errors kept for diagnostics.

The bar shows one RSCoVLM entry at a time: each message replaces the plugin's previous one, so a
session of jobs does not stack up entries, except that news (a job done, cancelled) leaves an
error standing until the user closes it or a newer problem replaces it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

from .jobs import log

TITLE = "RSCoVLM"
# Which button helps with which failure: a wrong URL or token is fixed in the settings; a job
# the backend refused or that failed is explained in the log.
BUTTON_FOR_KIND = {
    "not running": "settings",
    "unreachable": "settings",
    "token": "settings",
    "timeout": "log",
    "rejected": "log",
    "failed": "log",
    "server": "log",
    "backend": "log",
    "install": "log",  # the installer's output is in its log file, quoted by Copy diagnostics
    "version": "settings",
}


class Notifier:
    def __init__(self, iface, open_settings: Callable[[], None]):
        self.iface = iface
        self.open_settings = open_settings
        self.errors: deque[str] = deque(maxlen=20)
        self._shown = None  # the bar entry this notifier pushed last, and its level
        self._shown_level: Qgis.MessageLevel | None = None

    def error(self, message: str, kind: str = "") -> None:
        self.errors.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{kind or 'error'}] {message}")
        log(message, Qgis.MessageLevel.Critical if kind in ("failed", "server", "backend") else Qgis.MessageLevel.Warning)
        self._push(message, Qgis.MessageLevel.Critical, BUTTON_FOR_KIND.get(kind), 0)

    def warning(self, message: str) -> None:
        log(message, Qgis.MessageLevel.Warning)
        self._push(message, Qgis.MessageLevel.Warning, "log", 10)

    def success(self, message: str) -> None:
        log(message, Qgis.MessageLevel.Success)
        self._push(message, Qgis.MessageLevel.Success, None, 5)

    def info(self, message: str) -> None:
        log(message)
        self._push(message, Qgis.MessageLevel.Info, None, 5)

    def _push(self, message: str, level: Qgis.MessageLevel, button: str | None, duration: int) -> None:
        bar = self.iface.messageBar()
        news = level in (Qgis.MessageLevel.Success, Qgis.MessageLevel.Info)
        if self._shown is not None and not (news and self._shown_level == Qgis.MessageLevel.Critical):
            if self._shown in bar.items():  # not closed by the user nor timed out
                bar.popWidget(self._shown)
        item = bar.createMessage(TITLE, message)
        if button == "settings":
            widget = QPushButton("Open settings")
            widget.clicked.connect(self.open_settings)
            item.layout().addWidget(widget)
        elif button == "log":
            widget = QPushButton("Open log")
            widget.clicked.connect(self.iface.openMessageLog)
            item.layout().addWidget(widget)
        bar.pushWidget(item, level, duration)
        self._shown, self._shown_level = item, level
