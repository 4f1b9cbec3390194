"""Rasters with no file behind them (here an XYZ tile layer, as from a tile server) are written
by QGIS for the chosen extent at canvas resolution to a temporary GeoTIFF, then asked about."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtGui import QColor, QImage

from qgis_plugin.controller import Controller, RunInput, canvas_pixel_size
from qgis_plugin.layers import GROUP_NAME
from qgis_plugin.raster_input import layer_file, prepare_raster, write_geotiff

from .conftest import wait_until

ZOOM = 16
WEB_MERCATOR_HALF = 20037508.342789244


def tile_bounds(x: int, y: int, z: int = ZOOM) -> QgsRectangle:
    size = 2 * WEB_MERCATOR_HALF / 2**z
    return QgsRectangle(-WEB_MERCATOR_HALF + x * size, WEB_MERCATOR_HALF - (y + 1) * size, -WEB_MERCATOR_HALF + (x + 1) * size, WEB_MERCATOR_HALF - y * size)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, int, int]:
    """3 x 3 tiles of 256 px at zoom 16 near 15 E, 39.7 N, each a different colour, as files."""
    root = tmp_path_factory.mktemp("tiles")
    x0 = int((15.0 + 180.0) / 360.0 * 2**ZOOM)
    lat = math.radians(39.7)
    y0 = int((1.0 - math.asinh(math.tan(lat)) / math.pi) / 2.0 * 2**ZOOM)
    for dx in range(3):
        for dy in range(3):
            image = QImage(256, 256, QImage.Format.Format_RGB32)
            image.fill(QColor.fromHsv((dx * 3 + dy) * 40, 200, 200))
            folder = root / str(ZOOM) / str(x0 + dx)
            folder.mkdir(parents=True, exist_ok=True)
            assert image.save(str(folder / f"{y0 + dy}.png"))
    return root, x0, y0


@pytest.fixture
def xyz_layer(tiles) -> QgsRasterLayer:
    """The tiles as an XYZ layer (what a tile server gives), made anew for each test."""
    root, x0, y0 = tiles
    uri = f"type=xyz&url=file://{root}/{{z}}/{{x}}/{{y}}.png&zmin={ZOOM}&zmax={ZOOM}"
    layer = QgsRasterLayer(uri, "tiles", "wms")
    assert layer.isValid(), layer.error().summary()
    layer.covered = QgsRectangle(tile_bounds(x0, y0 + 2).xMinimum(), tile_bounds(x0, y0 + 2).yMinimum(), tile_bounds(x0 + 2, y0).xMaximum(), tile_bounds(x0 + 2, y0).yMaximum())
    return layer


def show(canvas, layer: QgsRasterLayer, extent: QgsRectangle) -> None:
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    canvas.setExtent(extent)
    canvas.refresh()


def test_an_xyz_layer_has_no_file(xyz_layer):
    assert layer_file(xyz_layer) is None


def test_extent_written_at_canvas_resolution(xyz_layer, qgis_iface, tmp_path):
    canvas = qgis_iface.mapCanvas()
    inner = QgsRectangle(xyz_layer.covered)
    inner.scale(0.5)
    show(canvas, xyz_layer, inner)
    pixel = canvas_pixel_size(canvas, xyz_layer, QgsProject.instance())
    assert pixel == pytest.approx(canvas.mapUnitsPerPixel())
    raster = prepare_raster(xyz_layer, canvas.extent(), canvas.mapSettings().destinationCrs(), QgsProject.instance().transformContext(), pixel)
    assert raster.file is None and raster.crs_text == "EPSG:3857"
    shown = canvas.mapSettings().outputSize()  # the pixels the canvas draws the extent in
    assert (raster.export.columns, raster.export.rows) == (shown.width(), shown.height())
    written = QgsRasterLayer(write_geotiff(raster, str(tmp_path / "extent.tif"), QgsProject.instance().transformContext()), "written")
    assert written.isValid() and written.crs().authid() == "EPSG:3857" and written.bandCount() == 4
    assert (written.width(), written.height()) == (shown.width(), shown.height())
    assert written.extent().toString(2) == canvas.extent().toString(2)
    stats = written.dataProvider().bandStatistics(1)
    assert stats.maximumValue > stats.minimumValue  # the tiles' colours, not an empty image


@pytest.mark.backend
def test_a_question_about_an_xyz_layer(xyz_layer, qgis_iface, qgis_new_project, clean_bar, use_backend):
    QgsProject.instance().addMapLayer(xyz_layer, False)
    canvas = qgis_iface.mapCanvas()
    part = QgsRectangle(xyz_layer.covered)
    part.scale(0.4)
    show(canvas, xyz_layer, part)
    leftovers = set(Path(tempfile.gettempdir()).glob("rscovlm-qgis-*"))
    controller = Controller(qgis_iface)
    try:
        assert controller.run(RunInput(xyz_layer, "caption", extent=canvas.extent(), extent_crs=canvas.mapSettings().destinationCrs(),
                                       pixel_size=canvas_pixel_size(canvas, xyz_layer, QgsProject.instance())))
        wait_until(lambda: not controller.running, 120, "the job to finish")
        group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
        [answer] = [node.layer() for node in group.findLayers()]
        assert answer.crs().authid() == "EPSG:3857" and answer.featureCount() == 1
        assert answer.extent().toString(0) == canvas.extent().toString(0)
        assert set(Path(tempfile.gettempdir()).glob("rscovlm-qgis-*")) == leftovers  # the temporary GeoTIFF is gone
    finally:
        controller.unload()
        QgsProject.instance().removeMapLayer(xyz_layer.id())
