"""Aerial-looking synthetic scenes with exact ground truth, deterministic by seed.

A scene is textured ground, surfaces (water, aprons, lots, roads, fields, trees) and rotated
objects of several classes, each with a distinct shape and a named colour. The default kind
("mixed") is ground with a river, roads and objects scattered by density; the other kinds are
laid out by `training.layouts` (airport, harbor, industrial area, parking lot, residential
area; a town of several of them; countryside with small sites, for the Zoom-in Chain). It is
written as a tiled GeoTIFF in a projected CRS with internal overviews, block by block, so a
20,000 px mosaic costs no more memory than a 1,000 px one. The ground truth comes as DOTA txt
(pixels) and a GeoPackage (map coordinates, with each object's colour).

    python -m training.synthetic --out resources/sample/scene.tif --size 2048 --seed 7 [--kind town --gsd 0.3]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.windows import Window

from backend.atomic import staged_file, write_text
from backend.geometry import order_vertices
from training.layouts import LAYOUTS, WORLD_GSD, plan_layout
from training.world import CLASS_SPECS, CLASSES, DEFAULT_CRS, SURFACE_IDS, SURFACES, Scene, SceneObject

BLOCK = 512
def _river_x(scene: Scene, y: np.ndarray) -> np.ndarray:
    x0, slope, _ = scene.river
    return x0 + slope * y + 0.04 * scene.width * np.sin(y / max(scene.height, 1) * 2 * math.pi)


def _on_water(scene: Scene, x: float, y: float, margin: float) -> bool:
    return abs(x - float(_river_x(scene, np.array(y)))) < scene.river[2] - margin


def _on_road(scene: Scene, x: float, y: float, margin: float) -> bool:
    return any(abs((y if kind == "h" else x) - pos) < half + margin for kind, pos, half in scene.roads)


def plan_scene(width: int, height: int, gsd: float = 0.5, seed: int = 0, density: float = 1.0, classes=CLASSES) -> Scene:
    """Place objects without overlaps: ships on the river, vehicles along roads, the rest on land."""
    rng = np.random.default_rng(seed)
    river = (float(rng.uniform(0.55, 0.8) * width), float(rng.uniform(-0.1, 0.1)), float(rng.uniform(90, 140) / gsd * 0.5))
    roads = []
    for kind, extent in (("h", height), ("v", width)):
        for _ in range(max(1, round(extent / 1400))):
            roads.append((kind, float(rng.uniform(0.15, 0.85) * extent), float(rng.uniform(5, 8) / gsd)))
    scene = Scene(width, height, gsd, seed, (), river, tuple(roads))
    area_km2 = width * height * gsd * gsd / 1e6
    counts = {"small vehicle": 300, "large vehicle": 60, "ship": 40, "plane": 20, "storage tank": 40, "building": 150}
    objects: list[SceneObject] = []
    occupied = []
    for label in classes:
        target = max(1, int(round(counts[label] * area_km2 * density)))
        (lmin, lmax), (wmin, wmax), colours = CLASS_SPECS[label]
        tries = 0
        placed = 0
        while placed < target and tries < target * 40:
            tries += 1
            length = rng.uniform(lmin, lmax) / gsd
            width_px = (rng.uniform(wmin, wmax) / gsd) if label not in ("plane", "storage tank") else length
            margin = length / 2 + 2
            cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
            water = _on_water(scene, cx, cy, margin)
            if (label == "ship") != water:
                continue
            if label in ("small vehicle", "large vehicle"):
                if not _on_road(scene, cx, cy, -width_px) and rng.random() < 0.8:
                    continue
            elif label != "ship" and _on_road(scene, cx, cy, margin):
                continue
            angle = 0.0 if label == "storage tank" else float(rng.uniform(-90, 90))
            if label in ("small vehicle", "large vehicle"):
                for kind, pos, _half in roads:
                    if abs((cy if kind == "h" else cx) - pos) < _half + width_px:
                        angle = (0.0 if kind == "h" else 90.0) + float(rng.normal(0, 3))
            if label == "ship":
                angle = math.degrees(math.atan2(1.0, river[1])) - 90.0 + float(rng.normal(0, 20))
            radius = math.hypot(length, width_px) / 2 + 1
            if any(math.hypot(cx - ox, cy - oy) < radius + orad for ox, oy, orad in occupied):
                continue
            occupied.append((cx, cy, radius))
            colour = colours[int(rng.integers(len(colours)))]
            objects.append(SceneObject(label, float(cx), float(cy), float(length), float(width_px), angle, colour))
            placed += 1
    return Scene(width, height, gsd, seed, tuple(objects), river, tuple(roads))


def _lattice_noise(x0: int, y0: int, w: int, h: int, cell: int, seed: int) -> np.ndarray:
    """Value noise continuous across blocks: lattice values are a hash of global lattice indices."""
    gx0, gy0 = x0 // cell, y0 // cell
    gx1, gy1 = (x0 + w) // cell + 2, (y0 + h) // cell + 2
    ix, iy = np.meshgrid(np.arange(gx0, gx1, dtype=np.uint64), np.arange(gy0, gy1, dtype=np.uint64))
    with np.errstate(over="ignore"):
        v = ix * np.uint64(0x9E3779B97F4A7C15) ^ iy * np.uint64(0xC2B2AE3D27D4EB4F) ^ np.uint64(seed * 0x165667B1 + 1)
        v ^= v >> np.uint64(31)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(29)
    lattice = (v % np.uint64(1 << 20)).astype(np.float32) / float(1 << 20)
    xs = (np.arange(x0, x0 + w) / cell) - gx0
    ys = (np.arange(y0, y0 + h) / cell) - gy0
    xi, yi = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = (xs - xi)[None, :], (ys - yi)[:, None]
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a = lattice[np.ix_(yi, xi)]
    b = lattice[np.ix_(yi, xi + 1)]
    c = lattice[np.ix_(yi + 1, xi)]
    d = lattice[np.ix_(yi + 1, xi + 1)]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, x0: int, y0: int) -> None:
    def shape(points_local: list[tuple[float, float]]) -> list[tuple[float, float]]:
        a = math.radians(obj.angle)
        ca, sa = math.cos(a), math.sin(a)
        return [(obj.cx - x0 + u * ca - v * sa, obj.cy - y0 + u * sa + v * ca) for u, v in points_local]

    L, W = obj.length / 2, obj.width / 2
    dark = tuple(int(c * 0.45) for c in obj.colour)
    shadow = (35, 38, 35)
    if obj.label == "storage tank":
        r = L
        draw.ellipse([obj.cx - x0 - r + r * 0.25, obj.cy - y0 - r + r * 0.25, obj.cx - x0 + r * 1.25, obj.cy - y0 + r * 1.25], fill=shadow)
        draw.ellipse([obj.cx - x0 - r, obj.cy - y0 - r, obj.cx - x0 + r, obj.cy - y0 + r], fill=obj.colour, outline=dark)
        draw.ellipse([obj.cx - x0 - r * 0.3, obj.cy - y0 - r * 0.3, obj.cx - x0 + r * 0.3, obj.cy - y0 + r * 0.3], outline=dark)
    elif obj.label == "plane":
        body = W * 0.14
        draw.polygon(shape([(-L, -body), (L * 0.8, -body), (L, 0), (L * 0.8, body), (-L, body)]), fill=obj.colour)
        draw.polygon(shape([(L * 0.15, 0), (-L * 0.25, -W), (-L * 0.4, -W), (-L * 0.15, 0), (-L * 0.4, W), (-L * 0.25, W)]), fill=obj.colour)
        draw.polygon(shape([(-L * 0.8, 0), (-L, -W * 0.35), (-L, W * 0.35)]), fill=obj.colour)
    elif obj.label == "ship":
        draw.polygon(shape([(-L, -W), (L * 0.55, -W), (L, 0), (L * 0.55, W), (-L, W)]), fill=obj.colour, outline=dark)
        draw.polygon(shape([(-L * 0.7, -W * 0.5), (-L * 0.2, -W * 0.5), (-L * 0.2, W * 0.5), (-L * 0.7, W * 0.5)]), fill=dark)
    elif obj.label == "building":
        draw.polygon(shape([(-L + 2, -W + 2), (L + 2, -W + 2), (L + 2, W + 2), (-L + 2, W + 2)]), fill=shadow)
        draw.polygon(shape([(-L, -W), (L, -W), (L, W), (-L, W)]), fill=obj.colour)
        draw.line(shape([(-L, 0), (L, 0)]), fill=dark, width=1)
    else:  # vehicles: a body with a dark windscreen towards the front
        draw.polygon(shape([(-L, -W), (L, -W), (L, W), (-L, W)]), fill=obj.colour)
        draw.polygon(shape([(L * 0.25, -W * 0.8), (L * 0.55, -W * 0.8), (L * 0.55, W * 0.8), (L * 0.25, W * 0.8)]), fill=dark)


def _patch_bounds(scene: Scene) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 of every patch."""
    if not scene.patches:
        return np.zeros((0, 4))
    return np.array([[min(p[0] for p in q.points), min(p[1] for p in q.points), max(p[0] for p in q.points), max(p[1] for p in q.points)]
                     for q in scene.patches])


