"""The dock's parts without a backend: settings, classes, extent drawing, diagnostics, saving,
and the pure request and connection rules."""

from __future__ import annotations

import json

import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication

from qgis_plugin.client import BackendError, Connection, resolve_connection
from qgis_plugin.controller import Controller
from qgis_plugin.dock import EXTENT_DRAWN, RSCoVLMDock
from qgis_plugin.layers import build_layer
from qgis_plugin.settings import PluginSettings
from qgis_plugin.settings_dialog import SettingsDialog
from qgis_plugin.task_request import RequestProblem, build_request, describe_request, request_abstract, short_name, split_classes

from .conftest import bar_messages


@pytest.fixture
def dock(qgis_iface, qgis_new_project, clean_bar, settings):
    controller = Controller(qgis_iface)
    dock = RSCoVLMDock(qgis_iface, controller, lambda: None)
    yield dock
    dock.cleanup()
    controller.unload()
    dock.deleteLater()


def test_settings_dialog_round_trip(settings, qgis_parent):
    settings.token = "secret"
    dialog = SettingsDialog(settings, qgis_parent)
    assert dialog.local.isChecked()
    dialog.remote.setChecked(True)
    dialog.url.setText(" http://gpu-box:8000 ")
    dialog.model.setText("Qingyun/RSCoVLM-7B-2512")
    dialog.quantize.setCurrentText("4bit")
    dialog.device.setCurrentText("cuda")
    dialog.upload.setChecked(True)
    dialog.values().save()
    loaded = PluginSettings.load()
    assert loaded.upload_rasters is True
    assert (loaded.mode, loaded.url, loaded.token, loaded.model, loaded.quantize, loaded.device) == (
        "remote", "http://gpu-box:8000", "secret", "Qingyun/RSCoVLM-7B-2512", "4bit", "cuda"
    )  # fmt: skip
    assert loaded.batch_size == 4 and isinstance(loaded.timeout_s, int)


def test_classes_from_the_picker_in_the_users_order_and_the_text(dock):
    dock.task_combo.setCurrentIndex(dock.task_combo.findData("detect"))
    assert dock.dota_classes.count() == 15  # DOTA-v1.0's, RSCoVLM's list, until a backend says its own
    dock.dota_classes.setItemCheckState(dock.dota_classes.findText("ship"), Qt.CheckState.Checked)
    dock.dota_classes.setItemCheckState(dock.dota_classes.findText("plane"), Qt.CheckState.Checked)
    dock.classes_edit.setText("ship, fishing boat;  ")
    assert dock.classes() == ["ship", "plane", "fishing boat"]
    dock.task_combo.setCurrentIndex(dock.task_combo.findData("classify"))
    assert not dock.dota_classes.isVisibleTo(dock) and dock.classes_edit.isVisibleTo(dock)
    assert dock.classes() == ["ship", "fishing boat"]  # scene classes: the text only


def test_drawn_rectangle_becomes_the_extent(dock, qgis_iface):
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
    dock.draw_extent()
    assert canvas.mapTool() is dock.extent_tool
    drawn = QgsRectangle(500000, 4400000, 500100, 4400100)
    dock.extent_tool.extentChanged.emit(drawn)
    assert dock.extent_combo.currentData() == EXTENT_DRAWN
    assert canvas.mapTool() is not dock.extent_tool
    what = dock.run_input()
    assert what.extent == drawn and what.extent_crs.authid() == "EPSG:32633"
    assert dock.rubber_band.asGeometry().boundingBox() == drawn


def test_drawn_mode_without_a_rectangle_is_refused(dock):
    dock.extent_combo.setCurrentIndex(dock.extent_combo.findData(EXTENT_DRAWN))
    assert not dock.run()
    assert "No rectangle is drawn yet" in bar_messages(dock.iface)[-1][0]


def test_diagnostics_hide_the_token(dock, settings):
    settings.token = "very-secret-token"
    settings.save()
    dock.controller.notifier.error("something failed", "failed")
    dock.copy_diagnostics()
    text = QApplication.clipboard().text()
    assert "QGIS 3." in text and "Python 3." in text and "plugin 0.1.0" in text
    assert "very-secret-token" not in text and '"token": "(set)"' in text
    assert "[failed] something failed" in text


def test_saving_to_a_missing_folder_says_so(dock, tmp_path):
    layer, _ = build_layer("Detections", [], "EPSG:32633")
    assert dock.controller.save_geopackage(layer, str(tmp_path / "nowhere" / "x.gpkg")) is None
    assert "Could not save 'Detections'" in bar_messages(dock.iface)[-1][0]
    assert dock.controller.save_geopackage(layer, str(tmp_path / "x")) == str(tmp_path / "x.gpkg")


