"""Answers as map layers: a GeoJSON FeatureCollection from the backend becomes memory layers in
the result's CRS (EPSG code or WKT), with the fields the backend sends, styled from
resources/styles and gathered in the "RSCoVLM results" group.

Feature properties are untrusted text from a model: unknown geometry types and values that do
not fit are skipped and counted, never raised.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsLayerMetadata,
    QgsLayerTreeGroup,
    QgsPointXY,
    QgsProject,
    QgsRendererCategory,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType
from qgis.PyQt.QtGui import QColor

from .resources import style_path
from .task_request import DOTA_CLASSES

GROUP_NAME = "RSCoVLM results"
# What every feature of the backend carries (backend/writers.py writes the same set); more
# properties become more fields, typed by their first value.
STANDARD_FIELDS = (("task", str), ("label", str), ("model", str), ("prompt", str), ("tile", int), ("raw_text", str), ("text", str), ("role", str))
# Field types are QMetaType's (QGIS 3.38 on, and Qt6's only kind); field.type() answers in them.
QT_FIELD_TYPES = {str: QMetaType.Type.QString, int: QMetaType.Type.LongLong, float: QMetaType.Type.Double, bool: QMetaType.Type.Bool}
# Saturated colours that read on imagery (no pastels), one per DOTA class in DOTA_CLASSES' order;
# other classes get one by a stable hash of their name.
PALETTE = (
    "#ff1744", "#00e676", "#2979ff", "#ff9100", "#d500f9", "#00e5ff", "#ffea00", "#f50057", "#76ff03",
    "#651fff", "#1de9b6", "#ff3d00", "#c6ff00", "#3d5afe", "#ffc400", "#00b0ff", "#e040fb", "#64dd17",
)  # fmt: skip
DETECTION_FILL_ALPHA = 40  # of 255: a hint of the class colour inside the outline, the imagery still visible
STYLES = {"detect": "detections", "ground": "grounding", "caption": "answer", "classify": "answer", "ask": "answer", "describe": "answer",
          "zoom": "zoom", "change": "changes", "change_caption": "answer"}
TITLES = {"detect": "Detections", "ground": "Grounding", "caption": "Caption", "classify": "Scene class", "ask": "Answer",
          "describe": "Described features", "zoom": "Zoom regions", "change": "Changes", "change_caption": "Description of the changes"}


def crs_from_text(text: str | None) -> QgsCoordinateReferenceSystem:
    """The CRS the backend names: 'EPSG:xxxx' or WKT. Invalid (no CRS) when absent."""
    if not text:
        return QgsCoordinateReferenceSystem()
    if text.upper().startswith("EPSG:"):
        return QgsCoordinateReferenceSystem(text.upper())
    return QgsCoordinateReferenceSystem.fromWkt(text)


def class_colors(labels: list[str]) -> dict[str, QColor]:
    """A colour per class of one layer: DOTA's classes keep theirs across layers; other classes take
    the unused colours in the order of a stable hash of their names, so no two classes share one
    while the palette lasts."""
    names = {label: label.strip().lower() for label in labels}
    colors = {label: PALETTE[DOTA_CLASSES.index(name)] for label, name in names.items() if name in DOTA_CLASSES}
    free = [color for color in PALETTE if color not in colors.values()] or list(PALETTE)
    others = sorted((label for label in labels if label not in colors), key=lambda label: zlib.crc32(names[label].encode()))
    for number, label in enumerate(others):
        colors[label] = free[number % len(free)]
    return {label: QColor(color) for label, color in colors.items()}


def _field_kind(value: Any) -> type:
    """The Python type a field holds for a property's value (bool before int: a bool is an int)."""
    return next((kind for kind in (bool, int, float) if isinstance(value, kind)), str)


def fields_for(features: list[dict]) -> QgsFields:
    """The standard fields, then every other property in order of first appearance."""
    kinds = dict(STANDARD_FIELDS)
    for feature in features:
        for name, value in (feature.get("properties") or {}).items():
            if name not in kinds and value is not None:
                kinds[name] = _field_kind(value)
    fields = QgsFields()
    for name, kind in kinds.items():
        fields.append(QgsField(name, QT_FIELD_TYPES[kind]))
    return fields


def _ring(coordinates: list) -> list[QgsPointXY]:
    return [QgsPointXY(float(x), float(y)) for x, y, *_ in coordinates]