def _surface_colours(scene: Scene, x0: int, y0: int, w: int, h: int, bounds: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Float RGB of the surfaces of a block: the background, then the patches touching it."""
    surfaces = Image.new("L", (w, h), SURFACE_IDS[scene.background])
    draw = ImageDraw.Draw(surfaces)
    touching = np.nonzero((bounds[:, 0] < x0 + w) & (bounds[:, 2] > x0) & (bounds[:, 1] < y0 + h) & (bounds[:, 3] > y0))[0]
    for i in touching:
        patch = scene.patches[i]
        draw.polygon([(x - x0, y - y0) for x, y in patch.points], fill=SURFACE_IDS[patch.surface])
    ids = np.asarray(surfaces)
    base = np.array([spec[0] for spec in SURFACES.values()], dtype=np.float32)
    amplitude = np.array([spec[1] for spec in SURFACES.values()], dtype=np.float32)
    return base[ids] + amplitude[ids] * (2.0 * texture[..., None] - 1.0)


def render_block(
    scene: Scene, x0: int, y0: int, w: int, h: int, objects_in_block: list[SceneObject], patch_bounds: np.ndarray | None = None
) -> np.ndarray:
    """RGB pixels of one block of the scene, (h, w, 3) uint8."""
    coarse = _lattice_noise(x0, y0, w, h, 96, scene.seed)
    fine = _lattice_noise(x0, y0, w, h, 7, scene.seed + 17)
    if scene.background is not None:
        bounds = _patch_bounds(scene) if patch_bounds is None else patch_bounds
        rgb = _surface_colours(scene, x0, y0, w, h, bounds, 0.4 * coarse + 0.6 * fine)
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for obj in objects_in_block:
            _draw_object(draw, obj, x0, y0)
        return np.asarray(image)
    ground = 0.65 * coarse + 0.35 * fine
    rgb = np.stack([95 + 45 * ground, 110 + 50 * ground, 70 + 30 * ground], axis=-1)
    ys = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
    xs = np.arange(x0, x0 + w, dtype=np.float64)[None, :]
    water = np.abs(xs - _river_x(scene, ys)) < scene.river[2]
    rgb[water] = np.stack([35 + 10 * fine, 70 + 12 * fine, 95 + 15 * fine], axis=-1)[water]
    for kind, pos, half in scene.roads:
        coord = ys if kind == "h" else xs
        road = np.broadcast_to(np.abs(coord - pos) < half, (h, w)) & ~water
        rgb[road] = np.stack([120 + 10 * fine, 120 + 10 * fine, 118 + 10 * fine], axis=-1)[road]
        line = np.broadcast_to(np.abs(coord - pos) < 0.6, (h, w)) & ~water
        rgb[line] = (230, 230, 220)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in objects_in_block:
        _draw_object(draw, obj, x0, y0)
    return np.asarray(image)


def write_scene(
    scene: Scene, path: str | Path, crs: str = DEFAULT_CRS, overviews: bool = True, tone: tuple[float, float] = (1.0, 0.0), tags: dict | None = None
) -> Path:
    """Render block by block into a tiled GeoTIFF with internal overviews, atomically. `tone`:
    gain and offset of every pixel value (another day's light); `tags`: GDAL metadata (a date)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    reach = max((max(o.length, o.width) for o in scene.objects), default=0) + 4
    patch_bounds = _patch_bounds(scene)
    with staged_file(target) as staging:
        profile = dict(
            driver="GTiff", width=scene.width, height=scene.height, count=3, dtype="uint8", crs=crs,
            transform=scene.transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
            photometric="RGB", BIGTIFF="IF_SAFER",
        )
        centres = np.array([[o.cx, o.cy] for o in scene.objects]) if scene.objects else np.zeros((0, 2))
        with rasterio.open(staging, "w", **profile) as dst:
            for y0 in range(0, scene.height, BLOCK):
                for x0 in range(0, scene.width, BLOCK):
                    w, h = min(BLOCK, scene.width - x0), min(BLOCK, scene.height - y0)
                    near = np.nonzero(
                        (centres[:, 0] > x0 - reach) & (centres[:, 0] < x0 + w + reach)
                        & (centres[:, 1] > y0 - reach) & (centres[:, 1] < y0 + h + reach)
                    )[0] if len(centres) else []
                    block = render_block(scene, x0, y0, w, h, [scene.objects[i] for i in near], patch_bounds)
                    if tone != (1.0, 0.0):
                        block = np.clip(block * tone[0] + tone[1], 0, 255).astype(np.uint8)
                    dst.write(block.transpose(2, 0, 1), window=Window(x0, y0, w, h))
            if tags:
                dst.update_tags(**tags)
            if overviews:
                factors = [f for f in (2, 4, 8, 16, 32, 64) if max(scene.width, scene.height) // f >= 256]
                if factors:
                    dst.build_overviews(factors, Resampling.average)
    return target


def write_truth_dota(scene: Scene, path: str | Path) -> Path:
    lines = [f"gsd:{scene.gsd}"]
    for obj in scene.objects:
        pts = order_vertices(obj.box())
        lines.append(" ".join(f"{v:.1f}" for v in pts.reshape(-1)) + f" {obj.label.replace(' ', '-')} 0")
    return write_text(path, "\n".join(lines) + "\n")


def write_truth_layer(scene: Scene, path: str | Path, crs: str = DEFAULT_CRS) -> Path:
    import shapely
    from pyogrio.raw import write as write_vector
    from rasterio.crs import CRS

    from backend.georef import raster_to_map

    geoms = np.array([shapely.to_wkb(shapely.Polygon(raster_to_map(o.box(), scene.transform))) for o in scene.objects], dtype=object)
    labels = np.array([o.label for o in scene.objects], dtype=object)
    colours = np.array([o.colour_name for o in scene.objects], dtype=object)
    with staged_file(path) as staging:
        write_vector(str(staging), geoms, [labels, colours], ["label", "colour"], layer="truth", driver="GPKG", geometry_type="Polygon",
                     crs=CRS.from_user_input(crs).to_wkt())
    return Path(path)


def generate(out: str | Path, size: int, seed: int, gsd: float | None = None, density: float = 1.0, kind: str = "mixed") -> Scene:
    """Scene GeoTIFF plus `<stem>.dota.txt` and `<stem>.truth.gpkg` beside it. The GSD defaults
    to 0.5 m for the mixed kind and to the demo world's for the laid-out kinds."""
    out = Path(out)
    if kind == "mixed":
        scene = plan_scene(size, size, gsd or 0.5, seed, density)
    else:
        scene = plan_layout(kind, size, size, gsd or WORLD_GSD, seed)
    write_scene(scene, out)
    write_truth_dota(scene, out.with_suffix(".dota.txt"))
    write_truth_layer(scene, out.with_suffix(".truth.gpkg"))
    return scene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="GeoTIFF to write")
    parser.add_argument("--size", type=int, default=2048, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gsd", type=float, help="metres per pixel (default 0.5 for mixed, 0.3 for the other kinds)")
    parser.add_argument("--density", type=float, default=1.0, help="object density multiplier (mixed kind)")
    parser.add_argument("--kind", default="mixed", help="mixed (default), a scene kind (airport, harbor, industrial area, "
                        "parking lot, residential area), town, or countryside")
    args = parser.parse_args(argv)
    if args.kind != "mixed" and args.kind not in LAYOUTS:
        parser.error(f"--kind {args.kind!r} is not one of: mixed, {', '.join(LAYOUTS)}")
    scene = generate(args.out, args.size, args.seed, args.gsd, args.density, args.kind)
    print(f"wrote {args.out} ({args.size}x{args.size} px, {len(scene.objects)} objects) and its ground truth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
