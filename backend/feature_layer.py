"""A vector layer whose features are described (`rscovlm describe-region`): the box of each
feature to ask about, and the layer written again, each feature with the model's description
as an attribute, geometry and attributes otherwise as they were.

The layer is read whole: it is the user's selection of features to describe, bounded by
backend.contract.MAX_REGIONS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyogrio.raw import read as read_vector
from pyogrio.raw import write as write_vector

from backend.atomic import staged_file
from backend.contract import MAX_REGIONS
from backend.errors import UserError
from backend.writers import output_format

DESCRIPTION_FIELD = "description"


def read_features(path: str, layer: str | None = None) -> dict:
    """The layer as pyogrio reads it: meta, geometries (WKB), attribute columns; refused with
    one line when it cannot be read, holds no feature, more than MAX_REGIONS, or no CRS."""
    try:
        meta, _, geometry, columns = read_vector(path, layer=layer)
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise UserError(f"{path} cannot be read as a vector layer ({str(exc).splitlines()[0]}).",
                        "Give a GeoPackage, GeoJSON or another file GDAL reads, and --layer when it holds several.") from None
    if geometry is None or len(geometry) == 0:
        raise UserError(f"{path} holds no feature to describe.", "Give a layer with at least one feature.")
    if len(geometry) > MAX_REGIONS:
        raise UserError(f"{path} holds {len(geometry)} features; at most {MAX_REGIONS} are described at once.",
                        "Select fewer features (e.g. ogr2ogr -where ...) or split the layer.")
    return {"meta": meta, "geometry": geometry, "columns": columns, "layer": layer or pyogrio.list_layers(path)[0][0]}


def feature_bounds(features: dict) -> list[tuple[float, float, float, float]]:
    """xmin, ymin, xmax, ymax of each feature, in the layer's CRS."""
    shapes = shapely.from_wkb(features["geometry"])
    if shapely.is_missing(shapes).any() or shapely.is_empty(shapes).any():
        raise UserError("the feature layer has features without geometry.", "Remove them or give only features with a geometry.")
    bounds = shapely.bounds(shapes)
    # a point or a line has no area: give it a pixel-sized box, which the view's context surrounds
    return [(x0, y0, max(x1, x0 + 1e-6), max(y1, y0 + 1e-6)) for x0, y0, x1, y1 in bounds.tolist()]


def layer_crs(features: dict) -> str | None:
    return features["meta"].get("crs")


def write_described(features: dict, descriptions: list[str | None], out: str | Path) -> Path:
    """The features again with a `description` attribute, atomically."""
    meta = features["meta"]
    names = list(meta["fields"])
    column = DESCRIPTION_FIELD if DESCRIPTION_FIELD not in names else f"rscovlm_{DESCRIPTION_FIELD}"
    values = np.array([d if d is not None else None for d in descriptions], dtype=object)
    target = Path(out)
    driver = output_format(target)
    if driver == "DOTA":
        raise UserError(f"{target} is a DOTA file: descriptions go into a vector layer.", "End the output in .gpkg, .geojson or .fgb.")
    with staged_file(target) as staging:
        write_vector(staging, features["geometry"], list(features["columns"]) + [values], names + [column],
                     geometry_type=meta.get("geometry_type"), crs=meta.get("crs"), driver=driver, layer=features["layer"])
    return target