def geometry_from_geojson(geometry: dict | None) -> QgsGeometry | None:
    """Polygon, MultiPolygon, Point and LineString; None for anything else or malformed."""
    try:
        kind, coordinates = geometry["type"], geometry["coordinates"]
        if kind == "Polygon":
            return QgsGeometry.fromPolygonXY([_ring(ring) for ring in coordinates])
        if kind == "MultiPolygon":
            return QgsGeometry.fromMultiPolygonXY([[_ring(ring) for ring in polygon] for polygon in coordinates])
        if kind == "Point":
            return QgsGeometry.fromPointXY(QgsPointXY(float(coordinates[0]), float(coordinates[1])))
        if kind == "LineString":
            return QgsGeometry.fromPolylineXY(_ring(coordinates))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return None


def _field_kind_of(field: QgsField) -> type:
    # QgsField.type() is a QMetaType.Type in the Python API: it has no metaType() (AttributeError on 3.40).
    return next((kind for kind, known in QT_FIELD_TYPES.items() if known == field.type()), str)


def _value(value: Any, kind: type) -> Any:
    """A property's value as a field of that kind holds it; ValueError or TypeError when it does not fit."""
    if value is None:
        return None
    if kind is str:
        return value if isinstance(value, str) else json.dumps(value)
    return kind(value)


def qgs_features(features: list[dict], fields: QgsFields, geometry_type: int) -> tuple[list[QgsFeature], int]:
    """QgsFeatures of one geometry type, and how many features were skipped."""
    out, skipped = [], 0
    kinds = [(field.name(), _field_kind_of(field)) for field in fields]
    for feature in features:
        geometry = geometry_from_geojson(feature.get("geometry"))
        if geometry is None or geometry.isNull() or QgsWkbTypes.geometryType(geometry.wkbType()) != geometry_type:
            skipped += 1
            continue
        qgs = QgsFeature(fields)
        qgs.setGeometry(geometry)
        properties = feature.get("properties") or {}
        for index, (name, kind) in enumerate(kinds):
            try:
                qgs.setAttribute(index, _value(properties.get(name), kind))
            except (TypeError, ValueError):
                qgs.setAttribute(index, None)
        out.append(qgs)
    return out, skipped


def layer_uri(features: list[dict]) -> tuple[str, int]:
    """The memory-layer geometry of the first feature (polygons when there are none)."""
    first = next((geometry_from_geojson(f.get("geometry")) for f in features), None)
    if first is not None and not first.isNull():
        kind = QgsWkbTypes.geometryType(first.wkbType())
        if kind == Qgis.GeometryType.Point:
            return "Point", kind
        if kind == Qgis.GeometryType.Line:
            return "LineString", kind
        if first.isMultipart():
            return "MultiPolygon", Qgis.GeometryType.Polygon
    return "Polygon", Qgis.GeometryType.Polygon


def build_layer(name: str, features: list[dict], crs_text: str | None, style: str | None = None) -> tuple[QgsVectorLayer, int]:
    """A memory layer holding `features` in the CRS the backend named; returns it and the
    number of features skipped."""
    geometry, geometry_type = layer_uri(features)
    layer = QgsVectorLayer(f"{geometry}?index=yes", name, "memory")
    layer.setCrs(crs_from_text(crs_text))
    fields = fields_for(features)
    layer.dataProvider().addAttributes(fields.toList())
    layer.updateFields()
    qgs, skipped = qgs_features(features, layer.fields(), geometry_type)
    layer.dataProvider().addFeatures(qgs)
    layer.updateExtents()
    if style:
        apply_style(layer, style)
    return layer, skipped


DESCRIPTION_FIELD = "description"


def described_layer(name: str, source: QgsVectorLayer, features: list, descriptions: list[str | None]) -> QgsVectorLayer:
    """A memory copy of the features described: their geometry, CRS and attributes as in
    `source`, and the model's answer in a `description` field; a map tip shows it."""
    kind = QgsWkbTypes.displayString(source.wkbType())
    layer = QgsVectorLayer(f"{kind}?index=yes", name, "memory")
    layer.setCrs(source.crs())
    fields = QgsFields(source.fields())
    column = DESCRIPTION_FIELD if fields.indexOf(DESCRIPTION_FIELD) < 0 else f"rscovlm_{DESCRIPTION_FIELD}"
    fields.append(QgsField(column, QT_FIELD_TYPES[str]))
    layer.dataProvider().addAttributes(fields.toList())
    layer.updateFields()
    copies = []
    for feature, text in zip(features, descriptions):
        copy = QgsFeature(layer.fields())
        copy.setGeometry(feature.geometry())
        copy.setAttributes(list(feature.attributes()) + [text])
        copies.append(copy)
    layer.dataProvider().addFeatures(copies)
    layer.updateExtents()
    layer.setMapTipTemplate(f'[% "{column}" %]')
    return layer