def test_build_request():
    body = build_request("detect", "/d/s.tif", (1, 2, 3, 4), "EPSG:32633", [" plane", "ship", "plane", ""], tile_size=256, gsd=0.5)
    assert body == {
        "task": "detect", "raster": "/d/s.tif", "extent": [1.0, 2.0, 3.0, 4.0], "extent_crs": "EPSG:32633",
        "classes": ["plane", "ship"], "options": {"tile_size": 256, "gsd": 0.5},
    }  # fmt: skip
    assert describe_request(body) == "Detect objects: plane, ship"
    ask = build_request("ask", "s.tif", text="  How many?  ", zoom="on")
    assert ask["question"] == "How many?" and ask["options"] == {"zoom": "on"} and "extent" not in ask
    # what the user left alone stays unset, for the backend to fill from its model
    assert "options" not in build_request("detect", "s.tif", classes=["ship"], tile_size=None, zoom="auto")
    for task, kwargs, problem in (
        ("ground", {}, "No expression given"),
        ("ask", {"text": " "}, "No question given"),
        ("classify", {"classes": []}, "scene classes"),
        ("segment", {}, "Unknown task"),
        ("change", {"classes": ["building"]}, "No later raster given"),
        ("change", {"raster_after": "b.tif"}, "whose changes to find"),
    ):
        with pytest.raises(RequestProblem, match=problem):
            build_request(task, "s.tif", **kwargs)
    change = build_request("change", "a.tif", classes=["building"], raster_after="b.tif", change_kinds=["appeared", "disappeared"], tile_size=448)
    assert change == {"task": "change", "raster": "a.tif", "raster_after": "b.tif", "classes": ["building"],
                      "options": {"tile_size": 448, "change_kinds": ["appeared", "disappeared"]}}  # fmt: skip
    assert "options" not in build_request("change", "a.tif", classes=["building"], raster_after="b.tif", change_kinds=["changed"])
    assert build_request("change_caption", "a.tif", raster_after="b.tif", tile_size=448) == {"task": "change_caption", "raster": "a.tif", "raster_after": "b.tif"}
    assert split_classes("plane, ship;small vehicle\nplane") == ["plane", "ship", "small vehicle"]


def test_resolve_connection(settings, tmp_path):
    settings.server_file = str(tmp_path / "server.json")
    with pytest.raises(BackendError, match="not running") as raised:
        resolve_connection(settings)
    assert raised.value.kind == "not running"
    (tmp_path / "server.json").write_text("{not json")
    with pytest.raises(BackendError):
        resolve_connection(settings)
    (tmp_path / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:5000/", "token": "t"}))
    found = resolve_connection(settings)
    assert (found.url, found.token, found.is_local) == ("http://127.0.0.1:5000", "t", True)
    child = Connection("http://127.0.0.1:6000", "c", "child")
    assert resolve_connection(settings, child) is child
    settings.mode, settings.url, settings.token = "remote", "http://gpu-box:8000/", "r"
    remote = resolve_connection(settings, child)
    assert (remote.url, remote.is_local) == ("http://gpu-box:8000", False)
    settings.url = " "
    with pytest.raises(BackendError, match="No backend URL"):
        resolve_connection(settings)


def test_the_dock_offers_what_the_backends_model_was_trained_on(dock):
    """GET /model's defaults (here the demo checkpoint's): its tile and detection GSD as their
    fields' defaults, its classes in the picker; a request with the default tile leaves
    tile_size unset."""
    defaults = {"options": {"tile_size": 224}, "tasks": {"detect": {"gsd": 0.15}},
                "classes": ["building", "large vehicle", "plane", "ship", "small vehicle", "storage tank"]}
    assert dock.gsd.text() == "native"  # before a backend says otherwise
    dock.task_combo.setCurrentIndex(dock.task_combo.findData("detect"))
    dock.dota_classes.setItemCheckState(dock.dota_classes.findText("ship"), Qt.CheckState.Checked)
    dock.controller.backend_status = {"model": {"model": "demo", "defaults": defaults}}
    dock._show_status("running", "demo")
    assert [dock.dota_classes.itemText(i) for i in range(dock.dota_classes.count())] == defaults["classes"]
    assert dock.classes() == ["ship"]  # a ticked class the model knows stays ticked
    assert dock.tile_size.value() == 0 and dock.tile_size.text() == "model default (224 px)"
    assert dock.gsd.value() == 0 and dock.gsd.text() == "model default (detection at 0.15 m/px)"
    assert dock.run_input().tile_size is None and dock.run_input().gsd is None
    dock.tile_size.setValue(448)
    assert dock.run_input().tile_size == 448


def test_short_layer_names_and_the_whole_request_beside_them():
    body = build_request("detect", "/d/s.tif", classes=["plane", "ship", "storage tank", "large vehicle", "small vehicle", "building"])
    assert short_name(body, 3) == "Detect plane, ship +4 #3"
    ask = build_request("ask", "/d/s.tif", text="What colour is the roof of the largest hangar?", zoom="on")
    assert short_name(ask, 5) == "Ask What colour is the roof… #5" and short_name(ask, 5, "zoom") == "Zoom What colour is the roof… #5"
    assert short_name(build_request("caption", "/d/s.tif"), 6) == "Caption #6"
    abstract = request_abstract(body, "scene (sample)", "resources/models/demo")
    assert abstract.startswith("Detect objects: plane, ship, storage tank, large vehicle, small vehicle, building\nRaster layer: scene (sample)")
    assert '"raster": "/d/s.tif"' in abstract and "Model: resources/models/demo" in abstract
