"""Icons and styles: in the plugin zip they sit in the plugin's own resources/ folder; in the
repository, in resources/ beside qgis_plugin/."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

_HERE = Path(__file__).resolve().parent
RESOURCES = _HERE / "resources" if (_HERE / "resources").is_dir() else _HERE.parent / "resources"


def icon_path(name: str) -> Path:
    return RESOURCES / "icons" / f"{name}.svg"


def icon(name: str) -> QIcon:
    return QIcon(str(icon_path(name)))


def style_path(name: str) -> Path:
    return RESOURCES / "styles" / f"{name}.qml"