def replace_features(layer: QgsVectorLayer, features: list[dict]) -> int:
    """Swap in the merged features of a later poll (merging may drop earlier ones)."""
    provider = layer.dataProvider()
    known = {layer.fields().at(i).name() for i in range(layer.fields().count())}
    new_fields = [field for field in fields_for(features).toList() if field.name() not in known]
    if new_fields:
        provider.addAttributes(new_fields)
        layer.updateFields()
    provider.truncate()
    geometry_type = QgsWkbTypes.geometryType(layer.wkbType())
    qgs, skipped = qgs_features(features, layer.fields(), geometry_type)
    provider.addFeatures(qgs)
    layer.updateExtents()
    if layer.customProperty("rscovlm/style") == "detections":
        categorise_by_class(layer)
    layer.triggerRepaint()
    return skipped


def apply_style(layer: QgsVectorLayer, style: str) -> None:
    layer.loadNamedStyle(str(style_path(style)))
    layer.setCustomProperty("rscovlm/style", style)
    if style == "detections":
        categorise_by_class(layer)


def categorise_by_class(layer: QgsVectorLayer) -> None:
    """One colour per class present, on the style file's symbol; labels stay as the file sets them."""
    renderer = layer.renderer()
    base = renderer.sourceSymbol() if isinstance(renderer, QgsCategorizedSymbolRenderer) else renderer.symbol()
    index = layer.fields().indexOf("label")
    classes = sorted({str(v) for v in layer.uniqueValues(index) if v not in (None, "")}) if index >= 0 else []
    categories = []
    colors = class_colors(classes)
    for label in classes:
        color, fill = colors[label], QColor(colors[label])
        fill.setAlpha(DETECTION_FILL_ALPHA)
        symbol = base.clone()
        symbol.setColor(fill)
        for layer_index in range(symbol.symbolLayerCount()):
            symbol.symbolLayer(layer_index).setStrokeColor(color)
        categories.append(QgsRendererCategory(label, symbol, label))
    categorised = QgsCategorizedSymbolRenderer("label", categories)
    categorised.setSourceSymbol(base.clone())
    layer.setRenderer(categorised)


def describe_layer(layer: QgsVectorLayer, title: str, abstract: str) -> None:
    """What the layer answers, in its metadata (Layer Properties > Metadata): the name stays short."""
    metadata = QgsLayerMetadata(layer.metadata())
    metadata.setTitle(title)
    metadata.setAbstract(abstract)
    layer.setMetadata(metadata)


def results_group(project: QgsProject) -> QgsLayerTreeGroup:
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    return group if group is not None else root.insertGroup(0, GROUP_NAME)


def add_to_results(project: QgsProject, layer: QgsVectorLayer) -> None:
    project.addMapLayer(layer, False)
    results_group(project).insertLayer(0, layer)


def remove_from_results(project: QgsProject, layer: QgsVectorLayer) -> None:
    """Take a layer back out (a failed job), and the group when nothing else is in it."""
    if project.mapLayer(layer.id()) is not None:
        project.removeMapLayer(layer.id())
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    if group is not None and not group.children():
        project.layerTreeRoot().removeChildNode(group)


def split_roles(features: list[dict]) -> tuple[list[dict], list[dict]]:
    """The answer's features, and the zoom regions the model looked at (role 'zoom')."""
    answer, zoom = [], []
    for feature in features:
        (zoom if (feature.get("properties") or {}).get("role") == "zoom" else answer).append(feature)
    return answer, zoom


def save_geopackage(layer: QgsVectorLayer, path: str) -> str:
    """Write the layer to `path` through a temporary file beside it, so a failure leaves any
    existing file whole."""
    target = Path(path)
    if target.suffix.lower() != ".gpkg":
        target = target.with_suffix(".gpkg")
    if not target.parent.is_dir():
        raise OSError(f"folder {target.parent} does not exist")
    fd, staging = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".gpkg", dir=target.parent)
    os.close(fd)
    os.unlink(staging)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer.name()
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, staging, QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        Path(staging).unlink(missing_ok=True)
        raise OSError(message or f"GDAL error {int(error)}")
    os.replace(staging, target)
    return str(target)
