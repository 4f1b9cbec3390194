"""Raster input: open, find the pixels of an extent, read views. Windowed reads only.

The whole raster is never read: every view is one windowed read at the size the model will
see, so GDAL takes decimated reads from overviews when a view covers more pixels than the
budget. 1-band rasters become grey RGB, 16-bit and float data are stretched to 8 bits by
robust percentiles measured once per extent (so tiles share one stretch), and nodata / masks
are honoured (masked pixels are black and counted).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from backend.errors import UserError
from backend.georef import View, map_to_raster

# GDAL's block cache defaults to 5% of RAM; bounded, memory stays flat whatever the raster size.
GDAL_OPTIONS = {"GDAL_CACHEMAX": 256 * 2**20}
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024  # longest side of the decimated read the stretch is measured on


@dataclass(frozen=True)
class PixelWindow:
    """Whole raster pixels: [col_off, col_off + width) x [row_off, row_off + height)."""

    col_off: int
    row_off: int
    width: int
    height: int


@dataclass(frozen=True)
class ViewImage:
    image: np.ndarray  # (out_height, out_width, 3) uint8
    valid_fraction: float  # share of pixels that are not nodata / masked


@dataclass
class Stretch:
    """Per-band linear map of [low, high] onto [0, 255]; None for 8-bit data, shown as is."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        if self.low is None:
            return np.clip(data, 0, 255).astype(np.uint8)
        low = self.low[:, None, None]
        span = (self.high - self.low)[:, None, None]
        scaled = (data.astype(np.float32) - low) * (255.0 / span)
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError, TypeError) as exc:
        raise UserError(
            f"unknown CRS '{text}'.", "Use an EPSG code such as EPSG:32633, an OGC WKT string or a PROJ string."
        ) from exc


def crs_name(crs: CRS | None) -> str | None:
    """'EPSG:32633' when the CRS has an EPSG code, else its WKT (non-EPSG CRSs are kept whole)."""
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=90)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt(version="WKT2_2019")


def default_bands(dataset) -> list[int]:
    """Red, green and blue by colour interpretation; else the first three bands; grey for 1-2."""
    interp = list(dataset.colorinterp)
    if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
    usable = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(usable) >= 3:
        return usable[:3]
    return [usable[0]] * 3 if usable else [1, 1, 1]


