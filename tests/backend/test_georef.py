import numpy as np
from affine import Affine

from backend.georef import View, map_to_raster, raster_to_map


def test_view_maps_resized_pixels_to_the_window():
    view = View(col_off=1000, row_off=2000, width=512, height=512, out_width=504, out_height=504)
    np.testing.assert_allclose(view.to_raster([[0, 0], [504, 504], [252, 126]]), [[1000, 2000], [1512, 2512], [1256, 2128]])
    np.testing.assert_allclose(view.from_raster(view.to_raster([[17.0, 33.0]])), [[17.0, 33.0]])


def test_affine_with_rotation_round_trip():
    transform = Affine(0.5, 0.1, 500000.0, 0.2, -0.5, 4400000.0)
    colrow = np.array([[0.0, 0.0], [10.0, 20.0], [1234.5, 987.25]])
    xy = raster_to_map(colrow, transform)
    np.testing.assert_allclose(xy[1], [500000.0 + 5 + 2, 4400000.0 + 2 - 10])
    np.testing.assert_allclose(map_to_raster(xy, transform), colrow)


def test_view_pixels_to_map_through_the_window_and_the_geotransform():
    transform = Affine(2.0, 0.0, 100.0, 0.0, -2.0, 900.0)
    view = View(10, 20, 100, 50, 56, 28)
    xy = raster_to_map(view.to_raster(np.array([[56, 28]])), transform)
    assert xy.tolist() == [[100 + 2 * 110, 900 - 2 * 70]]


def test_edge_distance():
    view = View(0, 0, 100, 100, 56, 56)
    assert view.edge_distance(np.array([50.0, 50.0])) == 50.0
    assert view.edge_distance(np.array([5.0, 60.0])) == 5.0
