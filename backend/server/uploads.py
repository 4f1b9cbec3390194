"""Files sent to the server (a layer with no file behind it, or a client on another machine):
rasters for tasks and training exports, and labelled vector layers for training exports.
Streamed to a private folder, checked to be a raster (or vector file) GDAL reads, and named by
the path a request then gives. The folder goes when the server stops.

An upload must hold its own pixels or features: formats that make GDAL read other files or
fetch URLs (VRT, whose sources may be /vsicurl/ addresses or any file the server can read) are
refused before GDAL opens them, and rasters open only with drivers of self-contained formats.
The checks run off the event loop, so a slow file does not stall the other requests."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pyogrio
import rasterio
from pyogrio.errors import DataSourceError
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from starlette.concurrency import run_in_threadpool

from backend.contract import RasterUpload, VectorUpload
from backend.errors import UserError

SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
# Raster formats whose one file holds the pixels (checked after the sniff, once GDAL has opened it).
RASTER_DRIVERS = ("GTiff", "COG", "PNG", "JPEG", "JP2OpenJPEG", "WEBP", "GIF", "BMP", "HFA", "NITF", "GPKG")
VECTOR_DRIVERS = ("GPKG", "GeoJSON", "GeoJSONSeq", "FlatGeobuf", "KML", "GML")
SNIFF_BYTES = 4096
# XML roots of GDAL/OGR formats that point at other data instead of holding it.
REFERENCING_ROOTS = (b"<VRTDataset", b"<OGRVRTDataSource", b"<GDAL_WMS", b"<WFS_GetCapabilities", b"<WMS_Tile_Service")


def refuse_referencing(path: Path, what: str) -> None:
    """A file that makes GDAL read other files or URLs (a VRT, a WMS description) is refused
    before GDAL opens it."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES).lstrip().lower()
    if any(root.lower() in head for root in REFERENCING_ROOTS) or head.startswith(b"/vsi"):
        raise UserError(
            f"the uploaded {what} is a VRT or another description of data elsewhere, which the server does not open.",
            f"Upload a {what} that holds its own data (a GeoTIFF, a GeoPackage).",
        )


class Uploads:
    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="rscovlm-uploads-"))
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path | None:
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
            return None
        found = list(self.folder.glob(f"{upload_id}.*"))
        return found[0] if found else None

    async def save(self, chunks: AsyncIterator[bytes], name: str | None) -> RasterUpload:
        upload_id, target, size = await self._receive(chunks, name, ".tif", "raster")
        await run_in_threadpool(self._check, target, check_raster)
        return RasterUpload(id=upload_id, raster=str(target), bytes=size)

    async def save_vector(self, chunks: AsyncIterator[bytes], name: str | None) -> VectorUpload:
        upload_id, target, size = await self._receive(chunks, name, ".gpkg", "vector file")
        layers = await run_in_threadpool(self._check, target, check_vector)
        return VectorUpload(id=upload_id, labels=str(target), bytes=size, layers=layers)

    @staticmethod
    def _check(target: Path, check):
        try:
            return check(target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    async def _receive(self, chunks: AsyncIterator[bytes], name: str | None, default_suffix: str, what: str) -> tuple[str, Path, int]:
        suffix = Path(name).suffix if name else default_suffix
        suffix = suffix if SAFE_SUFFIX.match(suffix) else default_suffix
        upload_id = uuid.uuid4().hex
        target = self.folder / f"{upload_id}{suffix}"
        staging = self.folder / f".{upload_id}.part"
        size = 0
        try:
            with staging.open("wb") as handle:
                async for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
            if size == 0:
                raise UserError("the upload is empty.", f"Send the {what}'s bytes as the request body.")
            staging.rename(target)
        finally:
            staging.unlink(missing_ok=True)
        return upload_id, target, size

    def delete(self, upload_id: str) -> bool:
        path = self.path(upload_id)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True

    def remove_all(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_raster(path: Path) -> None:
    refuse_referencing(path, "raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                driver = dataset.driver
    except RasterioIOError as exc:
        raise UserError(f"the uploaded file is not a raster GDAL reads ({str(exc).splitlines()[0][:160]}).", "Upload a GeoTIFF.") from None
    if driver not in RASTER_DRIVERS:
        raise UserError(f"the uploaded raster is {driver}, which the server does not take.", f"Upload a GeoTIFF (or {', '.join(RASTER_DRIVERS[1:])}).")


def check_vector(path: Path) -> list[str]:
    """The layers of an uploaded vector file."""
    refuse_referencing(path, "vector file")
    try:
        driver = pyogrio.read_info(path)["driver"]
        layers = [str(layer) for layer, _ in pyogrio.list_layers(path)]
    except (DataSourceError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"the uploaded file is not a vector file GDAL reads ({reason}).", "Upload a GeoPackage or GeoJSON file.") from None
    if driver not in VECTOR_DRIVERS:
        raise UserError(f"the uploaded vector file is {driver}, which the server does not take.", f"Upload {', '.join(VECTOR_DRIVERS)}.")
    if not layers:
        raise UserError("the uploaded file is not a vector file GDAL reads (it holds no layer).", "Upload a GeoPackage or GeoJSON file.")
    return layers
