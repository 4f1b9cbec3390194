"""The same place at two dates, with exact change truth, deterministic by seed.

From one laid-out scene (training.layouts), some objects exist only at the later date (built,
arrived: `appeared`), some only at the earlier one (razed, left: `disappeared`), and some
vehicles and ships moved (one of each). The later image is another day's light (a gain and an
offset) and registered a fraction of a pixel off the earlier one, as two real acquisitions are;
each GeoTIFF carries its date (TIFFTAG_DATETIME). The truth is a layer of the changed objects
(class, `appeared`/`disappeared`, in the earlier image's CRS) and a change mask on the earlier
image's grid, as TEOChat scores change localisation.

    python -m training.change_pairs --out before.tif --after after.tif --size 1536 --seed 7 [--kind town]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely

from backend.atomic import staged_file
from training.synthetic import write_scene
from training.world import DEFAULT_CRS, Scene, SceneObject

CHANGES = ("appeared", "disappeared")
# What may change between the dates, and how: buildings are built or razed, vehicles and
# ships come and go or move, planes come and go; storage tanks stay.
CHANGING = {"building": ("appeared", "disappeared"), "small vehicle": ("appeared", "disappeared", "moved"),
            "large vehicle": ("appeared", "disappeared", "moved"), "ship": ("appeared", "disappeared", "moved"),
            "plane": ("appeared", "disappeared")}
DATES = ("2021-06-14", "2024-09-03")
AFTER_TONE = (0.9, 9.0)  # gain, offset: a hazier, brighter day
AFTER_SHIFT = (0.37, -0.29)  # pixels: how far off the earlier grid the later image is registered


@dataclass(frozen=True)
class Change:
    obj: SceneObject  # in the scene's pixels
    change: str  # "appeared" or "disappeared"


@dataclass(frozen=True)
class ChangePair:
    before: Scene
    after: Scene
    changes: tuple[Change, ...]


def _moved(obj: SceneObject, others: list[shapely.Polygon], scene: Scene, rng: np.random.Generator) -> SceneObject | None:
    """The object driven or sailed along its heading to a free place, if there is one."""
    for _ in range(8):
        step = rng.uniform(1.5, 4.0) * obj.length * rng.choice([-1.0, 1.0])
        a = math.radians(obj.angle)
        moved = replace(obj, cx=obj.cx + step * math.cos(a), cy=obj.cy + step * math.sin(a))
        shape = shapely.Polygon(moved.box())
        x0, y0, x1, y1 = shape.bounds
        if x0 >= 1 and y0 >= 1 and x1 <= scene.width - 1 and y1 <= scene.height - 1 and not any(shape.intersects(o) for o in others):
            return moved
    return None


def plan_change(scene: Scene, seed: int, share: float = 0.12) -> ChangePair:
    """Which objects change between the dates: about `share` of each changing class."""
    rng = np.random.default_rng([seed, 4242])
    shapes = [shapely.Polygon(o.box()) for o in scene.objects]
    before, after, changes = list(scene.objects), list(scene.objects), []
    for obj in scene.objects:
        kinds = CHANGING.get(obj.label)
        if not kinds or rng.random() >= share:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "appeared":
            before.remove(obj)
        elif kind == "disappeared":
            after.remove(obj)
        else:
            moved = _moved(obj, shapes, scene, rng)
            if moved is None:
                continue
            after[after.index(obj)] = moved
            shapes.append(shapely.Polygon(moved.box()))
            changes.append(Change(moved, "appeared"))
            kind = "disappeared"
        changes.append(Change(obj, kind))
    return ChangePair(replace(scene, objects=tuple(before)), replace(scene, objects=tuple(after), offset=AFTER_SHIFT), tuple(changes))


def change_boxes(pair: ChangePair) -> list[tuple[np.ndarray, str, str]]:
    """(corners on the earlier image's pixels, class, change) of every change. An object that
    appeared was drawn on the later image, registered AFTER_SHIFT off: its place on the earlier
    grid is shifted by that much."""
    shift = np.asarray(pair.after.offset) - np.asarray(pair.before.offset)
    return [(c.obj.box() + (shift if c.change == "appeared" else 0.0), c.obj.label, c.change) for c in pair.changes]


def write_pair(pair: ChangePair, before: str | Path, after: str | Path, crs: str = DEFAULT_CRS) -> dict[str, Path]:
    """The two GeoTIFFs (dated), the change truth layer `<before>.changes.gpkg` and the change mask
    `<before>.changes.tif` beside the earlier image."""
    before, after = Path(before), Path(after)
    write_scene(pair.before, before, crs, tags={"TIFFTAG_DATETIME": DATES[0].replace("-", ":") + " 10:30:00"})
    write_scene(pair.after, after, crs, tone=AFTER_TONE, tags={"TIFFTAG_DATETIME": DATES[1].replace("-", ":") + " 10:30:00"})
    layer, mask = before.with_suffix(".changes.gpkg"), before.with_suffix(".changes.tif")
    write_change_truth(pair, layer, mask, crs)
    return {"before": before, "after": after, "truth": layer, "mask": mask}


def write_change_truth(pair: ChangePair, layer: Path, mask: Path, crs: str = DEFAULT_CRS) -> None:
    import rasterio
    from pyogrio.raw import write as write_vector
    from rasterio.crs import CRS
    from rasterio.features import rasterize

    from backend.georef import raster_to_map

    transform = pair.before.transform
    boxes = change_boxes(pair)
    polygons = [shapely.Polygon(raster_to_map(corners, transform)) for corners, _, _ in boxes]
    wkt = CRS.from_user_input(crs).to_wkt()
    with staged_file(layer) as staging:
        write_vector(str(staging), np.array([shapely.to_wkb(p) for p in polygons], dtype=object),
                     [np.array([label for _, label, _ in boxes], dtype=object), np.array([change for _, _, change in boxes], dtype=object)],
                     ["label", "change"], layer="changes", driver="GPKG", geometry_type="Polygon", crs=wkt)
    shape = (pair.before.height, pair.before.width)
    burned = rasterize(((p, 1) for p in polygons), out_shape=shape, transform=transform, dtype="uint8") if polygons else np.zeros(shape, np.uint8)
    with staged_file(mask) as staging:
        profile = dict(driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8", crs=crs, transform=transform,
                       compress="deflate", tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(staging, "w", **profile) as dst:
            dst.write(burned, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.change_pairs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the earlier GeoTIFF to write (the change truth is written beside it)")
    parser.add_argument("--after", type=Path, required=True, help="the later GeoTIFF to write")
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", default="town", help="a scene kind of training.layouts (default town)")
    args = parser.parse_args(argv)
    from training.layouts import LAYOUTS, plan_layout

    if args.kind not in LAYOUTS:
        parser.error(f"--kind {args.kind!r} is not one of: {', '.join(LAYOUTS)}")
    try:
        scene = plan_layout(args.kind, args.size, args.size, seed=args.seed)
    except ValueError:  # the layout's parts do not fit in the square
        parser.error(f"--size {args.size} is too small for a {args.kind} scene; give 1024 or more")
    pair = plan_change(scene, args.seed)
    written = write_pair(pair, args.out, args.after)
    counts = {kind: sum(c.change == kind for c in pair.changes) for kind in CHANGES}
    print(f"wrote {written['before']} ({DATES[0]}) and {written['after']} ({DATES[1]}): {counts['appeared']} appeared, "
          f"{counts['disappeared']} disappeared; truth in {written['truth']} and {written['mask']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