@dataclass
class RasterSource:
    """An open raster and what is needed to read views of it."""

    path: str
    dataset: rasterio.io.DatasetReader
    bands: list[int]
    georeferenced: bool
    warnings: list[str] = field(default_factory=list)
    palette: np.ndarray | None = None  # (entries, 3) uint8: a paletted band's colours, shown as RGB
    base: rasterio.io.DatasetReader | None = None  # the file a warped source reads (closed with it)
    _stretch: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path, bands: Sequence[int] | None = None) -> RasterSource:
        path = str(path)
        if not Path(path).exists():
            raise UserError(f"raster file not found: {path}", "Check the path (relative paths start at the current folder).")
        if Path(path).is_dir():
            raise UserError(f"{path} is a folder, not a raster file.", "Pass the GeoTIFF (or other raster) file itself.")
        try:
            with rasterio.Env(**GDAL_OPTIONS), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(path)
        except RasterioIOError as exc:
            reason = str(exc).split(": ", 1)[-1] if "not recognized" not in str(exc) else "not a format GDAL reads"
            raise UserError(f"{path} is not a readable raster ({reason}).", "Pass a GeoTIFF or another raster format GDAL opens.") from exc
        notes = []
        georeferenced = dataset.crs is not None or dataset.transform != Affine.identity()
        if not georeferenced:
            notes.append(
                f"{Path(path).name} has no georeferencing: results are in pixel coordinates "
                "(x = column, y = row from the top) and carry no CRS."
            )
        elif dataset.crs is None:
            notes.append(f"{Path(path).name} has a geotransform but no CRS: results carry no CRS.")
        chosen = list(bands) if bands else default_bands(dataset)
        bad = [b for b in chosen if not 1 <= b <= dataset.count]
        if bad or len(chosen) not in (1, 3):
            dataset.close()
            raise UserError(
                f"--bands {','.join(map(str, chosen))} does not fit {Path(path).name}, which has {dataset.count} band(s).",
                "Give one band (shown as grey) or three bands (red,green,blue), numbered from 1.",
            )
        palette = None
        if len(set(chosen)) == 1 and dataset.colorinterp[chosen[0] - 1] == ColorInterp.palette:
            try:
                colours = dataset.colormap(chosen[0])
            except ValueError:
                colours = {}
            if colours and np.dtype(dataset.dtypes[chosen[0] - 1]).kind == "u" and max(colours) < 2**16:
                palette = np.zeros((max(colours) + 1, 3), dtype=np.uint8)
                for index, rgba in colours.items():
                    palette[index] = rgba[:3]
        if len(chosen) == 1:
            chosen = chosen * 3
        return cls(path, dataset, chosen, georeferenced, notes, palette)

    @classmethod
    def aligned(cls, path: str | Path, bands: Sequence[int] | None, grid: RasterSource) -> RasterSource:
        """Another raster of the same place read on `grid`'s pixels: reprojected and resampled
        window by window (rasterio's WarpedVRT, bilinear), so a window of one is the same ground
        as the same window of the other whatever their CRSs, resolutions and extents. Its own
        nodata and masks stay invalid (black) where it has no pixels."""
        from rasterio.vrt import WarpedVRT

        source = cls.open(path, bands)
        name = Path(str(path)).name
        if (source.crs is None) != (grid.crs is None):
            source.close()
            with_crs, without = (Path(grid.path).name, name) if source.crs is None else (name, Path(grid.path).name)
            raise UserError(f"{with_crs} has a CRS but {without} has none, so they cannot be aligned.",
                            f"Give {without} its CRS (gdal_edit.py -a_srs), or compare two rasters without georeferencing.")
        if source.crs is None and (source.width, source.height) != (grid.width, grid.height):
            source.close()
            raise UserError(f"{name} and {Path(grid.path).name} have no georeferencing and differ in size.",
                            "Georeference them, or give two images of the same size and place.")
        if source.crs is None:
            return source
        # pixels where the other raster has none are invalid: its nodata, or an alpha band the warp adds
        nodata = source.dataset.nodata
        vrt = WarpedVRT(source.dataset, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                        resampling=Resampling.nearest if source.palette is not None else Resampling.bilinear, add_alpha=nodata is None)
        return cls(source.path, vrt, source.bands, source.georeferenced, source.warnings, source.palette, base=source.dataset)

    def close(self) -> None:
        self.dataset.close()
        if self.base is not None:
            self.base.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def crs(self) -> CRS | None:
        return self.dataset.crs

    @property
    def transform(self) -> Affine:
        return self.dataset.transform

    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def height(self) -> int:
        return self.dataset.height

    def bounds_text(self) -> str:
        b = self.dataset.bounds
        where = crs_name(self.crs) or "pixel coordinates"
        return f"{b.left:.10g},{b.bottom:.10g},{b.right:.10g},{b.top:.10g} in {where}"

    @property
    def rotated(self) -> bool:
        """A geotransform with rotation terms: a window's pixel box is not the extent's shape."""
        return self.transform.b != 0.0 or self.transform.d != 0.0

    def map_bounds(self, extent: Sequence[float], extent_crs: str | None = None) -> tuple[float, float, float, float]:
        """An extent (xmin, ymin, xmax, ymax) in the raster's CRS, reprojected from `extent_crs`."""
        xmin, ymin, xmax, ymax = (float(v) for v in extent)
        if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) or xmin >= xmax or ymin >= ymax:
            raise UserError(
                f"extent {xmin:g},{ymin:g},{xmax:g},{ymax:g} is empty or inverted.",
                "Give --extent as xmin,ymin,xmax,ymax with xmin < xmax and ymin < ymax.",
            )
        if extent_crs:
            target = parse_crs(extent_crs)
            if self.crs is None:
                raise UserError(
                    f"--extent-crs {extent_crs} was given but {Path(self.path).name} has no CRS to reproject into.",
                    "Give the extent in the raster's own coordinates and leave out --extent-crs.",
                )
            if target != self.crs:
                try:
                    xmin, ymin, xmax, ymax = transform_bounds(target, self.crs, xmin, ymin, xmax, ymax, densify_pts=21)
                except Exception as exc:  # PROJ refuses points outside a projection's domain
                    raise UserError(
                        f"the extent cannot be reprojected from {extent_crs} into the raster's CRS ({exc}).",
                        "Check the extent's CRS: geographic extents are lon,lat order (xmin = west).",
                    ) from exc
        return xmin, ymin, xmax, ymax

    def pixel_box(self, extent: Sequence[float], extent_crs: str | None = None) -> tuple[float, float, float, float]:
        """The raster-pixel bounding box (col0, row0, col1, row1) of an extent, not clipped."""
        xmin, ymin, xmax, ymax = self.map_bounds(extent, extent_crs)
        colrow = map_to_raster(np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]]), self.transform)
        (c0, r0), (c1, r1) = colrow.min(axis=0), colrow.max(axis=0)
        return float(c0), float(r0), float(c1), float(r1)

    def window_for_extent(self, extent: Sequence[float] | None, extent_crs: str | None = None) -> PixelWindow:
        """The raster pixels covering an extent (xmin, ymin, xmax, ymax), clipped to the raster
        (with a warning when that leaves part of the extent out). The extent is reprojected into
        the raster's CRS first; without one, the whole raster."""
        if extent is None:
            return PixelWindow(0, 0, self.width, self.height)
        b0, b1, b2, b3 = self.pixel_box(extent, extent_crs)
        c0, r0 = math.floor(b0 + 1e-9), math.floor(b1 + 1e-9)
        c1, r1 = math.ceil(b2 - 1e-9), math.ceil(b3 - 1e-9)
        inside = max(0, c0), max(0, r0), min(self.width, c1), min(self.height, r1)
        if inside[2] <= inside[0] or inside[3] <= inside[1]:
            raise UserError(
                f"the extent does not overlap the raster (raster bounds: {self.bounds_text()}).",
                "Choose an extent inside the raster, or give --extent-crs when the extent is in another CRS.",
            )
        if c0 < -1 or r0 < -1 or c1 > self.width + 1 or r1 > self.height + 1:  # not a rounding pixel
            kept = (inside[2] - inside[0]) * (inside[3] - inside[1]) / ((c1 - c0) * (r1 - r0))
            self.warnings.append(
                f"the extent reaches past the raster: only the {100 * kept:.0f}% of it inside the raster is read "
                f"(raster bounds: {self.bounds_text()})."
            )
        return PixelWindow(inside[0], inside[1], inside[2] - inside[0], inside[3] - inside[1])

    def pixel_size_m(self, window: PixelWindow) -> tuple[float, float] | None:
        """Ground size of one raster pixel in metres (x, y) at the centre of the window; None
        without a georeference. Measured geodesically, so geographic and Mercator rasters get
        true metres (Web Mercator map units are 1.26 ground metres at 38 degrees north)."""
        if not self.georeferenced:
            return None
        t = self.transform
        if self.crs is None:
            return math.hypot(t.a, t.d), math.hypot(t.b, t.e)
        from pyproj import Geod
        from rasterio.warp import transform as transform_points

        step = 10.0
        c, r = window.col_off + window.width / 2, window.row_off + window.height / 2
        points = [t @ (c, r), t @ (c + step, r), t @ (c, r + step)]
        lons, lats = transform_points(self.crs, "EPSG:4326", [p[0] for p in points], [p[1] for p in points])
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lons[0], lats[0], lons[1], lats[1])[2] / step
        dy = geod.inv(lons[0], lats[0], lons[2], lats[2])[2] / step
        return dx, dy

    @cached_property
    def _has_mask(self) -> bool:
        """Whether any chosen band has nodata or a mask; reading one costs a second pass."""
        from rasterio.enums import MaskFlags

        flags = self.dataset.mask_flag_enums
        return any(flags[b - 1] != [MaskFlags.all_valid] for b in set(self.bands))

    @cached_property
    def _is_8bit(self) -> bool:
        return all(np.dtype(self.dataset.dtypes[b - 1]) == np.uint8 for b in self.bands)

    def _read(
        self, col_off: float, row_off: float, width: float, height: float, out_w: int, out_h: int, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The chosen bands (bands, out_h, out_w), and where pixels are invalid (None when the
        raster has no nodata, mask or NaN). A window read 1:1 is a plain read, no resampling."""
        window = Window(col_off, row_off, width, height)
        native = (out_w, out_h) == (width, height) and float(col_off).is_integer() and float(row_off).is_integer()
        # palette indices are classes, not quantities: never interpolated
        resampling = Resampling.nearest if native or self.palette is not None else Resampling.bilinear
        with rasterio.Env(**GDAL_OPTIONS):
            if out is None:
                out = np.empty((len(self.bands), out_h, out_w), dtype=np.result_type(*[self.dataset.dtypes[b - 1] for b in self.bands]))
            data = self.dataset.read(indexes=self.bands, window=window, out=out, resampling=resampling)
            invalid = None
            if self._has_mask:
                unique = sorted(set(self.bands))
                masks = self.dataset.read_masks(
                    indexes=unique, window=window, out_shape=(len(unique), out_h, out_w), resampling=Resampling.nearest
                )
                invalid = (masks == 0).any(axis=0)
        if data.dtype.kind == "f":
            not_finite = ~np.isfinite(data).all(axis=0)
            invalid = not_finite if invalid is None else invalid | not_finite
        return data, invalid

    def stretch_for(self, window: PixelWindow) -> Stretch:
        """Robust percentiles of the extent, from one decimated read (overviews when present)."""
        key = (window.col_off, window.row_off, window.width, window.height)
        if key in self._stretch:
            return self._stretch[key]
        if self._is_8bit or self.palette is not None:
            stretch = Stretch()
        else:
            scale = min(1.0, STRETCH_SAMPLE_SIDE / max(window.width, window.height))
            out_w, out_h = max(1, round(window.width * scale)), max(1, round(window.height * scale))
            sample, invalid = self._read(window.col_off, window.row_off, window.width, window.height, out_w, out_h)
            low, high = [], []
            for band in sample:
                values = (band[~invalid] if invalid is not None else band.ravel()).astype(np.float64)
                values = values[np.isfinite(values)]
                lo, hi = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 255.0)
                low.append(lo)
                high.append(hi if hi > lo else lo + 1.0)
            stretch = Stretch(np.asarray(low), np.asarray(high))
        self._stretch[key] = stretch
        return stretch

    def read_view(self, view: View, stretch: Stretch) -> ViewImage:
        size = (view.col_off, view.row_off, view.width, view.height, view.out_width, view.out_height)
        if self.palette is not None:  # a classified or paletted band: its colours, not its indices as grey
            data, invalid = self._read(*size)
            image = self.palette[np.minimum(data[0], len(self.palette) - 1)]
        elif stretch.low is None and self._is_8bit:
            # 8-bit bands are read straight into the (height, width, 3) image the model takes
            image = np.empty((view.out_height, view.out_width, 3), dtype=np.uint8)
            _, invalid = self._read(*size, out=image.transpose(2, 0, 1))
        else:
            data, invalid = self._read(*size)
            image = np.ascontiguousarray(stretch.apply(data).transpose(1, 2, 0))
        if invalid is None:
            return ViewImage(image, 1.0)
        image[invalid] = 0
        return ViewImage(image, float(1.0 - invalid.mean()))

    def decoded_pixels(self, view: View) -> int:
        """Pixels GDAL decodes to read a view: those of the coarsest overview still at least as
        fine as the view (the level GDAL picks), else of the full-resolution window."""
        factor = min(view.width / view.out_width, view.height / view.out_height)
        level = max([1] + [f for f in self.dataset.overviews(self.bands[0]) if f <= factor])
        return round(view.width / level) * round(view.height / level)
