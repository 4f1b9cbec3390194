"""Which features to describe (`describe`): a vector layer's selected features, or all of them,
their boxes in the layer's CRS, and the area around them a layer without a file is written for."""

from __future__ import annotations

from qgis.core import QgsFeature, QgsRectangle, QgsVectorLayer

from .raster_input import InputProblem


def features_to_describe(layer: QgsVectorLayer | None) -> tuple[QgsVectorLayer, list[QgsFeature]]:
    """The layer and its selected features, or all of them when none is selected; refused with
    the fix when there is none."""
    if layer is None or not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        raise InputProblem("no layer", "No vector layer is chosen to describe. Pick the layer whose features to describe in the RSCoVLM dock.")
    if not layer.crs().isValid():
        raise InputProblem("no crs", f"Layer '{layer.name()}' has no CRS, so its features cannot be placed on the raster. Set its CRS first.")
    chosen = list(layer.getSelectedFeatures()) if layer.selectedFeatureCount() else list(layer.getFeatures())
    chosen = [f for f in chosen if f.hasGeometry() and not f.geometry().isEmpty()]
    if not chosen:
        raise InputProblem("no features", f"Layer '{layer.name()}' has no feature with a geometry to describe. Select some, or add features.")
    return layer, chosen


def feature_box(feature: QgsFeature) -> tuple[float, float, float, float]:
    box = feature.geometry().boundingBox()
    return box.xMinimum(), box.yMinimum(), max(box.xMaximum(), box.xMinimum() + 1e-6), max(box.yMaximum(), box.yMinimum() + 1e-6)


def region_extent(regions: list[tuple[float, float, float, float]], layer_extent: QgsRectangle) -> QgsRectangle:
    """The features' bounds grown by their size on each side (points: by a fiftieth of their
    layer's extent): what the views around them show."""
    x0, y0 = min(r[0] for r in regions), min(r[1] for r in regions)
    x1, y1 = max(r[2] for r in regions), max(r[3] for r in regions)
    grow = max(x1 - x0, y1 - y0, 0.02 * max(layer_extent.width(), layer_extent.height()), 1e-3)
    return QgsRectangle(x0 - grow, y0 - grow, x1 + grow, y1 + grow)
