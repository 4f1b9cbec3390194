"""Run by the QGIS desktop app (`qgis --code docs/screenshot.py`, see `make screenshot`): with the
plugin installed from dist/rscovlm_qgis.zip into a throwaway profile, add the sample raster,
open the RSCoVLM dock, start the local backend from the plugin, detect every class the model
knows, describe the scene and ask a question through the Zoom-in Chain, and save a picture of
the main window to $RSCOVLM_SHOT_OUT. Then stop the backend and quit.

Settings come from the environment: RSCOVLM_SHOT_RASTER, RSCOVLM_SHOT_COMMAND (the backend's
`rscovlm`), RSCOVLM_SHOT_MODEL, RSCOVLM_SHOT_OUT.
"""

import os
import sys

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

GIVE_UP_MS = 600_000


def finish(status: int) -> None:
    plugin = plugins.get("rscovlm_qgis")
    if plugin is not None and plugin.controller is not None:
        plugin.controller.stop_backend()
    # QGIS 3.40 crashes in exit() while the project holds a layer group: empty it first.
    QgsProject.instance().clear()
    QgsApplication.exit(status)


def shoot() -> None:
    QgsApplication.processEvents()
    for item in iface.messageBar().items():
        print(f"screenshot: message bar: {item.title()}: {item.text()}", file=sys.stderr)
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
    browser, layers = window.findChild(QDockWidget, "Browser"), window.findChild(QDockWidget, "Layers")
    if browser is not None:
        browser.hide()  # room for the Layers panel, where the results and their legend are
    if layers is not None:
        window.resizeDocks([layers], [330], Qt.Orientation.Horizontal)
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
        dock.dota_classes.setCheckedItems([dock.dota_classes.itemText(i) for i in range(dock.dota_classes.count())])
        dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("layer"))
        dock.run()

    def describe() -> None:
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("caption"))
        dock.run()

    def ask() -> None:
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("ask"))
        dock.text_edit.setText(os.environ.get("RSCOVLM_SHOT_QUESTION", "What colour is the plane?"))
        dock.zoom.setCurrentText("on")
        dock.run()

    questions.extend([detect, describe, ask])

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
