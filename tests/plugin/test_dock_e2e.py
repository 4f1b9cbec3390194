"""End to end through the dock and its controller: a real `rscovlm serve` with the tiny
checkpoint answers, and the answer lands as a layer in the project with the raster's CRS."""

from __future__ import annotations

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsTask,
)
from qgis.PyQt.QtCore import Qt

from qgis_plugin.controller import Controller, RunInput
from qgis_plugin.dock import EXTENT_LAYER, RSCoVLMDock
from qgis_plugin.layers import GROUP_NAME

from .conftest import bar_messages, wait_until

pytestmark = pytest.mark.backend
STANDARD_FIELDS = ["task", "label", "model", "prompt", "tile", "raw_text", "text", "role"]


@pytest.fixture
def controller(qgis_iface, qgis_new_project, clean_bar):
    controller = Controller(qgis_iface)
    yield controller
    controller.unload()


@pytest.fixture
def scene_layer(scene_tif, qgis_new_project) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(scene_tif), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def result_layers(project: QgsProject) -> list:
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    return [node.layer() for node in group.findLayers()] if group else []


def finish(controller: Controller, timeout_s: float = 120.0) -> None:
    wait_until(lambda: not controller.running, timeout_s, "the job to finish")


def test_detection_through_the_controller(controller, use_backend, scene_layer, tiny_checkpoint):
    progress = []
    controller.progressed.connect(lambda done, total: progress.append((done, total)))
    assert controller.run(RunInput(scene_layer, "detect", ["plane", "ship"], tile_size=512))
    assert controller.running
    finish(controller)
    [layer] = result_layers(QgsProject.instance())
    assert layer.crs() == scene_layer.crs() and layer.crs().authid() == "EPSG:32633"
    assert layer.fields().names()[: len(STANDARD_FIELDS)] == STANDARD_FIELDS
    assert layer.name() == f"Detect plane, ship #{controller._jobs_run}"
    assert "Raster layer: scene" in layer.metadata().abstract() and '"classes": [\n    "plane",' in layer.metadata().abstract()
    assert progress and progress[-1] == (9, 9)  # 1024 px at 512 px tiles with 128 px overlap: 3 x 3
    assert controller.history[-1].question == "Detect objects: plane, ship"
    assert any(level == Qgis.MessageLevel.Success for _, level in bar_messages(controller.iface))
    for feature in layer.getFeatures():
        assert feature["task"] == "detect" and feature["model"] == str(tiny_checkpoint)


def test_question_through_the_dock_widgets(controller, use_backend, scene_layer, qgis_iface):
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    dock.layer_combo.setLayer(scene_layer)
    dock.task_combo.setCurrentIndex(dock.task_combo.findData("ask"))
    assert dock.text_edit.isVisibleTo(dock) and not dock.dota_classes.isVisibleTo(dock)
    dock.text_edit.setText("How many ships are there?")
    dock.extent_combo.setCurrentIndex(dock.extent_combo.findData(EXTENT_LAYER))
    assert dock.run()
    finish(controller)
    [layer] = result_layers(QgsProject.instance())
    assert layer.crs().authid() == "EPSG:32633" and layer.featureCount() == 1
    feature = next(layer.getFeatures())
    assert feature["task"] == "ask" and feature["prompt"].startswith("How many ships are there?")
    assert controller.history[-1].answer in (feature["text"], "(no answer)")
    assert layer.extent() == scene_layer.extent()  # the answer covers the extent asked about
    assert dock.history_list.count() == 1 and dock.history_list.item(0).text().startswith("Ask: How many ships are there? → ")
    assert "How many ships" in dock.answer_view.toPlainText()
    assert dock.result_combo.count() == 1
    dock.cleanup()
    dock.deleteLater()


