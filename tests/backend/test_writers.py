import json

import numpy as np
import pyogrio
import pytest
from pyogrio.raw import read as read_vector

from backend.contract import Feature, RasterInfo, TaskResult
from backend.errors import UserError
from backend.writers import write_dota, write_result


def detection_result(crs="EPSG:32633"):
    ring = [[500010.0, 4400090.0], [500030.0, 4400090.0], [500030.0, 4400080.0], [500010.0, 4400080.0], [500010.0, 4400090.0]]
    feature = Feature(
        geometry={"type": "Polygon", "coordinates": [ring]},
        properties={"task": "detect", "label": "small vehicle", "model": "m", "prompt": "find the small vehicle.", "tile": 3, "raw_text": "1,2,3"},
    )
    return TaskResult(
        task="detect",
        model="m",
        crs=crs,
        features=[feature],
        raster=RasterInfo(path="x.tif", width=200, height=200, crs=crs, transform=(0.5, 0, 500000.0, 0, -0.5, 4400100.0), window=(0, 0, 200, 200)),
    )


@pytest.mark.parametrize("suffix,driver", [(".gpkg", "GPKG"), (".geojson", "GeoJSON"), (".fgb", "FlatGeobuf")])
def test_vector_formats_keep_crs_fields_and_geometry(tmp_path, suffix, driver):
    path = write_result(detection_result(), tmp_path / f"out{suffix}")
    info = pyogrio.read_info(path)
    assert info["driver"] == driver and info["features"] == 1
    assert info["crs"] == "EPSG:32633"
    assert list(info["fields"]) == ["task", "label", "model", "prompt", "tile", "raw_text", "text", "role"]
    meta, _, geometry, fields = read_vector(path)
    assert fields[1][0] == "small vehicle" and int(fields[4][0]) == 3
    import shapely

    assert shapely.from_wkb(geometry[0]).bounds == (500010.0, 4400080.0, 500030.0, 4400090.0)


def test_geopackage_layer_name_and_geojson_names_its_crs(tmp_path):
    assert pyogrio.list_layers(write_result(detection_result(), tmp_path / "d.gpkg"))[0][0] == "detections"
    collection = json.loads(write_result(detection_result(), tmp_path / "d.geojson").read_text())
    assert "32633" in json.dumps(collection["crs"])
    assert detection_result().geojson()["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"


def test_empty_result_and_no_crs(tmp_path):
    result = detection_result(crs=None)
    result.features = []
    path = write_result(result, tmp_path / "empty.gpkg")
    assert pyogrio.read_info(path)["features"] == 0 and pyogrio.read_info(path)["crs"] is None


def test_dota_txt_is_in_raster_pixels(tmp_path):
    path = write_dota(detection_result(), tmp_path / "d.txt")
    values = path.read_text().split()
    assert values[-1] == "small-vehicle"
    assert np.array(values[:8], float).reshape(4, 2).tolist() == [[20, 20], [60, 20], [60, 40], [20, 40]]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import backend.writers

    target = tmp_path / "keep.gpkg"
    write_result(detection_result(), target)
    before = target.read_bytes()

    def write_then_fail(path, *args, **kwargs):  # the disk fills up after the file was begun
        real_write(path, *args, **kwargs)
        raise OSError("No space left on device")

    real_write = backend.writers.write_vector
    monkeypatch.setattr(backend.writers, "write_vector", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_result(detection_result(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gpkg"]  # no staging file left


def test_unknown_suffix_and_missing_folder(tmp_path):
    with pytest.raises(UserError, match="cannot tell the output format"):
        write_result(detection_result(), tmp_path / "out.shp.zip")
    with pytest.raises(UserError, match="does not exist"):
        write_result(detection_result(), tmp_path / "missing" / "out.gpkg")
