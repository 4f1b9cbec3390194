"""GeoTIFFs with a marker at known pixels, for checking where a zoomed window lands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

GSD = 0.5
TRANSFORM = Affine(GSD, 0.0, 500_000.0, 0.0, -GSD, 4_400_000.0)  # top-left corner, EPSG:32633


def write_marker_raster(path: Path, size: int, marker: tuple[int, int, int, int], nodata: int | None = None) -> Path:
    """A size x size RGB GeoTIFF (tiled, internal overviews 2/4/8): a dark gradient whose red
    and green channels encode column and row, and a white square over columns
    marker[0]:marker[2] and rows marker[1]:marker[3]."""
    cols = np.arange(size)[None, :]
    rows = np.arange(size)[:, None]
    image = np.zeros((3, size, size), dtype=np.uint8)
    image[0] = (cols * 100 // size).astype(np.uint8)
    image[1] = (rows * 100 // size).astype(np.uint8)
    image[2] = 30
    c0, r0, c1, r1 = marker
    image[:, r0:r1, c0:c1] = 255
    if nodata is not None:
        image[:] = nodata
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
        transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256, photometric="RGB", nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        dst.build_overviews([2, 4, 8], Resampling.average)
    return path
