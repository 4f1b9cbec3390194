"""Run by the QGIS desktop app (`qgis --code docs/screenshot.py`, see `make screenshot`): with the
plugin installed from dist/rscovlm_qgis.zip into a throwaway profile, add the sample raster,
open the RSCoVLM dock, start the local backend from the plugin, ask two questions, and save a
picture of the main window to $RSCOVLM_SHOT_OUT. Then stop the backend and quit.

Settings come from the environment: RSCOVLM_SHOT_RASTER, RSCOVLM_SHOT_COMMAND (the backend's
`rscovlm`), RSCOVLM_SHOT_MODEL, RSCOVLM_SHOT_OUT.
"""

import os
import sys

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

GIVE_UP_MS = 600_000


def finish(status: int) -> None:
    plugin = plugins.get("rscovlm_qgis")
    if plugin is not None and plugin.controller is not None:
        plugin.controller.stop_backend()
    QgsProject.instance().setDirty(False)
    QgsApplication.exit(status)


def shoot() -> None:
    QgsApplication.processEvents()
    picture = iface.mainWindow().grab()
    ok = picture.save(os.environ["RSCOVLM_SHOT_OUT"])
    print(f"screenshot: saved {os.environ['RSCOVLM_SHOT_OUT']} ({picture.width()}x{picture.height()}): {ok}", file=sys.stderr)
    finish(0 if ok else 1)


def main() -> None:
    plugin = plugins["rscovlm_qgis"]
    settings = plugin.controller.settings()
    settings.mode, settings.command, settings.model, settings.device = "local", os.environ["RSCOVLM_SHOT_COMMAND"], os.environ["RSCOVLM_SHOT_MODEL"], "cpu"
    settings.server_file = os.path.join(QgsApplication.qgisSettingsDirPath(), "rscovlm-server.json")
    settings.save()

    window = iface.mainWindow()
    window.resize(1600, 1000)
    raster = QgsRasterLayer(os.environ["RSCOVLM_SHOT_RASTER"], "scene (sample)")
    QgsProject.instance().addMapLayer(raster)
    iface.mapCanvas().setExtent(raster.extent())
    plugin.actions[0].setChecked(True)  # the dock
    dock, controller = plugin.dock, plugin.controller
    dock.layer_combo.setLayer(raster)

    questions = []

    def ask_next() -> None:
        if not questions:
            view = iface.layerTreeView()
            group = QgsProject.instance().layerTreeRoot().findGroup("RSCoVLM results")
            if group is not None:
                view.setExpanded(view.node2index(group), True)
            QTimer.singleShot(2500, shoot)
            return
        questions.pop(0)()

    def detect() -> None:
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("detect"))
        dock.dota_classes.setCheckedItems(["plane", "ship", "small vehicle", "storage tank"])
        dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("layer"))
        dock.run()

    def ask() -> None:
        e = raster.extent()
        dock.drawn_extent = QgsRectangle(e.xMinimum() + e.width() * 0.15, e.yMinimum() + e.height() * 0.45, e.xMinimum() + e.width() * 0.55, e.yMinimum() + e.height() * 0.85)
        dock.drawn_crs = raster.crs()
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("ask"))
        dock.text_edit.setText("How many planes are parked?")
        dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("drawn"))
        dock.run()

    questions.extend([detect, ask])

    def on_status(state: str, text: str) -> None:
        print(f"screenshot: backend {state}: {text}", file=sys.stderr)
        if state == "running" and not getattr(on_status, "started", False):
            on_status.started = True
            ask_next()
        elif state == "error":
            finish(1)

    def on_running(running: bool) -> None:
        if not running:
            QTimer.singleShot(500, ask_next)

    controller.status_changed.connect(on_status)
    controller.running_changed.connect(on_running)
    controller.start_backend()
    QTimer.singleShot(GIVE_UP_MS, lambda: finish(1))


QTimer.singleShot(1000, main)
