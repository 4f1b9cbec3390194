"""Real GeoTIFFs through the dock's controller: answers come back in the raster's own CRS, an
EPSG one (RD New) and one with no EPSG code (GOES geostationary, named by WKT end to end)."""

from __future__ import annotations

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from qgis_plugin.controller import Controller, RunInput
from qgis_plugin.layers import GROUP_NAME

from .conftest import wait_until

pytestmark = [pytest.mark.backend]


@pytest.fixture
def controller(qgis_iface, qgis_new_project, clean_bar, use_backend):
    controller = Controller(qgis_iface)
    yield controller
    controller.unload()


def answer_layer(controller: Controller, what: RunInput):
    assert controller.run(what)
    wait_until(lambda: not controller.running, 120, "the job to finish")
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    assert group is not None, controller.notifier.errors
    [layer] = [node.layer() for node in group.findLayers()]
    return layer


def test_detection_on_a_real_orthophoto_in_rd_new(controller, realdata):
    raster = QgsRasterLayer(str(realdata / "geotiff" / "deepforest" / "test_tiled.tif"), "rd new")
    QgsProject.instance().addMapLayer(raster)
    layer = answer_layer(controller, RunInput(raster, "detect", ["ship", "storage tank"], tile_size=512))
    assert layer.crs().authid() == "EPSG:28992" and layer.crs() == raster.crs()
    assert layer.fields().names()[:2] == ["task", "label"]


def test_caption_on_a_raster_without_epsg_code(controller, realdata):
    raster = QgsRasterLayer(str(realdata / "geotiff" / "rasterio" / "goes.tif"), "goes")
    QgsProject.instance().addMapLayer(raster)
    assert raster.crs().isValid() and not raster.crs().authid().startswith("EPSG:")
    layer = answer_layer(controller, RunInput(raster, "caption"))
    assert layer.crs() == raster.crs()
    assert "geos" in layer.crs().toProj()
    assert layer.featureCount() == 1
    extent = layer.extent()
    assert extent.width() == pytest.approx(raster.extent().width(), rel=1e-6)
