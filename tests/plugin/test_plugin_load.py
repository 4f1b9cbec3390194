"""The plugin loads into QGIS and unloads without leaving anything behind."""

from __future__ import annotations

import ast
import sys

from qgis.core import QgsApplication

import qgis_plugin

from .conftest import REPO

FORBIDDEN_IMPORTS = ("torch", "transformers", "rasterio", "numpy", "backend", "training", "PyQt5", "PyQt6", "osgeo", "requests", "httpx")


def test_load_and_unload_leaves_nothing_behind(qgis_iface, settings):
    registry = QgsApplication.processingRegistry()
    for _ in range(2):  # a second load after unload works like the first (plugin reloader)
        plugin = qgis_plugin.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("rscovlm") is not None
        assert plugin.dock is not None and plugin.dock.windowTitle() == "RSCoVLM"
        assert [a.text() for a in plugin.actions] == ["RSCoVLM", "Settings…", "Models…", "Copy diagnostics"]
        canvas = qgis_iface.mapCanvas()
        plugin.dock.draw_extent()
        assert canvas.mapTool() is plugin.dock.extent_tool
        plugin.unload()
        assert registry.providerById("rscovlm") is None
        assert plugin.dock is None and plugin.controller is None and plugin.models is None and plugin.actions == []
        assert canvas.mapTool() is None


def test_init_processing_alone_registers_the_provider(qgis_iface):
    """What qgis_process does: initProcessing without initGui."""
    plugin = qgis_plugin.classFactory(qgis_iface)
    plugin.initProcessing()
    provider = QgsApplication.processingRegistry().providerById("rscovlm")
    try:
        assert sorted(a.name() for a in provider.algorithms()) == [
            "ask", "caption", "change", "classify", "describe", "detect", "export_training_data", "fine_tune", "ground", "reinforce"
        ]
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("rscovlm") is None


def test_the_plugin_imports_nothing_from_the_backend_side():
    assert not any(name in sys.modules for name in ("torch", "transformers", "rasterio", "backend", "training"))


def test_sources_keep_the_plugin_rules():
    """QGIS's own Python only: no backend-side packages, Qt through qgis.PyQt, exec() not exec_()."""
    problems = []
    for path in sorted((REPO / "qgis_plugin").rglob("*.py")):
        source = path.read_text()
        if "exec_(" in source:
            problems.append(f"{path.name}: exec_()")
        for node in ast.walk(ast.parse(source)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            problems += [f"{path.name}: import {n}" for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS]
    assert problems == []
