"""Bad input ends in a message bar entry that says what happened and what to do; nothing hangs
and nothing is left half-added to the project."""

from __future__ import annotations

import socket

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtGui import QColor, QImage
from qgis.PyQt.QtWidgets import QPushButton

from qgis_plugin.controller import Controller, RunInput
from qgis_plugin.layers import GROUP_NAME

from .conftest import bar_messages, wait_until


@pytest.fixture
def controller(qgis_iface, qgis_new_project, clean_bar):
    opened = []
    controller = Controller(qgis_iface, lambda: opened.append("settings"))
    controller.opened = opened
    yield controller
    controller.unload()


@pytest.fixture
def scene_layer(scene_tif, qgis_new_project) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(scene_tif), "scene")
    QgsProject.instance().addMapLayer(layer)
    return layer


def only_error(controller: Controller) -> str:
    """The one entry in the bar, which must be critical; its text."""
    [(text, level)] = bar_messages(controller.iface)
    assert level == int(Qgis.MessageLevel.Critical), text
    return text


def button_of(controller: Controller) -> str:
    [item] = controller.iface.messageBar().items()
    buttons = item.findChildren(QPushButton)
    return buttons[0].text() if buttons else ""


def nothing_added() -> bool:
    project = QgsProject.instance()
    return project.layerTreeRoot().findGroup(GROUP_NAME) is None and all(isinstance(layer, QgsRasterLayer) for layer in project.mapLayers().values())


def run_to_end(controller: Controller, what: RunInput, timeout_s: float = 60.0) -> None:
    """Start a job that the backend will refuse; wait until it ended."""
    assert controller.run(what)
    wait_until(lambda: not controller.running, timeout_s, "the job to end")


def test_no_raster_layer(controller, use_backend):
    assert not controller.run(RunInput(None, "detect", ["plane"]))
    assert "No raster layer is chosen" in only_error(controller)
    assert nothing_added()


def test_raster_without_crs(controller, use_backend, tmp_path, qgis_new_project):
    image = QImage(64, 64, QImage.Format.Format_RGB32)
    image.fill(QColor("darkgreen"))
    image.save(str(tmp_path / "plain.png"))
    layer = QgsRasterLayer(str(tmp_path / "plain.png"), "plain")
    assert layer.isValid() and not layer.crs().isValid()
    assert not controller.run(RunInput(layer, "caption"))
    text = only_error(controller)
    assert "'plain' has no CRS" in text and "Layer Properties" in text
    assert nothing_added()


def test_extent_outside_the_layer(controller, use_backend, scene_layer):
    far = QgsRectangle(600000.0, 4500000.0, 600100.0, 4500100.0)
    assert not controller.run(RunInput(scene_layer, "detect", ["ship"], extent=far, extent_crs=scene_layer.crs()))
    assert "outside raster layer 'scene'" in only_error(controller)
    assert nothing_added()


def test_no_classes(controller, use_backend, scene_layer):
    assert not controller.run(RunInput(scene_layer, "detect", [" ", ""]))
    assert "No classes given" in only_error(controller)


def test_backend_not_running(controller, settings, scene_layer, tmp_path):
    settings.mode = "local"
    settings.server_file = str(tmp_path / "no-server.json")
    settings.save()
    assert not controller.run(RunInput(scene_layer, "caption"))
    assert "backend is not running" in only_error(controller)
    assert button_of(controller) == "Open settings"
    controller.iface.messageBar().items()[0].findChildren(QPushButton)[0].click()
    assert controller.opened == ["settings"]
    assert nothing_added()


def test_backend_unreachable(controller, settings, scene_layer):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.mode, settings.url, settings.token = "remote", f"http://127.0.0.1:{port}", "x"
    settings.save()
    run_to_end(controller, RunInput(scene_layer, "caption"))
    text = only_error(controller)
    assert f"127.0.0.1:{port} is not reachable" in text and "Connection refused" in text
    assert button_of(controller) == "Open settings"
    assert nothing_added()


def test_backend_that_never_answers_times_out(controller, settings, scene_layer):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        settings.mode, settings.url, settings.timeout_s = "remote", f"http://127.0.0.1:{silent.getsockname()[1]}", 2
        settings.save()
        run_to_end(controller, RunInput(scene_layer, "caption"), 30)
    assert "did not answer within 2 s" in only_error(controller)
    assert nothing_added()


def test_wrong_token(controller, use_backend, scene_layer):
    use_backend.token = "not-the-token"
    use_backend.save()
    run_to_end(controller, RunInput(scene_layer, "caption"))
    text = only_error(controller)
    assert "refused the token (401)" in text and "server.json" in text
    assert button_of(controller) == "Open settings"
    assert nothing_added()


def test_job_the_backend_rejects(controller, use_backend, scene_layer):
    """A strip 1024 x 4 px: inside the raster, but no view the model can take (aspect > 200)."""
    strip = QgsRectangle(500000.0, 4400000.0, 500512.0, 4400002.0)
    run_to_end(controller, RunInput(scene_layer, "caption", extent=strip, extent_crs=scene_layer.crs()))
    text = only_error(controller)
    assert text.startswith("The backend rejected the request (400): cannot plan views for this extent")
    assert button_of(controller) == "Open log"
    assert nothing_added()


def test_a_second_run_while_one_runs_is_refused(controller, use_backend, scene_layer):
    assert controller.run(RunInput(scene_layer, "detect", ["plane"], tile_size=56))
    assert not controller.run(RunInput(scene_layer, "caption"))
    assert "already running" in bar_messages(controller.iface)[-1][0]
    controller.cancel()
    wait_until(lambda: not controller.running, 60, "the job to be cancelled")
