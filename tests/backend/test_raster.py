import warnings

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from backend.errors import UserError
from backend.georef import View
from backend.raster import PixelWindow, RasterSource, crs_name
from tests.rasters import marker_scene, write_tif


@pytest.fixture
def rgb_tif(tmp_path):
    return write_tif(tmp_path / "rgb.tif", marker_scene())


def test_window_of_the_whole_raster_and_of_an_extent(rgb_tif):
    with RasterSource.open(rgb_tif) as src:
        assert src.window_for_extent(None) == PixelWindow(0, 0, 1200, 900)
        top = 4400000.0 + 900 * 0.5
        # 100 m x 50 m from the top-left corner, in the raster's CRS
        assert src.window_for_extent((500000, top - 50, 500100, top)) == PixelWindow(0, 0, 200, 100)
        # a partly outside extent is clipped to the raster
        assert src.window_for_extent((499000, top - 50, 500100, top + 1000)) == PixelWindow(0, 0, 200, 100)


def test_extent_in_another_crs_is_reprojected(rgb_tif):
    from pyproj import Transformer

    with RasterSource.open(rgb_tif) as src:
        to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
        top = 4400000.0 + 450
        lon0, lat0 = to_lonlat.transform(500100, top - 200)
        lon1, lat1 = to_lonlat.transform(500200, top - 100)
        window = src.window_for_extent((lon0, lat0, lon1, lat1), "EPSG:4326")
        # the reprojected box is within a pixel of 200..400 columns, 200..400 rows
        assert abs(window.col_off - 200) <= 1 and abs(window.row_off - 200) <= 1
        assert abs(window.width - 200) <= 2 and abs(window.height - 200) <= 2


