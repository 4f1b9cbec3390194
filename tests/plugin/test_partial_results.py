"""Detections appear on the map as tiles are answered, before the job is done."""

from __future__ import annotations

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from qgis_plugin.controller import Controller, RunInput
from qgis_plugin.layers import GROUP_NAME

from .conftest import wait_until

pytestmark = pytest.mark.backend


def test_partial_detections_then_the_merged_result(qgis_iface, qgis_new_project, clean_bar, settings, scripted_backend, scene_tif):
    settings.mode, settings.url, settings.token, settings.poll_interval_ms = "remote", scripted_backend.url, scripted_backend.token, 50
    settings.save()
    raster = QgsRasterLayer(str(scene_tif), "scene")
    QgsProject.instance().addMapLayer(raster)
    controller = Controller(qgis_iface)
    seen = []  # (layer name, features) whenever a poll brought new features

    def record(status):
        layer = controller._partial
        seen.append((layer.name(), layer.featureCount(), status["progress"]["done"], status["progress"]["total"]))

    try:
        assert controller.run(RunInput(raster, "detect", ["plane", "ship"], tile_size=256))
        controller.task.partial.connect(record)
        wait_until(lambda: not controller.running, 120, "the job to finish")
    finally:
        controller.unload()
    partial = [entry for entry in seen if entry[2] < entry[3]]
    assert partial, f"no partial result arrived: {seen}"
    name, count, done, total = partial[0]
    assert name.endswith("(running)") and 0 < count and done < total
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    [layer] = [node.layer() for node in group.findLayers()]
    assert not layer.name().endswith("(running)")
    assert layer.crs().authid() == "EPSG:32633"
    labels = sorted({f["label"] for f in layer.getFeatures()})
    assert labels == ["plane", "ship"]
    assert layer.featureCount() >= 2 * (total - 1)  # two boxes per tile, some merged at tile overlaps
    assert [c.value() for c in layer.renderer().categories()] == ["plane", "ship"]
    assert all(f["raw_text"] and f["model"] == "scripted" for f in layer.getFeatures())


def test_a_cancelled_detection_keeps_its_partial_layer_by_its_own_name_and_leaves_no_stale_progress(
    qgis_iface, qgis_new_project, clean_bar, settings, scripted_backend, scene_tif
):
    from qgis_plugin.dock import RSCoVLMDock

    settings.mode, settings.url, settings.token, settings.poll_interval_ms = "remote", scripted_backend.url, scripted_backend.token, 50
    settings.save()
    raster = QgsRasterLayer(str(scene_tif), "scene")
    QgsProject.instance().addMapLayer(raster)
    controller = Controller(qgis_iface)
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    try:
        for _ in range(2):  # the same request twice, each cancelled once its first boxes are on the map
            assert controller.run(RunInput(raster, "detect", ["plane", "ship"], tile_size=256))
            wait_until(lambda: controller._partial is not None and controller._partial.featureCount() > 0, 60, "the first boxes")
            assert "/" in dock.progress.text()  # 'n / 25 views' while it runs
            controller.cancel()
            wait_until(lambda: not controller.running, 60, "the job to stop")
            assert dock.progress.text() == "" and dock.progress.value() == 0  # no stale 'n / 25 views'
        group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
        names = [node.layer().name() for node in group.findLayers()]
        assert len(names) == len(set(names)) == 2 and all(name.endswith("(cancelled)") for name in names), names
    finally:
        dock.cleanup()
        dock.deleteLater()
        controller.unload()
