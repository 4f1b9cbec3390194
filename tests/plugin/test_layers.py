"""FeatureCollections from the backend become layers that keep its CRS and attributes."""

from __future__ import annotations

import pytest
from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from qgis_plugin.layers import (
    GROUP_NAME,
    _field_kind_of,
    add_to_results,
    build_layer,
    crs_from_text,
    remove_from_results,
    replace_features,
    save_geopackage,
    split_roles,
)
from qgis_plugin.task_request import DOTA_CLASSES

# A Lambert azimuthal equal-area CRS with no EPSG code: the backend names such CRSs by WKT.
CUSTOM_WKT = QgsCoordinateReferenceSystem.fromProj(
    "+proj=laea +lat_0=45 +lon_0=12 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
).toWkt(Qgis.CrsWktVariant.Wkt2_2019)


def box(x: float, y: float, size: float = 10.0) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def detection(label: str, x: float, tile: int = 0, **extra) -> dict:
    properties = {"task": "detect", "label": label, "model": "tiny", "prompt": "find the plane, ship", "tile": tile, "raw_text": f"1,2,3,4,5,6,7,8 {label}"}
    return {"type": "Feature", "geometry": box(x, 4400000.0), "properties": {**properties, **extra}}


def attributes(layer: QgsVectorLayer) -> list[dict]:
    return [dict(zip(layer.fields().names(), f.attributes())) for f in layer.getFeatures()]


def test_epsg_crs_and_attributes_are_kept():
    features = [detection("plane", 500000.0), detection("ship", 500100.0, tile=3)]
    layer, skipped = build_layer("Detections", features, "EPSG:32633", "detections")
    assert skipped == 0 and layer.isValid()
    assert layer.crs().authid() == "EPSG:32633"
    assert layer.fields().names() == ["task", "label", "model", "prompt", "tile", "raw_text", "text", "role"]
    rows = attributes(layer)
    assert [r["label"] for r in rows] == ["plane", "ship"]
    assert rows[1]["tile"] == 3 and rows[1]["raw_text"] == "1,2,3,4,5,6,7,8 ship"
    assert layer.extent().xMinimum() == 500000.0 and layer.extent().xMaximum() == 500110.0
    assert layer.wkbType() == Qgis.WkbType.Polygon


def test_wkt_crs_is_kept():
    layer, _ = build_layer("Caption", [detection("plane", 1000.0)], CUSTOM_WKT, "answer")
    assert layer.crs().isValid()
    assert layer.crs() == QgsCoordinateReferenceSystem.fromWkt(CUSTOM_WKT)
    assert "laea" in layer.crs().toProj().lower()


def test_extra_properties_become_typed_fields():
    features = [detection("zoom 1", 0.0, role="zoom", step=1, turn=2, score=0.5, extra={"a": 1})]
    layer, _ = build_layer("Zoom", features, "EPSG:32633", "zoom")
    fields = layer.fields()
    assert fields.names()[-4:] == ["step", "turn", "score", "extra"]
    assert fields.field("step").typeName().lower().startswith(("int", "integer"))
    assert fields.field("score").typeName().lower() in ("double", "real")
    row = attributes(layer)[0]
    assert row["role"] == "zoom" and row["step"] == 1 and row["score"] == 0.5 and row["extra"] == '{"a": 1}'


def test_untrusted_features_are_skipped_and_counted():
    bad = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "nonsense"}, "properties": {}},
        {"type": "Feature", "geometry": None, "properties": {"label": "x"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}},
        {"type": "Feature", "geometry": box(0, 0), "properties": {"tile": "not a number", "label": 5}},
    ]
    layer, skipped = build_layer("Detections", bad, "EPSG:32633", "detections")
    assert skipped == 3
    row = attributes(layer)[0]
    assert row["label"] == "5"
    assert row["tile"] is None or str(row["tile"]) == "NULL"


def test_no_crs_gives_a_layer_without_crs():
    assert not crs_from_text(None).isValid()
    layer, _ = build_layer("x", [], None)
    assert not layer.crs().isValid() and layer.featureCount() == 0


def test_detections_are_categorised_by_class_and_labelled():
    layer, _ = build_layer("Detections", [detection("plane", 0.0), detection("ship", 20.0), detection("plane", 40.0)], "EPSG:32633", "detections")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "label"
    assert [c.value() for c in renderer.categories()] == ["plane", "ship"]
    colors = {c.value(): c.symbol().symbolLayer(0).strokeColor().name() for c in renderer.categories()}
    assert colors["plane"] != colors["ship"]
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "label"
    replace_features(layer, [detection("storage tank", 0.0)])
    assert [c.value() for c in layer.renderer().categories()] == ["storage tank"]
    assert layer.featureCount() == 1