def test_canvas_extent_is_sent_in_the_canvas_crs(controller, use_backend, scene_layer, qgis_iface):
    """A part of the raster seen through a canvas in another CRS (lon/lat)."""
    canvas = qgis_iface.mapCanvas()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    canvas.setDestinationCrs(wgs84)
    part = QgsRectangle(500100.0, 4400100.0, 500200.0, 4400200.0)
    canvas.setExtent(QgsCoordinateTransform(scene_layer.crs(), wgs84, QgsProject.instance()).transformBoundingBox(part))
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    dock.layer_combo.setLayer(scene_layer)
    dock.task_combo.setCurrentIndex(dock.task_combo.findData("caption"))
    assert dock.run()
    finish(controller)
    [layer] = result_layers(QgsProject.instance())
    assert layer.crs().authid() == "EPSG:32633"
    seen = QgsCoordinateTransform(wgs84, scene_layer.crs(), QgsProject.instance()).transformBoundingBox(canvas.extent())
    expected = seen.intersect(scene_layer.extent())
    extent = layer.extent()
    assert expected.area() < scene_layer.extent().area() / 4  # a part, not the whole raster
    for got, want in zip((extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
                         (expected.xMinimum(), expected.yMinimum(), expected.xMaximum(), expected.yMaximum())):
        assert abs(got - want) <= 1.0  # within the raster's pixel grid (0.5 m)
    dock.cleanup()
    dock.deleteLater()
    canvas.setDestinationCrs(scene_layer.crs())


def test_cancel_stops_the_job(controller, use_backend, scene_layer, backend):
    from qgis_plugin.client import BackendClient

    assert controller.run(RunInput(scene_layer, "detect", ["plane"], tile_size=56))  # hundreds of tiles
    task = controller.task
    wait_until(lambda: task.status is not None or getattr(task, "_job_id", None) or task.progress() > 0, 60, "the job to start")
    controller.cancel()
    finish(controller, 60)
    jobs = BackendClient(backend).get("/jobs")
    latest = max(jobs, key=lambda j: j["submitted"])
    assert latest["state"] == "cancelled"
    assert latest["progress"]["done"] < latest["progress"]["total"]
    assert any("Cancelled" in text for text, _ in bar_messages(controller.iface))


def test_upload_when_the_backend_cannot_read_local_files(controller, use_backend, scene_layer, backend):
    """A backend in a container, say: the raster travels as an upload, removed afterwards."""
    from pathlib import Path

    use_backend.upload_rasters = True
    use_backend.save()
    assert controller.run(RunInput(scene_layer, "caption"))
    task = controller.task
    finish(controller)
    used = task.status["result"]["raster"]["path"]
    assert used != str(scene_layer.source()) and "rscovlm-uploads-" in used
    assert not Path(used).exists()  # the upload was deleted once the job was done
    [layer] = result_layers(QgsProject.instance())
    assert layer.crs().authid() == "EPSG:32633" and layer.extent() == scene_layer.extent()


def test_the_dock_asks_as_the_model_was_trained_and_says_how_each_job_ended(controller, settings, demo_like_backend, scene_layer, qgis_iface):
    """With the tile size left at 'model default' the backend cuts the model's own 224 px tiles
    (the CLI's 36 views on this 1024 px scene, not 9 of 512 px); the dock then shows what the
    model declares, the answer box and the progress bar speak of the last job only, and the bar
    holds one RSCoVLM entry however many jobs ran."""
    settings.mode, settings.url, settings.token, settings.poll_interval_ms = "remote", demo_like_backend.url, demo_like_backend.token, 50
    settings.save()
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    try:
        controller.refresh_status()
        wait_until(lambda: controller.backend_status is not None, 30, "the backend's status")
        assert dock.tile_size.text() == "model default (224 px)"
        assert [dock.dota_classes.itemText(i) for i in range(dock.dota_classes.count())] == ["building", "plane", "ship"]
        dock.layer_combo.setLayer(scene_layer)
        dock.extent_combo.setCurrentIndex(dock.extent_combo.findData(EXTENT_LAYER))
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("ask"))
        dock.text_edit.setText("Is there a harbor?")
        assert dock.run()
        finish(controller)
        assert dock.answer_view.toPlainText().startswith("Ask: Is there a harbor?\n→ ")
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("detect"))
        dock.dota_classes.setItemCheckState(dock.dota_classes.findText("ship"), Qt.CheckState.Checked)
        progress = []
        controller.progressed.connect(lambda done, total: progress.append((done, total)))
        assert dock.run()
        assert "options" not in controller.task.body  # nothing the user set: the model's defaults apply
        assert controller.task.flags() & QgsTask.Flag.Silent  # QGIS adds no "Task complete" of its own
        assert dock.answer_view.toPlainText() == "Detect objects: ship\n→ running…"  # not the last question's answer
        finish(controller)
        assert progress[-1] == (36, 36)
        assert dock.progress.text() == "" and dock.progress.value() == 0  # no stale '36 / 36 views'
        assert dock.answer_view.toPlainText().startswith("Detect objects: ship\n→ ") and "feature(s) in 'Detect ship #" in dock.answer_view.toPlainText()
        assert len(bar_messages(qgis_iface)) == 1 and bar_messages(qgis_iface)[0][0].startswith("Detect objects: ship: ")  # one entry
        names = [layer.name() for layer in result_layers(QgsProject.instance())]
        assert len(names) == len(set(names)) == 2
    finally:
        dock.cleanup()
        dock.deleteLater()


