"""Small GeoTIFFs written by the tests themselves (the project generates its own data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_tif(path: Path, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None, **profile) -> Path:
    """data: (bands, rows, cols)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    transform = transform if transform is not None else Affine(0.5, 0, 500000.0, 0, -0.5, 4400000.0 + height * 0.5)
    options = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype, transform=transform, nodata=nodata)
    if crs is not None:
        options["crs"] = crs
    options.update(profile)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data)
    return path


def marker_scene(width: int = 1200, height: int = 900, marker=(700, 300, 40, 20)) -> np.ndarray:
    """Dark grey ground with one white rectangle at (col, row, w, h): something to find."""
    data = np.full((3, height, width), 60, np.uint8)
    c, r, w, h = marker
    data[:, r : r + h, c : c + w] = 255
    return data
