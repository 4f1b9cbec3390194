"""Where a zoom box lands: resized view -> raster window -> the crop read, pixel-exactly, on a
generated GeoTIFF with a white square at known pixels."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from backend.georef import View
from backend.raster import PixelWindow, RasterSource
from backend.zoom_plan import brute_force_cost, zoom_view
from tests.backend.markers import TRANSFORM, write_marker_raster

SIZE = 2016  # its overview view is exactly 1008 x 1008: two raster pixels per view pixel
MARKER = (240, 340, 260, 360)  # columns 240:260, rows 340:360
WHOLE = PixelWindow(0, 0, SIZE, SIZE)
OVERVIEW = View(0, 0, SIZE, SIZE, 1008, 1008, 0)
NATIVE = (1.0, 1.0)


@pytest.fixture(scope="module")
def marker_raster(tmp_path_factory):
    return write_marker_raster(tmp_path_factory.mktemp("zoom") / "marker.tif", SIZE, MARKER)


@pytest.fixture()
def source(marker_raster):
    with RasterSource.open(marker_raster) as opened:
        yield opened


def raw_pixels(path, col, row, width, height) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(window=Window(col, row, width, height)).transpose(1, 2, 0)


def bright(image: np.ndarray) -> np.ndarray:
    return (image > 200).all(axis=-1)


def test_overview_shows_the_marker_where_the_view_maps_it(source):
    image = source.read_view(OVERVIEW, source.stretch_for(WHOLE)).image
    assert image.shape == (1008, 1008, 3)
    (c0, r0), (c1, r1) = OVERVIEW.from_raster(np.array([[MARKER[0], MARKER[1]], [MARKER[2], MARKER[3]]]))
    assert (c0, r0, c1, r1) == (120, 170, 130, 180)
    rows, cols = np.nonzero(bright(image))
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (120, 170, 130, 180)


def test_a_window_within_the_budget_is_read_pixel_for_pixel(source, marker_raster):
    view = zoom_view(OVERVIEW, (100, 150, 240, 290), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert (view.col_off, view.row_off, view.width, view.height) == (200, 300, 280, 280)
    assert (view.out_width, view.out_height, view.index) == (280, 280, 1)
    crop = source.read_view(view, source.stretch_for(WHOLE)).image
    assert np.array_equal(crop, raw_pixels(marker_raster, 200, 300, 280, 280))
    rows, cols = np.nonzero(bright(crop))
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (40, 40, 60, 60)


def test_a_small_window_is_enlarged_to_the_smallest_image(source):
    view = zoom_view(OVERVIEW, (110, 160, 166, 216), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert (view.col_off, view.row_off, view.width, view.height) == (220, 320, 112, 112)
    assert (view.out_width, view.out_height) == (224, 224)  # min_pixels: two crop pixels per raster pixel
    crop = source.read_view(view, source.stretch_for(WHOLE)).image
    (c0, r0), (c1, r1) = view.from_raster(np.array([[MARKER[0], MARKER[1]], [MARKER[2], MARKER[3]]]))
    assert (c0, r0, c1, r1) == (40, 40, 80, 80)
    # bilinear upsampling blends only the one crop pixel that straddles each marker edge
    assert bright(crop[41:79, 41:79]).all()
    rows, cols = np.nonzero(bright(crop))
    assert cols.min() >= 39 and rows.min() >= 39 and cols.max() < 81 and rows.max() < 81


def test_a_window_larger_than_the_budget_is_read_at_the_budget(source):
    view = zoom_view(OVERVIEW, (0, 0, 1008, 600), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert (view.width, view.height) == (2016, 1200)
    assert view.out_width * view.out_height <= 1008 * 1008
    assert view.out_width % 28 == 0 and view.out_height % 28 == 0
    assert abs(view.out_width / view.out_height - 2016 / 1200) < 0.05


def test_edges_snap_outward_to_whole_pixels_and_stay_inside_the_extent():
    exact = zoom_view(OVERVIEW, (100, 150, 240, 290), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert (exact.col_off, exact.width) == (200, 280)  # an edge on a pixel edge takes no extra pixel
    fractional = zoom_view(OVERVIEW, (100.3, 150.7, 239.2, 289.9), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert (fractional.col_off, fractional.row_off) == (200, 301)
    assert (fractional.col_off + fractional.width, fractional.row_off + fractional.height) == (479, 580)
    extent = PixelWindow(500, 400, 1000, 800)
    sub_view = View(500, 400, 1000, 800, 1008, 812, 0)
    clipped = zoom_view(sub_view, (900, 700, 1008, 812), extent, NATIVE, 224 * 224, 1008 * 1008, 1)
    assert clipped.col_off + clipped.width <= 1500 and clipped.row_off + clipped.height <= 1200
    assert clipped.col_off >= 500 and clipped.row_off >= 400


def test_the_working_resolution_sets_the_crop_size():
    half = zoom_view(OVERVIEW, (100, 150, 240, 290), WHOLE, (0.5, 0.5), 224 * 224, 1008 * 1008, 1)
    assert (half.width, half.height) == (280, 280)
    assert (half.out_width, half.out_height) == (224, 224)  # 140 working px, raised to min_pixels


def test_a_sliver_no_image_can_show_is_refused():
    with pytest.raises(ValueError, match="aspect ratio"):
        zoom_view(OVERVIEW, (0, 0, 1008, 1), WHOLE, NATIVE, 224 * 224, 1008 * 1008, 1)


def test_decoded_pixels_follow_the_overview_level(source, tmp_path):
    assert source.decoded_pixels(OVERVIEW) == 1008 * 1008  # from the 2x overview
    assert source.decoded_pixels(View(0, 0, SIZE, SIZE, 504, 504)) == 504 * 504  # 4x overview
    assert source.decoded_pixels(View(0, 0, SIZE, SIZE, 672, 672)) == 1008 * 1008  # 3x: the 2x level is the coarsest fine enough
    assert source.decoded_pixels(View(200, 300, 280, 280, 280, 280)) == 280 * 280
    assert source.decoded_pixels(View(220, 320, 112, 112, 224, 224)) == 112 * 112
    profile = dict(driver="GTiff", width=600, height=600, count=3, dtype="uint8", crs="EPSG:32633", transform=TRANSFORM)
    with rasterio.open(tmp_path / "flat.tif", "w", **profile) as dst:
        dst.write(np.zeros((3, 600, 600), np.uint8))
    with RasterSource.open(tmp_path / "flat.tif") as flat:
        assert flat.decoded_pixels(View(0, 0, 600, 600, 300, 300)) == 600 * 600  # no overviews: every pixel


def test_brute_force_cost_of_native_tiling():
    big = brute_force_cost(20_000, 20_000, 224 * 224, 1008 * 1008)
    assert (big.tiles, big.tile_size) == (400, 1008)
    assert big.visual_tokens == 400 * 1296
    assert big.pixels_read == 400 * 1008 * 1008
    small = brute_force_cost(500, 300, 224 * 224, 1008 * 1008)
    assert (small.tiles, small.visual_tokens, small.pixels_read) == (1, 11 * 18, 150_000)
