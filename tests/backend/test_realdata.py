"""The pipeline on real rasters and real labels from ../shared/realdata (skipped when absent).

The rasters cover the awkward cases: EPSG:28992, EPSG:3395, a non-EPSG geostationary CRS,
1-band uint16 with nodata, 4-band false colour in EPSG:4326, JPEG with an internal mask and
overviews, a nodata collar. A scripted engine answers a known box, so where it lands on the
map can be checked against the raster's own geotransform.
"""

import numpy as np
import pytest
from shapely.geometry import Polygon, shape

from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.engine import Generation
from backend.geometry import order_vertices
from backend.pipeline import TaskRun
from backend.raster import RasterSource
from tests.scripted import ScriptedEngine

pytestmark = pytest.mark.realdata

GEOTIFFS = {
    "deepforest/test_tiled.tif": "EPSG:28992",
    "deepforest/5b90f92da0d7280005fab355_4310.tif": "EPSG:3395",
    "deepforest/OSBS_029.tif": "EPSG:32617",
    "rasterio/goes.tif": None,  # non-EPSG: kept as WKT
    "rasterio/RGB.byte.tif": "EPSG:32618",
    "rasterio/cogeo.tif": "EPSG:3857",
    "solaris/sample_geotiff.tif": "EPSG:32616",
    "opengeos/landsat_2020.tif": "EPSG:4326",
}


@pytest.mark.parametrize("name,epsg", GEOTIFFS.items())
def test_a_box_lands_where_the_geotransform_says(realdata, name, epsg):
    path = realdata / "geotiff" / name
    answer = "28,56,84,56,84,112,28,112 ship"
    result = run_task(TaskRequest(task="ground", raster=str(path), expression="the ship"), ScriptedEngine([answer]))
    if epsg:
        assert result.crs == epsg
    else:
        assert result.crs.startswith("PROJCRS") and "Geostationary" in result.crs
    with RasterSource.open(path) as src:
        width, height, transform = src.width, src.height, src.transform
    # the one view is the whole raster at a smart_resize size
    from backend.resolution import smart_resize

    out_h, out_w = smart_resize(height, width)
    sx, sy = width / out_w, height / out_h
    expected = [transform @ (x * sx, y * sy) for x, y in [(28, 56), (84, 56), (84, 112), (28, 112)]]
    assert shape(result.features[0].geometry).hausdorff_distance(Polygon(expected)) < 1e-6 * max(abs(transform.a), 1e-9) + 1e-6


@pytest.mark.parametrize("name", GEOTIFFS)
def test_every_real_raster_reads_as_an_rgb_view(realdata, name):
    request = TaskRequest(task="caption", raster=str(realdata / "geotiff" / name))
    engine = ScriptedEngine(["a view"])
    result = run_task(request, engine)
    image = engine.seen[0][0].images[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] % 28 == 0 and image.shape[1] % 28 == 0
    assert image.std() > 5  # real content survived stretching, not a flat or black image
    assert result.features[0].properties["text"] == "a view"


def test_uint16_pan_with_nodata_is_stretched(realdata):
    with RasterSource.open(realdata / "geotiff/solaris/sample_geotiff.tif") as src:
        window = src.window_for_extent(None)
        stretch = src.stretch_for(window)
        assert stretch.low is not None and stretch.high[0] > stretch.low[0] > 0
        from backend.georef import View

        pixels = src.read_view(View(0, 0, 900, 900, 896, 896), stretch)
    assert 0.0 < pixels.valid_fraction <= 1.0
    assert 60 < pixels.image.mean() < 200


def test_geographic_extent_and_gsd_on_landsat(realdata):
    path = realdata / "geotiff/opengeos/landsat_2020.tif"
    with RasterSource.open(path) as src:
        b = src.dataset.bounds
        assert src.bands == [1, 2, 3]  # no RGB colour interpretation: the first three bands
        metres = src.pixel_size_m(src.window_for_extent(None))
    assert 85 < metres[0] < 95 and 85 < metres[1] < 95
    extent = (b.left, b.bottom, (b.left + b.right) / 2, (b.bottom + b.top) / 2)
    request = TaskRequest(task="detect", raster=str(path), classes=["ship"], extent=extent, extent_crs="EPSG:4326", options=TaskOptions(gsd=180.0))
    result = run_task(request, ScriptedEngine(["There are none."]))
    col, row, width, height = result.raster.window
    assert col == 0 and abs(row - 189) <= 1 and abs(width - 349) <= 1 and abs(height - 188) <= 1
    assert result.stats.views == 1  # ~175 x 94 working pixels at 180 m


