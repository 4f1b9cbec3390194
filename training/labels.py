"""A user's labelled vector layer, read into the pixel grid of the raster it labels.

Polygons in any CRS are reprojected into the raster's CRS and then mapped into raster pixels
(continuous, 0 at the top-left corner of the first pixel, as in backend.georef), where tiles are
cut. Features that cannot be used (no geometry, not a polygon, invalid, no class) are skipped
and counted by reason, so the manifest can say what happened to every feature.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError

from backend.errors import UserError
from backend.georef import map_to_raster
from backend.prompts import normalise_category
from backend.raster import RasterSource, crs_name


@dataclass(frozen=True)
class LabelledObject:
    geometry: shapely.Geometry  # polygon or multipolygon in raster pixels
    label: str  # normalised category (lower case, spaces)
    text: str  # referring expression for grounding, '' when none
    caption: str  # region caption, '' when none


@dataclass
class LabelLayer:
    objects: list[LabelledObject]
    read: int  # features in the layer
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    layer: str = ""
    crs: str | None = None
    reprojected: bool = False


def _layer_name(path: str, layer: str | None) -> str:
    try:
        layers = pyogrio.list_layers(path)
    except (DataSourceError, OSError) as exc:
        raise UserError(f"{path} is not a vector file GDAL reads ({exc}).", "Pass a GeoPackage, GeoJSON or shapefile.") from exc
    names = [str(name) for name, _ in layers]
    if layer is None:
        if not names:
            raise UserError(f"{path} holds no layer.", "Pass a file with a polygon layer.")
        return names[0]
    if layer not in names:
        raise UserError(f"layer '{layer}' is not in {path}.", f"Choose one of: {', '.join(names)}.")
    return layer


def _check_field(name: str | None, option: str, fields: list[str], path: str) -> None:
    if name is not None and name not in fields:
        raise UserError(
            f"{option} '{name}' is not a field of {Path(path).name}.",
            f"Its fields are: {', '.join(fields) or '(none)'}.",
        )


def _to_raster_pixels(labels_crs: str | None, source: RasterSource) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    """A function mapping (n, 2) label coordinates to raster pixels, and whether it reprojects."""
    raster_crs = source.crs
    if labels_crs is None and raster_crs is not None:
        raise UserError(
            f"the labels have no CRS but the raster is in {crs_name(raster_crs)}: they cannot be placed on it.",
            "Set the layer's CRS (QGIS: Layer Properties > Source) and save it, or export it in the raster's CRS.",
        )
    if labels_crs is not None and raster_crs is None:
        raise UserError(
            f"the labels are in {labels_crs} but the raster has no CRS to reproject them into.",
            "Georeference the raster, or give labels in its pixel coordinates with no CRS.",
        )
    if labels_crs is None:
        return (lambda xy: map_to_raster(xy, source.transform)), False
    try:
        source_crs = ProjCRS.from_user_input(labels_crs)
        target_crs = ProjCRS.from_user_input(raster_crs.to_wkt())
    except CRSError as exc:
        raise UserError(f"the labels' CRS cannot be read ({exc}).", "Save the layer with an EPSG CRS.") from exc
    if source_crs == target_crs:
        return (lambda xy: map_to_raster(xy, source.transform)), False
    transformer = Transformer.from_crs(source_crs, target_crs, always_xy=True)

    def reproject(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return map_to_raster(np.stack([x, y], axis=-1), source.transform)

    return reproject, True


def read_labels(
    path: str | Path,
    source: RasterSource,
    class_field: str | None = None,
    class_name: str | None = None,
    text_field: str | None = None,
    caption_field: str | None = None,
    layer: str | None = None,
) -> LabelLayer:
    """Polygons of a layer in the raster's pixel grid, with their class, text and caption."""
    path = str(path)
    if not Path(path).exists():
        raise UserError(f"labels file not found: {path}", "Check the path of --labels.")
    if (class_field is None) == (class_name is None):
        raise UserError(
            "give either a class field (--class-field) or one class name for every object (--class-name).", None
        )
    if class_name is not None and not normalise_category(class_name):
        raise UserError(f"--class-name '{class_name}' is empty.", "Name the class, e.g. --class-name building.")
    name = _layer_name(path, layer)
    try:
        info = pyogrio.read_info(path, layer=name)
        fields = [str(f) for f in info["fields"]]
        for value, option in ((class_field, "--class-field"), (text_field, "--text-field"), (caption_field, "--caption-field")):
            _check_field(value, option, fields, path)
        wanted = [f for f in dict.fromkeys((class_field, text_field, caption_field)) if f is not None]
        meta, _, geometries, values = pyogrio.raw.read(path, layer=name, columns=wanted)
    except (DataSourceError, DataLayerError) as exc:
        raise UserError(f"{path} cannot be read ({exc}).", "Check that the file is a complete vector file.") from exc
    columns = dict(zip([str(f) for f in meta["fields"]], values))
    to_pixels, reprojected = _to_raster_pixels(meta.get("crs"), source)
    result = LabelLayer([], len(geometries), layer=name, crs=meta.get("crs"), reprojected=reprojected)
    for i, wkb in enumerate(geometries):
        reason, geometry = _usable_geometry(wkb, to_pixels)
        if reason:
            result.skipped[reason] += 1
            continue
        label = normalise_category(_text(columns[class_field][i]) if class_field else class_name)
        if not label:
            result.skipped["no class value"] += 1
            continue
        text = _text(columns[text_field][i]) if text_field else ""
        caption = _text(columns[caption_field][i]) if caption_field else ""
        result.objects.append(LabelledObject(geometry, label, text, caption))
    return result


def _text(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return " ".join(str(value).split())


def _usable_geometry(wkb, to_pixels) -> tuple[str, shapely.Geometry | None]:
    if wkb is None:
        return "no geometry", None
    try:
        geometry = shapely.from_wkb(wkb)
    except shapely.errors.GEOSException:
        return "unreadable geometry", None
    if geometry.is_empty:
        return "empty geometry", None
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        return f"not a polygon ({geometry.geom_type})", None
    if not geometry.is_valid:
        return "invalid geometry (self-intersecting or broken ring)", None
    pixels = shapely.transform(geometry, to_pixels)
    if not np.isfinite(shapely.get_coordinates(pixels)).all():
        return "outside the raster CRS's area of use", None
    if pixels.area <= 0:
        return "no area", None
    return "", pixels
