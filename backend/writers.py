"""Writing results: GeoPackage (default), GeoJSON, FlatGeobuf, and DOTA txt for interchange.

Every file is written under a temporary name beside the target and renamed over it at the end,
so a failure leaves the previous file whole and never a half-written one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import shapely
from pyogrio.raw import write as write_vector
from rasterio.crs import CRS

from backend.atomic import staged_file, write_text
from backend.contract import TaskResult
from backend.errors import UserError
from backend.geometry import order_vertices
from backend.georef import map_to_raster

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}
FIELDS = ("task", "label", "model", "prompt", "tile", "raw_text", "text", "role")
CHANGE_FIELDS = ("change", "date_before", "date_after")  # change tasks: what changed, and between which dates
LAYER_NAMES = {"detect": "detections", "ground": "grounding", "caption": "caption", "classify": "classification", "ask": "answer",
               "describe": "descriptions", "change": "changes", "change_caption": "change_caption"}


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return "DOTA"
    if suffix not in DRIVERS:
        raise UserError(
            f"cannot tell the output format of '{path}'.",
            "End the file name in .gpkg, .geojson, .fgb or .txt (DOTA).",
        )
    return DRIVERS[suffix]


def write_result(result: TaskResult, path: str | Path) -> Path:
    target = Path(path)
    fmt = output_format(target)
    if fmt == "DOTA":
        return write_dota(result, target)
    geometry = np.array([shapely.to_wkb(shapely.geometry.shape(f.geometry)) for f in result.features], dtype=object)
    columns = []
    fields = FIELDS + (CHANGE_FIELDS if result.task in ("change", "change_caption") else ())
    for name in fields:
        values = [f.properties.get(name) for f in result.features]
        if name == "tile":
            columns.append(np.array([-1 if v is None else int(v) for v in values], dtype=np.int32))
        else:
            columns.append(np.array(["" if v is None else str(v) for v in values], dtype=object))
    crs = CRS.from_user_input(result.crs).to_wkt() if result.crs else None
    with staged_file(target) as staging, warnings.catch_warnings():
        # a raster without georeferencing gives features without a CRS; the user was told
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        write_vector(
            str(staging),
            geometry,
            columns,
            list(fields),
            layer=LAYER_NAMES[result.task],
            driver=fmt,
            geometry_type="Polygon",
            crs=crs,
        )
    return target


def write_dota(result: TaskResult, path: str | Path) -> Path:
    """Raster-pixel corners per object: `x1 y1 x2 y2 x3 y3 x4 y4 label`, labels with '-' for
    spaces (DOTA class names), vertices clockwise from the top-most."""
    from affine import Affine

    transform = Affine(*result.raster.transform)
    lines = []
    for feature in result.features:
        ring = np.asarray(feature.geometry["coordinates"][0], dtype=float)[:-1]
        if len(ring) != 4:
            continue
        pixels = order_vertices(map_to_raster(ring, transform))
        label = str(feature.properties.get("label", "")).strip().replace(" ", "-") or "object"
        lines.append(" ".join(f"{v:.1f}" for v in pixels.reshape(-1)) + f" {label}")
    return write_text(path, "".join(line + "\n" for line in lines))
