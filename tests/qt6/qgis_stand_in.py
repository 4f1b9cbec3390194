"""A stand-in for QGIS's Python packages over real PyQt6, for importing the plugin as QGIS 4
(Qt6) would: `qgis.PyQt.QtX` is PyQt6's module, and every `qgis.core` / `qgis.gui` name is an
empty class whose attributes are again such classes (so `QgsTask.Flag.CanCancel` and
subclassing work at import time). Only Qt's side is real; QGIS's API is checked on 3.40 by
tests/plugin/test_qt6_ready.py."""

from __future__ import annotations

import importlib
import sys
import types


class _StandInType(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandInType(name, (StandIn,), {})

    def __or__(cls, other):  # QgsTask.Flag.CanCancel | QgsTask.Flag.Silent
        return cls

    __ror__ = __or__


class StandIn(metaclass=_StandInType):
    def __init__(self, *args, **kwargs):
        pass


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandInType(name, (StandIn,), {})


def install() -> None:
    """Put `qgis`, `qgis.PyQt.*` (PyQt6), `qgis.core` and `qgis.gui` into sys.modules."""
    qgis = types.ModuleType("qgis")
    qgis.__path__ = []
    pyqt = types.ModuleType("qgis.PyQt")
    pyqt.__path__ = []
    sys.modules.update({"qgis": qgis, "qgis.PyQt": pyqt})
    for name in ("QtCore", "QtGui", "QtWidgets", "QtNetwork", "QtXml"):
        sys.modules[f"qgis.PyQt.{name}"] = importlib.import_module(f"PyQt6.{name}")
    for name in ("core", "gui"):
        sys.modules[f"qgis.{name}"] = _StandInModule(f"qgis.{name}")
