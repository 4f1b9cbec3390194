"""Reading labelled vector layers (GeoPackage, GeoJSON, FlatGeobuf, Shapefile...) as boxes.

Each polygon feature is one object; its box is its minimum-area rotated rectangle. Map
coordinates are fine: IoU does not depend on the units, only on the shapes being in one CRS,
so predictions are reprojected into the ground truth's CRS when the two differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyogrio.raw import read as read_vector

from backend.errors import UserError
from backend.evaluation.boxes import BoxTable
from backend.evaluation.dota_io import Annotations
from backend.prompts import normalise_category

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb", ".shp", ".gml", ".kml", ".sqlite")
ONE_IMAGE = "layer"  # the image key of every feature when no --image-field groups them
DEFAULT_LABEL_FIELDS = ("label", "class", "category", "type")


def is_vector(path: Path) -> bool:
    return path.suffix.lower() in VECTOR_SUFFIXES


def _field(fields: list[str], wanted: str | None, defaults: tuple[str, ...], option: str, path: Path, required: bool) -> str | None:
    if wanted:
        if wanted not in fields:
            raise UserError(f"{path.name} has no field '{wanted}' (fields: {', '.join(fields) or 'none'}).", f"Give {option} one of them.")
        return wanted
    found = next((name for name in defaults if name in fields), None)
    if found is None and required:
        raise UserError(
            f"cannot tell which field of {path.name} holds the {option.removeprefix('--').removesuffix('-field')} "
            f"(fields: {', '.join(fields) or 'none'}).",
            f"Name it with {option}.",
        )
    return found


def reprojected(geoms, crs: str | None, target_crs: str | None):
    """Geometries read in `crs`, in `target_crs` when both are known and differ; and their CRS."""
    if not (target_crs and crs and len(geoms)):
        return geoms, crs
    from pyproj import CRS, Transformer

    if CRS.from_user_input(crs) == CRS.from_user_input(target_crs):
        return geoms, crs
    transformer = Transformer.from_crs(crs, target_crs, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))), target_crs


def read_layer(
    path: Path,
    truth: bool,
    label_field: str | None = None,
    image_field: str | None = None,
    scored: bool = False,
    target_crs: str | None = None,
    labelled: bool = True,
) -> tuple[Annotations, str | None]:
    """Boxes of a layer's polygon features, and the layer's CRS (as WKT) after reprojection.
    Unlabelled layers (grounding: one box per sample) need no class field."""
    try:
        meta, _, geometry, values = read_vector(str(path))
    except (DataSourceError, DataLayerError) as exc:
        raise UserError(f"{path} is not a readable vector layer ({str(exc).splitlines()[0]}).", "Pass a GeoPackage, GeoJSON or Shapefile.") from exc
    fields = [str(f) for f in meta["fields"]]
    columns = dict(zip(fields, values))
    label_name = _field(fields, label_field, DEFAULT_LABEL_FIELDS, "--label-field", path, required=labelled)
    image_name = _field(fields, image_field, (), "--image-field", path, required=False)
    score_name = _field(fields, None, ("score", "confidence"), "--scored", path, required=False) if not truth else None
    if scored and not truth and score_name is None:
        raise UserError(f"--scored was given but {path.name} has no 'score' field.", "Leave out --scored to score every feature 1 (AP_nc).")
    difficult_name = "difficult" if truth and "difficult" in fields else None

    notes = Annotations(BoxTable.empty(), [], str(path))
    geoms = shapely.from_wkb(geometry) if geometry is not None else np.empty(0, dtype=object)
    geoms, crs = reprojected(geoms, meta.get("crs"), target_crs)
    usable = np.array([g is not None and g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0 for g in geoms], dtype=bool)
    for index in np.flatnonzero(~usable):
        notes.skip(f"{path.name} feature {index + 1}", "not a polygon with an area")
    keep = np.flatnonzero(usable)
    rects = shapely.oriented_envelope(geoms[keep])
    corners = shapely.get_coordinates(shapely.get_exterior_ring(rects)).reshape(len(keep), 5, 2)[:, :4]
    labels = [normalise_category(str(v)) for v in columns[label_name][keep]] if label_name else [""] * len(keep)
    images = [str(v) for v in columns[image_name][keep]] if image_name else [ONE_IMAGE] * len(keep)
    notes.boxes = BoxTable.build(
        images,
        labels,
        corners,
        score=np.asarray(columns[score_name][keep], dtype=float) if score_name else None,
        difficult=np.asarray(columns[difficult_name][keep]).astype(float) != 0 if difficult_name else None,
        line=keep,
        bounds=shapely.bounds(geoms[keep]),
    )
    notes.images = sorted(set(images)) if image_name else [ONE_IMAGE]
    return notes, crs
