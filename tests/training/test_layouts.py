"""The synthetic world's scene kinds: deterministic, block-wise, laid out as each kind looks,
objects apart from each other, named colours, and countryside mosaics where the object a zoom
question is about covers far less than 1 % of the scene."""

import math
from collections import Counter

import numpy as np
import pytest
import rasterio
import shapely
from pyogrio.raw import read as read_vector

from training.layouts import CLASS_COLOURS, KINDS, LAYOUTS, SITE_KINDS, Frame, plan_layout
from training.synthetic import generate, render_block, write_scene
from training.world import PALETTE, colour_name


def _shapes(scene):
    return [shapely.Polygon(o.box()) for o in scene.objects]


@pytest.mark.parametrize("kind", LAYOUTS[:-1])
def test_same_seed_same_scene_other_seed_other_scene(kind):
    a, b, c = plan_layout(kind, 768, 768, seed=5), plan_layout(kind, 768, 768, seed=5), plan_layout(kind, 768, 768, seed=6)
    assert a == b
    assert a.objects != c.objects


@pytest.mark.parametrize("kind", KINDS + ("town",))
def test_objects_never_overlap_and_stay_inside(kind):
    scene = plan_layout(kind, 1024, 1024, seed=1)
    shapes = _shapes(scene)
    assert len(shapes) >= 5
    tree = shapely.STRtree(shapes)
    left, right = tree.query(shapes, predicate="intersects")
    assert (left == right).all(), "two objects overlap"
    bounds = np.array([s.bounds for s in shapes])
    assert bounds[:, :2].min() >= 0 and bounds[:, 2].max() <= 1024 and bounds[:, 3].max() <= 1024


def test_each_kind_holds_what_makes_it_that_kind():
    expected = {"airport": "plane", "harbor": "ship", "industrial area": "storage tank", "parking lot": "small vehicle",
                "residential area": "building"}
    for kind, label in expected.items():
        counts = Counter(o.label for o in plan_layout(kind, 1024, 1024, seed=2).objects)
        assert counts[label] >= 2, (kind, counts)
    assert "plane" not in Counter(o.label for o in plan_layout("residential area", 1024, 1024, seed=2).objects)


def test_ships_float_on_water_and_never_touch_a_pier():
    scene = plan_layout("harbor", 1024, 1024, seed=3)
    water = shapely.union_all([shapely.Polygon(p.points) for p in scene.patches if p.surface == "water"])
    piers = [shapely.Polygon(p.points) for p in scene.patches if p.surface == "concrete"]
    ships = [s for s, o in zip(_shapes(scene), scene.objects) if o.label == "ship"]
    assert ships
    for ship in ships:
        assert water.contains(ship)
        assert not any(ship.intersects(pier) and ship.intersection(pier).area > 1 for pier in piers[1:])


def test_colours_are_named_from_the_palette_per_class():
    scene = plan_layout("town", 1536, 1536, seed=4)
    for obj in scene.objects:
        assert obj.colour_name in CLASS_COLOURS[obj.label]
        assert PALETTE[obj.colour_name] == obj.colour
    assert colour_name((198, 33, 29)) == "red" and colour_name((10, 10, 12)) == "black"


def test_every_kind_is_a_zone_of_a_town():
    scene = plan_layout("town", 1536, 1536, seed=8)
    assert sorted(z.kind for z in scene.zones) == sorted(KINDS)
    assert Counter(o.label for o in scene.objects)["plane"] == 1  # "the plane" of a town is one plane
    total = sum((z.x1 - z.x0) * (z.y1 - z.y0) for z in scene.zones)
    assert math.isclose(total, 1536 * 1536)
    zone = scene.zones[0]
    assert scene.zone_of(zone.x0, zone.y0, zone.x0 + 10, zone.y0 + 10) == zone


def test_countryside_sites_hold_one_object_of_a_class_far_under_one_percent():
    scene = plan_layout("countryside", 6144, 6144, seed=9)
    counts = Counter(o.label for o in scene.objects)
    sites = list(scene.zones)
    assert len(sites) == len(SITE_KINDS)
    for label in SITE_KINDS:
        assert counts[label] == 1
        obj = next(o for o in scene.objects if o.label == label)
        assert obj.length * obj.width / (6144 * 6144) < 0.001
        assert any(z.contains(obj.cx, obj.cy, obj.cx, obj.cy) and z.kind == SITE_KINDS[label] for z in sites)


def test_frame_turns_headings_with_the_axes():
    """A heading mapped by the frame points the way the frame maps a step along it."""
    for transpose in (False, True):
        for flip_u in (False, True):
            for flip_v in (False, True):
                frame = Frame(10, 20, 110, 220, transpose, flip_u, flip_v)
                for heading in (0.0, 30.0, 90.0, -120.0):
                    a = math.radians(heading)
                    x0, y0 = frame.point(40, 50)
                    x1, y1 = frame.point(40 + math.cos(a), 50 + math.sin(a))
                    mapped = math.radians(frame.angle(heading))
                    assert math.isclose(x1 - x0, math.cos(mapped), abs_tol=1e-9) and math.isclose(y1 - y0, math.sin(mapped), abs_tol=1e-9)


def test_blocks_render_the_same_pixels_wherever_they_are_cut():
    scene = plan_layout("harbor", 600, 600, seed=11)
    whole = render_block(scene, 100, 100, 300, 300, list(scene.objects))
    part = render_block(scene, 250, 180, 120, 90, list(scene.objects))
    assert np.array_equal(whole[80:170, 150:270], part)


def test_written_scene_matches_its_blocks_and_truth(tmp_path):
    scene = generate(tmp_path / "s.tif", 700, seed=3, kind="industrial area")
    assert scene.gsd == 0.3
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.overviews(1) == [2]
        pixels = src.read(window=((512, 700), (0, 300))).transpose(1, 2, 0)
    assert np.array_equal(pixels, render_block(scene, 0, 512, 300, 188, list(scene.objects)))
    lines = (tmp_path / "s.dota.txt").read_text().splitlines()
    assert lines[0] == "gsd:0.3" and len(lines) == len(scene.objects) + 1
    meta, _, _, (labels, colours) = read_vector(tmp_path / "s.truth.gpkg")
    assert list(meta["fields"]) == ["label", "colour"]
    assert sorted(colours) == sorted(o.colour_name for o in scene.objects)


def test_a_mosaic_is_written_block_by_block(tmp_path):
    """A 4,096 px countryside scene: the writer holds one block at a time."""
    scene = plan_layout("countryside", 4096, 4096, seed=1)
    path = write_scene(scene, tmp_path / "m.tif")
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (4096, 4096) and src.block_shapes[0] == (512, 512)
        assert src.overviews(1)[-1] >= 8
