"""From the pixels the model saw to map coordinates.

Two steps, both affine: view pixels (the resized image, where the model's integer answers
live) -> raster pixels (the window the view was read from, scaled) -> map coordinates (the
raster's geotransform). Pixel coordinates are continuous with 0 at the top-left corner of the
first pixel, as in rasterio and MODEL_IO's x_orig = x * orig_w / resized_w.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine


@dataclass(frozen=True)
class View:
    """One image shown to the model: a raster window (in raster pixels, possibly fractional)
    read into out_width x out_height pixels."""

    col_off: float
    row_off: float
    width: float
    height: float
    out_width: int
    out_height: int
    index: int = 0

    @property
    def scale_x(self) -> float:
        return self.width / self.out_width

    @property
    def scale_y(self) -> float:
        return self.height / self.out_height

    def to_raster(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=float)
        return np.stack([self.col_off + xy[..., 0] * self.scale_x, self.row_off + xy[..., 1] * self.scale_y], axis=-1)

    def from_raster(self, colrow: np.ndarray) -> np.ndarray:
        colrow = np.asarray(colrow, dtype=float)
        return np.stack(
            [(colrow[..., 0] - self.col_off) / self.scale_x, (colrow[..., 1] - self.row_off) / self.scale_y], axis=-1
        )

    def corners(self) -> np.ndarray:
        """The view's footprint in raster pixels, clockwise from the top-left."""
        c0, r0, c1, r1 = self.col_off, self.row_off, self.col_off + self.width, self.row_off + self.height
        return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=float)

    def edge_distance(self, colrow: np.ndarray) -> np.ndarray:
        """Distance in raster pixels from points to the nearest edge of the view's window."""
        colrow = np.asarray(colrow, dtype=float)
        dx = np.minimum(colrow[..., 0] - self.col_off, self.col_off + self.width - colrow[..., 0])
        dy = np.minimum(colrow[..., 1] - self.row_off, self.row_off + self.height - colrow[..., 1])
        return np.minimum(dx, dy)


def raster_to_map(colrow: np.ndarray, transform: Affine) -> np.ndarray:
    colrow = np.asarray(colrow, dtype=float)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    col, row = colrow[..., 0], colrow[..., 1]
    return np.stack([a * col + b * row + c, d * col + e * row + f], axis=-1)


def map_to_raster(xy: np.ndarray, transform: Affine) -> np.ndarray:
    return raster_to_map(xy, ~transform)