@pytest.mark.parametrize(
    "extent,crs,message",
    [
        ((0, 0, 10, 10), None, "does not overlap the raster"),
        ((500100, 4400000, 500000, 4400100), None, "empty or inverted"),
        ((500000, 4400000, 500100, 4400100), "EPSG:999999", "unknown CRS"),
        ((500000, 4400000, 500100, 4400100), "not a crs", "unknown CRS"),
    ],
)
def test_bad_extents(rgb_tif, extent, crs, message):
    with RasterSource.open(rgb_tif) as src, pytest.raises(UserError, match=message):
        src.window_for_extent(extent, crs)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="raster file not found"):
        RasterSource.open(tmp_path / "nope.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    with pytest.raises(UserError, match="not a readable raster"):
        RasterSource.open(text)
    with pytest.raises(UserError, match="is a folder"):
        RasterSource.open(tmp_path)


def test_band_choice(tmp_path):
    data = np.stack([np.full((50, 60), v, np.uint8) for v in (10, 20, 30, 40)])
    path = write_tif(tmp_path / "four.tif", data)
    view = View(0, 0, 60, 50, 56, 56)
    with RasterSource.open(path) as src:
        assert src.bands == [1, 2, 3]
        image = src.read_view(view, src.stretch_for(src.window_for_extent(None))).image
        assert image[0, 0].tolist() == [10, 20, 30]
    with RasterSource.open(path, bands=[4, 2, 1]) as src:
        image = src.read_view(view, src.stretch_for(src.window_for_extent(None))).image
        assert image[0, 0].tolist() == [40, 20, 10]
    with RasterSource.open(path, bands=[2]) as src:
        image = src.read_view(view, src.stretch_for(src.window_for_extent(None))).image
        assert image[0, 0].tolist() == [20, 20, 20]
    for bad in ([5, 1, 2], [1, 2]):
        with pytest.raises(UserError, match="does not fit"):
            RasterSource.open(path, bands=bad)


def test_uint16_single_band_is_stretched_and_nodata_is_black(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, (200, 300)).astype(np.uint16)
    data[:, :50] = 0  # nodata collar
    path = write_tif(tmp_path / "pan.tif", data, nodata=0)
    with RasterSource.open(path) as src:
        window = src.window_for_extent(None)
        stretch = src.stretch_for(window)
        assert 1000 <= stretch.low[0] < 1100 and 2900 < stretch.high[0] <= 3000  # percentiles ignore nodata
        pixels = src.read_view(View(0, 0, 300, 200, 308, 196), stretch)
    image = pixels.image
    assert image.dtype == np.uint8 and image.shape == (196, 308, 3)
    assert (image[:, :45] == 0).all()
    assert image[:, 60:, 0].mean() == pytest.approx(127, abs=15)
    assert (image[..., 0] == image[..., 2]).all()  # grey replicated to RGB
    assert pixels.valid_fraction == pytest.approx(250 / 300, abs=0.02)


def test_float_with_nan_is_handled(tmp_path):
    data = np.linspace(-1, 1, 100 * 100, dtype=np.float32).reshape(100, 100)
    data[:10] = np.nan
    path = write_tif(tmp_path / "ndvi.tif", data)
    with RasterSource.open(path) as src:
        pixels = src.read_view(View(0, 0, 100, 100, 112, 112), src.stretch_for(src.window_for_extent(None)))
    assert pixels.valid_fraction < 1.0
    assert pixels.image[0].max() == 0 and pixels.image[-1].max() == 255


def test_unreferenced_image_works_in_pixels_with_a_warning(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = RasterSource.open(path)
    with src:
        assert not src.georeferenced and src.crs is None and crs_name(src.crs) is None
        assert "no georeferencing" in src.warnings[0]
        assert src.window_for_extent((10, 10, 20, 30)) == PixelWindow(10, 10, 10, 20)
        with pytest.raises(UserError, match="no CRS to reproject into"):
            src.window_for_extent((10, 10, 20, 30), "EPSG:4326")


def test_decimated_read_of_a_large_extent_uses_the_view_size(tmp_path):
    data = marker_scene(2400, 1800, marker=(1400, 600, 80, 40))
    path = write_tif(tmp_path / "big.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with RasterSource.open(path) as src:
        view = View(0, 0, 2400, 1800, 1148, 868)
        image = src.read_view(view, src.stretch_for(src.window_for_extent(None))).image
    assert image.shape == (868, 1148, 3)
    # the marker lands where the view's scale puts it
    rows, cols = np.nonzero(image[..., 0] > 200)
    assert cols.min() == pytest.approx(1400 * 1148 / 2400, abs=2) and rows.min() == pytest.approx(600 * 868 / 1800, abs=2)


def test_non_epsg_crs_is_kept_as_wkt(tmp_path):
    crs = "+proj=geos +lon_0=-75 +h=35786023 +sweep=x +ellps=GRS80 +units=m +no_defs"
    path = write_tif(tmp_path / "geos.tif", marker_scene(100, 100), crs=crs, transform=Affine(20000, 0, -1e6, 0, -20000, 1e6))
    with RasterSource.open(path) as src:
        name = crs_name(src.crs)
    assert not name.startswith("EPSG:") and ("Geostationary" in name or "geos" in name.lower())
    assert pyproj.CRS(name).to_dict() == pyproj.CRS(crs).to_dict()  # the WKT stands for the same projection


def test_a_paletted_band_is_shown_in_its_colours(tmp_path):
    """A classified raster (one band of indices and a colour table) is shown as the colours its
    palette gives, not its indices as grey, and indices are never interpolated."""
    data = np.zeros((1, 112, 112), np.uint8)
    data[0, :, 56:] = 2
    path = write_tif(tmp_path / "classes.tif", data, photometric="palette")
    with rasterio.open(path, "r+") as dataset:
        dataset.write_colormap(1, {0: (0, 128, 0, 255), 1: (0, 0, 0, 255), 2: (200, 30, 30, 255)})
    with RasterSource.open(path) as src:
        assert src.palette is not None
        image = src.read_view(View(0, 0, 112, 112, 112, 112), src.stretch_for(src.window_for_extent(None))).image
        assert image[0, 0].tolist() == [0, 128, 0] and image[0, 111].tolist() == [200, 30, 30]
        halved = src.read_view(View(0, 0, 112, 112, 56, 56), src.stretch_for(src.window_for_extent(None))).image
        assert {tuple(c) for c in halved.reshape(-1, 3).tolist()} == {(0, 128, 0), (200, 30, 30)}  # no blend of indices


def test_an_extent_partly_off_the_raster_is_clipped_with_a_warning(tmp_path):
    path = write_tif(tmp_path / "scene.tif", marker_scene(200, 100))  # 100 x 50 m from (500000, 4400000)
    with RasterSource.open(path) as src:
        inside = src.window_for_extent((500010.0, 4400010.0, 500050.0, 4400040.0))
        assert inside == PixelWindow(20, 20, 80, 60) and not src.warnings
        clipped = src.window_for_extent((500050.0, 4400010.0, 500150.0, 4400040.0))
        assert clipped == PixelWindow(100, 20, 100, 60)
        assert len(src.warnings) == 1 and "only the 50% of it inside the raster" in src.warnings[0]