def test_extent_in_lon_lat_on_a_projected_raster(realdata):
    from pyproj import Transformer

    path = realdata / "geotiff/deepforest/test_tiled.tif"
    with RasterSource.open(path) as src:
        b = src.dataset.bounds
        to_lonlat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        lon0, lat0 = to_lonlat.transform(b.left + 50, b.bottom + 50)
        lon1, lat1 = to_lonlat.transform(b.left + 100, b.bottom + 100)
        window = src.window_for_extent((lon0, lat0, lon1, lat1), "EPSG:4326")
    assert abs(window.col_off - 200) <= 2 and abs(window.row_off - 600) <= 2
    # the lon/lat box of a 50 m square, taken back into RD New, is a slightly larger square
    assert 200 <= window.width <= 205 and 200 <= window.height <= 205


def test_nodata_collar_tiles_are_skipped(realdata):
    request = TaskRequest(task="detect", raster=str(realdata / "geotiff/rasterio/RGB.byte.tif"), classes=["ship"], options=TaskOptions(tile_size=84, tile_overlap=0))
    result = run_task(request, ScriptedEngine(["There are none."]))
    assert result.stats.views_skipped_nodata > 0
    assert result.stats.views_skipped_nodata < result.stats.views


def dota_truth(path):
    boxes = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 9 and not line.startswith(("imagesource", "gsd")):
            boxes.append((order_vertices(np.array(parts[:8], float).reshape(4, 2)), parts[8].replace("-", " ")))
    return boxes


def test_perfect_answers_on_real_dota_labels_survive_tiling_and_merging(realdata):
    """Answer every tile with the real objects whose centre it contains, in the trained answer
    format, and check the merged output gives back each labelled object."""
    image = realdata / "dota/dota_devkit/images/P1888.png"
    truth = dota_truth(realdata / "dota/dota_devkit/labelTxt/P1888.txt")
    classes = sorted({label for _, label in truth})
    request = TaskRequest(task="detect", raster=str(image), classes=classes, options=TaskOptions(tile_size=256, tile_overlap=64))
    with TaskRun(request, "oracle") as run:
        assert run.total > 4
        for view in run.views:
            lines = []
            for points, label in truth:
                cx, cy = points.mean(axis=0)
                if view.col_off <= cx < view.col_off + view.width and view.row_off <= cy < view.row_off + view.height:
                    local = np.rint(view.from_raster(points)).astype(int)
                    lines.append(",".join(map(str, local.reshape(-1))) + f" {label}")
            run.accept(view, Generation("\n".join(lines) or "There are none.", 0, 0, 0))
        result = run.result()
    assert result.crs is None and result.stats.lines_skipped == 0
    found = [(Polygon(np.asarray(f.geometry["coordinates"][0])), f.properties["label"]) for f in result.features]
    assert len(found) == len(truth)
    for points, label in truth:
        target = Polygon(points)
        best = max(found, key=lambda f: f[0].intersection(target).area / f[0].union(target).area)
        assert best[1] == label
        assert best[0].intersection(target).area / best[0].union(target).area > 0.7  # integer rounding in the 256->252 view


def test_tiny_checkpoint_runs_on_real_imagery(realdata, tiny_engine):
    request = TaskRequest(task="detect", raster=str(realdata / "geotiff/deepforest/test_tiled.tif"), classes=["ship", "storage tank"], options=TaskOptions(max_new_tokens=16))
    result = run_task(request, tiny_engine)
    assert result.stats.views == 9 and result.stats.views_skipped_nodata == 0
    assert result.stats.visual_tokens == 9 * 324
    assert result.crs == "EPSG:28992"
