"""Files sent to the server (a layer with no file behind it, or a client on another machine):
rasters for tasks and training exports, and labelled vector layers for training exports.
Streamed to a private folder, checked to be a raster (or vector file) GDAL reads, and named by
the path a request then gives. The folder goes when the server stops."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pyogrio
from pyogrio.errors import DataSourceError

from backend.contract import RasterUpload, VectorUpload
from backend.errors import UserError
from backend.raster import RasterSource

SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


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
        try:
            RasterSource.open(target).close()
        except UserError as exc:
            target.unlink(missing_ok=True)
            raise UserError(f"the uploaded file is not a raster GDAL reads ({exc.problem}).", "Upload a GeoTIFF.") from None
        return RasterUpload(id=upload_id, raster=str(target), bytes=size)

    async def save_vector(self, chunks: AsyncIterator[bytes], name: str | None) -> VectorUpload:
        upload_id, target, size = await self._receive(chunks, name, ".gpkg", "vector file")
        try:
            layers = [str(layer) for layer, _ in pyogrio.list_layers(target)]
        except (DataSourceError, OSError) as exc:
            layers, reason = [], str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            reason = "it holds no layer"
        if not layers:
            target.unlink(missing_ok=True)
            raise UserError(f"the uploaded file is not a vector file GDAL reads ({reason}).", "Upload a GeoPackage or GeoJSON file.")
        return VectorUpload(id=upload_id, labels=str(target), bytes=size, layers=layers)

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
