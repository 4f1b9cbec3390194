"""The `rscovlm` Processing provider: its algorithms register, and `processing.run` works
headless against a real backend, with bad input raised as QgsProcessingException."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsVectorLayer


class Errors(QgsProcessingFeedback):
    """Keeps what the algorithm reported: for a problem found before the algorithm runs,
    processing.run raises a generic message and reports the real one here."""

    def __init__(self):
        super().__init__()
        self.errors = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(error)


def test_algorithms_register_with_their_parameters(provider):
    algorithms = {a.name(): a for a in provider.algorithms()}
    assert sorted(algorithms) == ["ask", "caption", "change", "classify", "describe", "detect", "export_training_data", "fine_tune", "ground", "reinforce"]
    names = {name: [p.name() for p in a.parameterDefinitions()] for name, a in algorithms.items()}
    assert names["detect"] == ["INPUT", "EXTENT", "CLASSES", "TILE_SIZE", "GSD", "PIXEL_SIZE", "OUTPUT"]
    assert names["ground"] == ["INPUT", "EXTENT", "TEXT", "BOX_FORM", "GSD", "PIXEL_SIZE", "OUTPUT"]  # no Zoom-in Chain: untrained
    assert names["ask"] == ["INPUT", "EXTENT", "TEXT", "CHOICES", "GSD", "ZOOM", "PIXEL_SIZE", "OUTPUT"]
    assert names["describe"] == ["INPUT", "FEATURES", "GSD", "PIXEL_SIZE", "OUTPUT"]
    assert names["caption"] == ["INPUT", "EXTENT", "GSD", "PIXEL_SIZE", "OUTPUT"]
    assert names["change"] == ["INPUT", "INPUT_AFTER", "EXTENT", "CLASSES", "CHANGES", "CAPTION", "TILE_SIZE", "GSD", "PIXEL_SIZE", "OUTPUT"]
    assert [o.name() for o in algorithms["change"].outputDefinitions()] == ["OUTPUT", "ANSWER"]
    assert [o.name() for o in algorithms["ask"].outputDefinitions()] == ["OUTPUT", "ANSWER"]
    assert QgsApplication.processingRegistry().algorithmById("rscovlm:detect").displayName() == "Detect objects"


@pytest.mark.backend
def test_detect_headless(provider, use_backend, scene_tif, tmp_path):
    import processing

    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    out = tmp_path / "detections.gpkg"
    result = processing.run(
        "rscovlm:detect",
        {"INPUT": str(scene_tif), "CLASSES": "plane, ship", "TILE_SIZE": 512, "OUTPUT": str(out)},
        feedback=feedback,
    )
    assert result["OUTPUT"] == str(out)
    layer = QgsVectorLayer(str(out), "detections", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32633"
    assert {"task", "label", "model", "prompt", "tile", "raw_text", "text", "role"} <= set(layer.fields().names())
    assert progress and progress[-1] == 100.0


@pytest.mark.backend
def test_ask_headless_gives_the_answer_and_a_memory_layer(provider, use_backend, scene_tif, qgis_new_project):
    import processing

    layer = QgsRasterLayer(str(scene_tif), "scene")
    QgsProject.instance().addMapLayer(layer)
    result = processing.run(
        "rscovlm:ask",
        {"INPUT": layer, "EXTENT": "500000,500256,4400000,4400256 [EPSG:32633]", "TEXT": "Is there a river?", "OUTPUT": "memory:"},
    )
    output = result["OUTPUT"]
    output = output if isinstance(output, QgsVectorLayer) else QgsProject.instance().mapLayer(output)
    assert output.crs().authid() == "EPSG:32633" and output.featureCount() == 1
    feature = next(output.getFeatures())
    assert feature["text"] == result["ANSWER"]
    extent = output.extent()
    assert (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()) == (500000.0, 4400000.0, 500256.0, 4400256.0)


@pytest.mark.backend
def test_bad_input_raises(provider, use_backend, scene_tif):
    import processing

    for algorithm, parameters, problem in (
        ("rscovlm:caption", {"EXTENT": "0,10,0,10 [EPSG:32633]"}, "outside raster layer 'scene'"),
        ("rscovlm:classify", {"CLASSES": " , "}, "No classes given"),
    ):
        feedback = Errors()
        with pytest.raises(QgsProcessingException) as raised:
            processing.run(algorithm, {"INPUT": str(scene_tif), "OUTPUT": "memory:", **parameters}, feedback=feedback)
        assert any(problem in error for error in [str(raised.value), *feedback.errors]), feedback.errors


def test_backend_not_running_raises(provider, settings, scene_tif, tmp_path):
    import processing

    settings.server_file = str(tmp_path / "absent.json")
    settings.save()
    with pytest.raises(QgsProcessingException, match="backend is not running"):
        processing.run("rscovlm:caption", {"INPUT": str(scene_tif), "OUTPUT": "memory:"})


@pytest.mark.backend
def test_describe_features_headless_gives_the_features_back_with_descriptions(provider, use_backend, scene_tif, tmp_path):
    """The selected features of a layer, described: the output is those features, geometry and
    attributes as they were, with the answer in `description`."""
    import processing
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY
    from qgis.PyQt.QtCore import QMetaType

    layer = QgsVectorLayer("Point?crs=EPSG:4326", "sites", "memory")
    layer.dataProvider().addAttributes([QgsField("name", QMetaType.Type.QString)])
    layer.updateFields()
    raster = QgsRasterLayer(str(scene_tif), "scene")
    centre = raster.extent().center()
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    points = [to_wgs84.transform(QgsPointXY(centre.x() + dx, centre.y())) for dx in (-100.0, 0.0, 100.0)]
    features = []
    for name, point in zip(("west", "middle", "east"), points):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(point))
        feature.setAttributes([name])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] != "middle"])
    from qgis.core import QgsProcessingFeatureSourceDefinition

    out = tmp_path / "described.gpkg"
    result = processing.run("rscovlm:describe", {"INPUT": str(scene_tif), "FEATURES": QgsProcessingFeatureSourceDefinition(layer.id(), True),
                                                 "OUTPUT": str(out)})
    described = QgsVectorLayer(result["OUTPUT"], "described", "ogr")
    assert described.isValid() and described.crs().authid() == "EPSG:4326"
    rows = sorted((f["name"], f["description"]) for f in described.getFeatures())
    assert [name for name, _ in rows] == ["east", "west"]  # the selection only
    assert all(isinstance(text, str) for _, text in rows)  # whatever the tiny model said, it is there
    moved = {f["name"]: f.geometry().asPoint() for f in described.getFeatures()}
    assert moved["west"] == points[0] and moved["east"] == points[2]  # the features as they were
    QgsProject.instance().removeMapLayer(layer.id())


@pytest.mark.backend
def test_change_headless_in_a_batch_of_two_dates(provider, use_backend, scene_tif, later_scene_tif, tmp_path):
    """rscovlm:change with the later date in another CRS: a change layer in the earlier raster's
    CRS with the dates; ticked, the changes described in words; as a batch, once per pair."""
    import processing

    out = tmp_path / "changes.gpkg"
    result = processing.run("rscovlm:change", {"INPUT": str(scene_tif), "INPUT_AFTER": str(later_scene_tif), "CLASSES": "building",
                                               "CHANGES": 3, "TILE_SIZE": 512, "OUTPUT": str(out)})
    layer = QgsVectorLayer(result["OUTPUT"], "changes", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32633"  # the earlier raster's, not the later one's 3857
    assert {"label", "change", "date_before", "date_after"} <= set(layer.fields().names()) or layer.featureCount() == 0
    caption = processing.run("rscovlm:change", {"INPUT": str(scene_tif), "INPUT_AFTER": str(later_scene_tif), "CAPTION": True, "OUTPUT": "memory:"})
    assert isinstance(caption["ANSWER"], str) and caption["ANSWER"]
    described = caption["OUTPUT"] if isinstance(caption["OUTPUT"], QgsVectorLayer) else QgsProject.instance().mapLayer(caption["OUTPUT"])
    [feature] = described.getFeatures()
    assert feature["text"] == caption["ANSWER"] and feature["task"] == "change_caption"
    assert (feature["date_before"], feature["date_after"]) == ("scene", "scene-later-3857")  # no dates in their metadata: the file names
    feedback = Errors()
    with pytest.raises(QgsProcessingException):
        processing.run("rscovlm:change", {"INPUT": str(scene_tif), "INPUT_AFTER": str(scene_tif), "CLASSES": "building", "OUTPUT": "memory:"},
                       feedback=feedback)
    assert any("given as both dates" in error for error in feedback.errors)