def test_replace_features_adds_new_fields():
    layer, _ = build_layer("Grounding", [detection("ship", 0.0)], "EPSG:32633", "grounding")
    replace_features(layer, [detection("ship", 0.0, step=2), detection("ship", 30.0, step=3)])
    assert "step" in layer.fields().names()
    assert sorted(r["step"] for r in attributes(layer)) == [2, 3]


def test_roles_split_answer_from_zoom_regions():
    answer, zoom = split_roles([detection("a", 0, role="answer"), detection("zoom 1", 0, role="zoom"), detection("b", 0)])
    assert [f["properties"]["label"] for f in answer] == ["a", "b"]
    assert [f["properties"]["label"] for f in zoom] == ["zoom 1"]


def test_results_group_and_removal(qgis_new_project):
    project = QgsProject.instance()
    first, _ = build_layer("one", [detection("plane", 0.0)], "EPSG:32633")
    second, _ = build_layer("two", [detection("ship", 0.0)], "EPSG:32633")
    add_to_results(project, first)
    add_to_results(project, second)
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    assert [node.layer().name() for node in group.findLayers()] == ["two", "one"]
    remove_from_results(project, second)
    assert project.layerTreeRoot().findGroup(GROUP_NAME) is not None
    remove_from_results(project, first)
    assert project.layerTreeRoot().findGroup(GROUP_NAME) is None and not project.mapLayers()


def test_save_geopackage_writes_atomically(tmp_path):
    layer, _ = build_layer("Detections – plane", [detection("plane", 500000.0), detection("ship", 500050.0)], "EPSG:32633", "detections")
    target = tmp_path / "out.gpkg"
    assert save_geopackage(layer, str(target)) == str(target)
    saved = QgsVectorLayer(str(target), "saved", "ogr")
    assert saved.isValid() and saved.featureCount() == 2 and saved.crs().authid() == "EPSG:32633"
    assert {"label", "raw_text", "tile"} <= set(saved.fields().names())
    before = target.read_bytes()
    with pytest.raises(OSError):
        save_geopackage(layer, str(tmp_path / "missing" / "out.gpkg"))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]


def test_every_field_kind_round_trips_through_qgis_field_types():
    """QgsField.type() on QGIS 3.40 is a QMetaType.Type (no metaType() there): each property
    kind must come back as the kind it went in as, or values would be written as text."""
    features = [detection("plane", 0.0, count=3, score=0.25, checked=True, note="n")]
    layer, skipped = build_layer("Detections", features, "EPSG:32633", "detections")
    assert skipped == 0
    assert {name: _field_kind_of(layer.fields().field(name)) for name in ("count", "score", "checked", "note", "tile")} == {
        "count": int, "score": float, "checked": bool, "note": str, "tile": int
    }  # fmt: skip
    row = attributes(layer)[0]
    assert (row["count"], row["score"], row["checked"], row["tile"]) == (3, 0.25, True, 0)


def test_answer_layers_outline_the_extent_and_keep_the_text_off_the_map():
    layer, _ = build_layer("Caption #1", [detection("", 0.0, text="a harbor with three ships")], "EPSG:32633", "answer")
    symbol = layer.renderer().symbol()
    fill = symbol.symbolLayer(0)
    assert fill.brushStyle() == Qt.BrushStyle.NoBrush  # the raster is not tinted, however many answers
    assert fill.strokeStyle() != Qt.PenStyle.NoPen and fill.strokeWidth() >= 1.5
    assert not layer.labelsEnabled()  # the sentence is in the dock, the attribute table and the map tip
    assert '"text"' in layer.mapTipTemplate()
    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    context.setFeature(next(layer.getFeatures()))
    assert "a harbor with three ships" in QgsExpression.replaceExpressionText(layer.mapTipTemplate(), context)


def test_detections_read_on_imagery():
    """2 px saturated outlines per class, a legend entry per class, labels only when zoomed in."""
    layer, _ = build_layer("Detections", [detection(label, 20.0 * i) for i, label in enumerate(DOTA_CLASSES + ("building",))], "EPSG:32633", "detections")
    categories = layer.renderer().categories()
    assert [c.label() for c in categories] == sorted(DOTA_CLASSES + ("building",))  # the class legend
    for category in categories:
        outline = category.symbol().symbolLayer(0)
        assert outline.strokeWidth() == 2.0 and outline.strokeWidthUnit() == Qgis.RenderUnit.Pixels
        color = outline.strokeColor()
        assert color.hsvSaturationF() >= 0.7 and color.valueF() >= 0.7, (category.label(), color.name())
    assert len({c.symbol().symbolLayer(0).strokeColor().name() for c in categories}) == len(categories)
    settings = layer.labeling().settings()
    assert settings.scaleVisibility and 0 < settings.minimumScale <= 1000  # no class names crowding a zoomed-out map
