"""Which raster and which part of it: checks on the layer and the extent, and for layers with no
file behind them (WMS, XYZ, virtual, in-memory) a GeoTIFF of the extent written by QGIS.

The backend reads a file's pixels itself, so for a file only its path, the extent and the CRS
travel. A layer without a file is rendered by QGIS into a temporary GeoTIFF first: at the map
canvas's resolution in the dock, at the layer's own resolution (or a bounded size) in Processing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)

# Longest side of a GeoTIFF written for a layer without a file when nothing gives a resolution,
# and the most either side may have: enough for the model's tiles, bounded on disk.
DEFAULT_EXPORT_SIDE = 2048
MAX_EXPORT_SIDE = 16384


class InputProblem(ValueError):
    """Bad input in the user's terms; `kind` is 'no layer', 'no crs' or 'extent'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class ExportPlan:
    """What to write to a temporary GeoTIFF: a copy of the layer's pipe (safe to use from a
    worker thread), and the size in pixels."""

    pipe: QgsRasterPipe
    columns: int
    rows: int


@dataclass
class RasterInput:
    layer_name: str
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle  # in the layer's CRS, inside the layer
    file: str | None  # the raster file the backend can read; None: export first
    export: ExportPlan | None = None

    @property
    def crs_text(self) -> str:
        return crs_text(self.crs)

    def extent_tuple(self) -> tuple[float, float, float, float]:
        e = self.extent
        return (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum())


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """'EPSG:xxxx' when QGIS knows the code, else WKT2 (what the backend's CRS parser reads)."""
    authid = crs.authid()
    if authid.upper().startswith("EPSG:"):
        return authid.upper()
    return crs.toWkt(Qgis.CrsWktVariant.Wkt2_2019)


def layer_file(layer: QgsRasterLayer) -> str | None:
    """The file a GDAL layer reads, when it is a plain file on disk (not /vsi*, not a subdataset)."""
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or ""
    if parts.get("layerName") or not path or path.startswith("/vsi") or not os.path.isfile(path):
        return None
    return path


def check_layer(layer: QgsRasterLayer | None) -> QgsRasterLayer:
    if layer is None:
        raise InputProblem("no layer", "No raster layer is chosen. Add a raster to the project and pick it in the RSCoVLM dock.")
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise InputProblem("no layer", f"Layer '{layer.name()}' is not a readable raster layer. Pick a raster layer.")
    if not layer.crs().isValid():
        raise InputProblem(
            "no crs",
            f"Raster layer '{layer.name()}' has no CRS, so its answers cannot be placed on the map. "
            "Set its CRS in Layer Properties > Source, or georeference it first.",
        )
    return layer


def extent_in_layer(
    layer: QgsRasterLayer,
    extent: QgsRectangle | None,
    extent_crs: QgsCoordinateReferenceSystem | None,
    context: QgsCoordinateTransformContext,
) -> QgsRectangle:
    """The part of `extent` (default: the whole layer) inside the layer, in the layer's CRS."""
    if extent is None or extent.isEmpty():
        return QgsRectangle(layer.extent())
    if extent_crs is not None and extent_crs.isValid() and extent_crs != layer.crs():
        try:
            extent = QgsCoordinateTransform(extent_crs, layer.crs(), context).transformBoundingBox(extent)
        except QgsCsException:
            raise InputProblem("extent", f"The extent cannot be transformed into the CRS of '{layer.name()}' ({layer.crs().authid()}). Choose another extent.") from None
    inside = extent.intersect(layer.extent())
    if inside.isEmpty() or inside.width() <= 0 or inside.height() <= 0:
        raise InputProblem(
            "extent",
            f"The chosen extent lies outside raster layer '{layer.name()}'. Pan the map onto the raster, "
            "use the layer's extent, or draw a rectangle over it.",
        )
    return inside


def export_size(layer: QgsRasterLayer, extent: QgsRectangle, pixel_size: float | None) -> tuple[int, int]:
    """Columns and rows for writing `extent` of a layer without a file: at `pixel_size` (map
    units of the layer's CRS), else at the layer's own resolution, else a bounded default."""
    if not pixel_size:
        provider = layer.dataProvider()
        if provider.capabilities() & Qgis.RasterInterfaceCapability.Size and layer.width() > 0:
            pixel_size = layer.rasterUnitsPerPixelX()
    if not pixel_size or pixel_size <= 0:
        pixel_size = max(extent.width(), extent.height()) / DEFAULT_EXPORT_SIDE
    columns = max(1, math.ceil(extent.width() / pixel_size))
    rows = max(1, math.ceil(extent.height() / pixel_size))
    scale = max(columns, rows) / MAX_EXPORT_SIDE
    if scale > 1:
        columns, rows = max(1, int(columns / scale)), max(1, int(rows / scale))
    return columns, rows


def prepare_raster(
    layer: QgsRasterLayer | None,
    extent: QgsRectangle | None,
    extent_crs: QgsCoordinateReferenceSystem | None,
    context: QgsCoordinateTransformContext,
    pixel_size: float | None = None,
) -> RasterInput:
    """Checks the layer and the extent (raising InputProblem) and plans an export when the layer
    has no file. Call it on the thread that owns the layer."""
    layer = check_layer(layer)
    inside = extent_in_layer(layer, extent, extent_crs, context)
    path = layer_file(layer)
    if path is not None:
        return RasterInput(layer.name(), layer.crs(), inside, path)
    pipe = QgsRasterPipe()
    pipe.set(layer.dataProvider().clone())
    if layer.renderer() is not None:
        pipe.set(layer.renderer().clone())
    columns, rows = export_size(layer, inside, pixel_size)
    return RasterInput(layer.name(), layer.crs(), inside, None, ExportPlan(pipe, columns, rows))


def write_geotiff(raster: RasterInput, path: str, context: QgsCoordinateTransformContext) -> str:
    """Renders the planned export into a GeoTIFF at `path` (RGBA as the layer is drawn). No
    feedback is passed: tile providers connect to a feedback from inside the blocking read, which
    for a Python-made feedback can deadlock with the main thread (see client.py)."""
    plan = raster.export
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES"])
    error = writer.writeRaster(plan.pipe, plan.columns, plan.rows, raster.extent, raster.crs, context)
    if error != Qgis.RasterFileWriterResult.Success:
        raise InputProblem("export", f"QGIS could not write '{raster.layer_name}' to a temporary GeoTIFF (error {int(error)}). Check the layer draws on the map, and free disk space.")
    return path