def test_describing_the_selected_features_of_a_layer(controller, use_backend, scene_layer, qgis_iface):
    """Describe features: the selected features (here two of three) are asked about, and come
    back as a layer of those features, attributes kept, with the answer in `description`."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorLayer
    from qgis.PyQt.QtCore import QMetaType

    sites = QgsVectorLayer("Polygon?crs=EPSG:32633", "sites", "memory")
    sites.dataProvider().addAttributes([QgsField("name", QMetaType.Type.QString)])
    sites.updateFields()
    for name, x in (("a", 500100.0), ("b", 500200.0), ("c", 500300.0)):
        feature = QgsFeature(sites.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, 4400100.0, x + 20.0, 4400120.0)))
        feature.setAttributes([name])
        sites.dataProvider().addFeature(feature)
    QgsProject.instance().addMapLayer(sites)
    sites.selectByIds([f.id() for f in sites.getFeatures() if f["name"] in ("a", "c")])
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    try:
        dock.layer_combo.setLayer(scene_layer)
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("describe"))
        assert dock.features_combo.isVisibleTo(dock) and not dock.zoom.isVisibleTo(dock)
        dock.features_combo.setLayer(sites)
        assert dock.run()
        body = controller.task.body
        assert len(body["regions"]) == 2 and body["extent_crs"] == "EPSG:32633" and "extent" not in body
        finish(controller)
        [layer] = result_layers(QgsProject.instance())
        assert layer.crs() == sites.crs() and layer.fields().names() == ["name", "description"]
        rows = {f["name"]: f for f in layer.getFeatures()}
        assert sorted(rows) == ["a", "c"] and all(isinstance(f["description"], str) for f in rows.values())
        assert rows["c"].geometry().boundingBox() == QgsRectangle(500300.0, 4400100.0, 500320.0, 4400120.0)
        assert '"description"' in layer.mapTipTemplate()
        # grounding asks for the polygon form when chosen; the chain's zoom is not offered for it
        dock.task_combo.setCurrentIndex(dock.task_combo.findData("ground"))
        assert dock.box_form.isVisibleTo(dock) and not dock.zoom.isVisibleTo(dock)
        dock.text_edit.setText("the white square")
        dock.box_form.setCurrentIndex(dock.box_form.findData("polygon"))
        assert dock.run()
        assert controller.task.body["options"]["box_form"] == "polygon" and "zoom" not in controller.task.body["options"]
        finish(controller)
    finally:
        dock.cleanup()
        dock.deleteLater()
        QgsProject.instance().removeMapLayer(sites.id())
