"""What a bug report needs, as plain text: versions, settings (without the token), the backend's
state and last output, and the last errors the user saw."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterable

from qgis.core import Qgis
from qgis.PyQt.QtCore import PYQT_VERSION_STR, QT_VERSION_STR

from .installer import PLUGIN_VERSION


def diagnostics_text(
    settings: dict,
    backend_status: dict | None,
    child_state: str,
    child_lines: Iterable[str],
    errors: Iterable[str],
    install_log: Iterable[str] = (),
) -> str:
    lines = [
        "RSCoVLM for QGIS diagnostics",
        f"plugin {PLUGIN_VERSION}; QGIS {Qgis.QGIS_VERSION}; Qt {QT_VERSION_STR}; PyQt {PYQT_VERSION_STR}",
        f"Python {sys.version.split()[0]}; {platform.platform()}",
        "",
        "settings: " + json.dumps(settings, sort_keys=True),
        f"local backend process: {child_state}",
        "backend status: " + (json.dumps(backend_status, sort_keys=True, default=str) if backend_status else "unknown"),
        "",
        "last errors:",
        *(f"  {line}" for line in errors),
        "",
        "backend output (last lines):",
        *(f"  {line}" for line in list(child_lines)[-40:]),
        "",
        "backend installer log (last lines):",
        *(f"  {line}" for line in list(install_log)[-60:]),
    ]
    return "\n".join(lines) + "\n"
