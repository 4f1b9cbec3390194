"""Reading DOTA label, prediction and Task1 files, and vector layers."""

import numpy as np
import pytest
import shapely
from pyogrio.raw import write as write_vector

from backend.errors import UserError
from backend.evaluation.sources import read_predictions, read_truth


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_truth_with_headers_difficult_flags_and_crlf(tmp_path):
    write(tmp_path / "gt", "P1.txt", "imagesource:GoogleEarth\r\ngsd:0.25\r\n0 0 10 0 10 5 0 5 small-vehicle 0\r\n1 1 9 1 9 4 1 4 ship 1\r\n")
    write(tmp_path / "gt", "P2.txt", "")  # an image with no object
    truth, crs = read_truth(tmp_path / "gt")
    assert crs is None and truth.images == ["P1", "P2"] and truth.skipped == 0
    assert truth.boxes.label.tolist() == ["small vehicle", "ship"]
    assert truth.boxes.difficult.tolist() == [False, True]
    assert truth.boxes.points[0].tolist() == [[0, 0], [10, 0], [10, 5], [0, 5]]


def test_predictions_with_optional_scores_and_bad_lines_counted(tmp_path):
    write(tmp_path / "pred", "P1.txt", "0 0 10 0 10 5 0 5 small vehicle 0.75\n0 0 10 0 10 5 0 5 plane\nnot a box\n1 2 3 nan 5 6 7 8 ship\n")
    predictions = read_predictions(tmp_path / "pred")
    assert predictions.boxes.label.tolist() == ["small vehicle", "plane"]
    assert predictions.boxes.score.tolist() == [0.75, 1.0]
    assert predictions.boxes.line.tolist() == [0, 1]
    assert predictions.skipped == 2 and "P1.txt:3" in predictions.skipped_examples[0]
    with pytest.raises(UserError, match="line 2 of .* has no score"):
        read_predictions(tmp_path / "pred", scored=True)


def test_task1_submission_files(tmp_path):
    write(tmp_path / "sub", "Task1_small-vehicle.txt", "P1 0.9 0 0 10 0 10 5 0 5\nP2 0.1 0 0 10 0 10 5 0 5\nP1 broken\n")
    write(tmp_path / "sub", "Task1_plane.txt", "P1 0.5 0 0 10 0 10 5 0 5\n")
    predictions = read_predictions(tmp_path / "sub")
    assert sorted(set(predictions.boxes.label.tolist())) == ["plane", "small vehicle"]
    assert sorted(predictions.boxes.score.tolist()) == [0.1, 0.5, 0.9]
    assert predictions.images == ["P1", "P2"] and predictions.skipped == 1
    with pytest.raises(UserError, match="Task1 submission files"):
        read_truth(tmp_path / "sub")


def test_dataset_split_folder_reads_its_label_folder(tmp_path):
    write(tmp_path / "val" / "labelTxt", "t1.txt", "0 0 10 0 10 5 0 5 ship 0\n")
    (tmp_path / "val" / "images").mkdir()
    truth, _ = read_truth(tmp_path / "val")
    assert truth.images == ["t1"]


def test_missing_and_unknown_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_truth(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .txt files"):
        read_predictions(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="cannot tell what"):
        read_truth(tmp_path / "x.csv")


def _layer(path, polygons, labels, crs="EPSG:32633", extra=None):
    fields, columns = ["type"], [np.array(labels, dtype=object)]
    for name, values in (extra or {}).items():
        fields.append(name)
        columns.append(np.asarray(values))
    geometry = np.array([shapely.to_wkb(p) for p in polygons], dtype=object)
    from rasterio.crs import CRS

    write_vector(str(path), geometry, columns, fields, driver="GPKG", geometry_type="Polygon", crs=CRS.from_user_input(crs).to_wkt())


def test_vector_layers_with_label_field_and_reprojection(tmp_path):
    box = shapely.box(500_000, 4_400_000, 500_040, 4_400_010)
    _layer(tmp_path / "truth.gpkg", [box, shapely.Point(0, 0).buffer(0)], ["Ship", "ship"])
    truth, crs = read_truth(tmp_path / "truth.gpkg", label_field="type")
    assert truth.boxes.label.tolist() == ["ship"] and truth.skipped == 1 and truth.images == ["layer"]
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    moved = shapely.transform(box, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))
    _layer(tmp_path / "pred.gpkg", [moved], ["ship"], crs="EPSG:4326", extra={"score": [0.4]})
    predictions = read_predictions(tmp_path / "pred.gpkg", scored=True, label_field="type", truth_crs=crs)
    assert predictions.boxes.score.tolist() == [0.4]
    assert np.abs(np.sort(predictions.boxes.rectangles()[0], axis=0) - np.sort(truth.boxes.rectangles()[0], axis=0)).max() < 1e-3
    with pytest.raises(UserError, match="no field 'kind'"):
        read_truth(tmp_path / "truth.gpkg", label_field="kind")
