"""Compare two dates from the dock: the second raster picker, what is sent, and the changes as a
styled layer in the earlier raster's CRS, over the real service (scripted model words)."""

from __future__ import annotations

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from qgis_plugin.controller import Controller
from qgis_plugin.dock import RSCoVLMDock
from qgis_plugin.layers import GROUP_NAME

from .conftest import bar_messages, wait_until

pytestmark = pytest.mark.backend


def test_compare_two_dates_through_the_dock(qgis_iface, qgis_new_project, clean_bar, settings, scripted_backend, scene_tif, later_scene_tif):
    settings.mode, settings.url, settings.token, settings.poll_interval_ms = "remote", scripted_backend.url, scripted_backend.token, 50
    settings.save()
    before, after = QgsRasterLayer(str(scene_tif), "2021"), QgsRasterLayer(str(later_scene_tif), "2024")
    QgsProject.instance().addMapLayers([before, after])
    controller = Controller(qgis_iface)
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    try:
        dock.layer_combo.setLayer(before)
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("change"))
        assert dock.after_combo.isVisibleTo(dock) and dock.change_kinds.isVisibleTo(dock) and dock.dota_classes.isVisibleTo(dock)
        assert dock.raster_label.text() == "Earlier raster" and dock.after_combo.currentLayer() is after  # never the earlier one again
        dock.classes_edit.setText("building")
        dock.change_kinds.setCurrentIndex(dock.change_kinds.findText("appeared"))
        dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("layer"))
        assert dock.run()
        body = controller.task.body
        assert body["raster_after"] == str(later_scene_tif) and body["classes"] == ["building"]
        assert body["options"] == {"change_kinds": ["appeared"]}
        wait_until(lambda: not controller.running, 120, "the comparison to finish")
        group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
        [layer] = [node.layer() for node in group.findLayers()]
        assert layer.name() == f"Changes building #{controller._jobs_run}" and layer.crs().authid() == "EPSG:32633"
        rows = list(layer.getFeatures())
        assert rows and {(f["label"], f["change"], f["date_before"], f["date_after"]) for f in rows} == {("building", "appeared", "scene", "scene-later-3857")}
        assert all(before.extent().contains(f.geometry().boundingBox()) for f in rows)
        assert [c.value() for c in layer.renderer().categories()] == ["appeared", "disappeared", "changed"]  # coloured by the kind of change
        assert "Raster layer: 2021" in layer.metadata().abstract()
        # the same raster as both dates is refused before anything is sent
        dock.after_combo.setExceptedLayerList([])
        dock.after_combo.setLayer(before)
        clean_bar.messageBar().clearWidgets()
        assert not dock.run() and any("chosen as both dates" in text for text, _ in bar_messages(qgis_iface))
        # describing the changes answers in words, in the history
        dock.after_combo.setLayer(after)
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("change_caption"))
        assert not dock.change_kinds.isVisibleTo(dock) and not dock.dota_classes.isVisibleTo(dock)
        assert dock.run() and controller.task.body["task"] == "change_caption"
        wait_until(lambda: not controller.running, 120, "the description to finish")
        assert controller.history[-1].question == "Describe the changes" and controller.history[-1].answer
    finally:
        dock.cleanup()
        dock.deleteLater()
        controller.unload()
