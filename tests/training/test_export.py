"""`training.export` on a generated GeoTIFF + GeoPackage and on the real solaris GeoTIFF."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from pyogrio.raw import write as write_vector
from pyproj import Transformer
from rasterio.crs import CRS

from backend.errors import Cancelled, UserError
from backend.geometry import order_vertices
from backend.georef import View, raster_to_map
from backend.raster import RasterSource
from backend.resolution import smart_resize
from training.export import ExportOptions, assign_splits, export_dataset, plan_blocks
from training.labels import read_labels

from .conftest import BLOCK, OVERLAP, TILE

OPTIONS = ExportOptions(tile_size=TILE, tile_overlap=OVERLAP, block_size=BLOCK, keep_empty=1.0)


def records(folder: Path, split: str) -> list[dict]:
    path = folder / split / "conversations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def view_of(record: dict) -> View:
    col, row, width, height = record["window"]
    out_w, out_h = record["resized_size"]
    return View(col, row, width, height, out_w, out_h)


def answer_boxes(answer: str) -> list[tuple[str, np.ndarray]]:
    if answer == "There are none.":
        return []
    boxes = []
    for line in answer.splitlines():
        coords, label = line.split(" ", 1)
        boxes.append((label, np.array([int(v) for v in coords.split(",")], dtype=float).reshape(4, 2)))
    return boxes


def corner_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a corner of either quadrilateral to the nearest corner of the other."""
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def truth_in_pixels(scene_path: Path) -> list[tuple[str, shapely.Polygon]]:
    with RasterSource.open(scene_path) as source:
        layer = read_labels(scene_path.with_suffix(".truth.gpkg"), source, class_field="label")
    return [(o.label, o.geometry) for o in layer.objects]


def check_round_trip(folder: Path, truth: list[tuple[str, shapely.Polygon]], tolerance: float = 1.5) -> int:
    """Every object a tile shows whole comes back, out of the resized frame, within `tolerance`
    raster pixels of its true rectangle (clamped into the tile: an irregular footprint touching
    the edge has a rectangle reaching past it); every answered object is one of them or a cut one."""
    checked = 0
    for split in ("train", "val"):
        for record in records(folder, split):
            if record["task"] != "detect":
                continue
            view = view_of(record)
            footprint = shapely.Polygon(view.corners())
            answered = [(label, view.to_raster(points)) for label, points in answer_boxes(record["messages"][-1]["content"])]
            for label, polygon in truth:
                share = polygon.intersection(footprint).area / polygon.area
                if share < 0.999:
                    continue
                rectangle = np.asarray(shapely.oriented_envelope(polygon).exterior.coords)[:4]
                left, top, right, bottom = footprint.bounds
                rectangle = np.stack([rectangle[:, 0].clip(left, right), rectangle[:, 1].clip(top, bottom)], axis=-1)
                distances = [corner_distance(rectangle, pts) for lab, pts in answered if lab == label]
                assert distances and min(distances) <= tolerance, (record["id"], label, min(distances, default=None))
                checked += 1
            for label, points in answered:
                centre = shapely.Point(points.mean(axis=0))
                assert any(lab == label and poly.buffer(2).contains(centre) for lab, poly in truth), (record["id"], label)
    return checked


def test_round_trip_on_a_generated_scene(exported, scene):
    folder, manifest = exported
    path, plan = scene
    checked = check_round_trip(folder, truth_in_pixels(path))
    assert checked >= len(plan.objects)  # overlapping tiles show most objects whole more than once
    assert manifest["counts"]["labels"] == {"features": len(plan.objects), "usable": len(plan.objects), "skipped": {}}


def test_answers_follow_model_io(exported):
    folder, manifest = exported
    for record in records(folder, "train"):
        system, user, assistant = record["messages"]
        assert system["role"] == "system" and "polygon vertices" in system["content"]
        assert user["content"] == "<image>find the " + ", ".join(manifest["classes"]) + "."
        boxes = answer_boxes(assistant["content"])
        keys = [(label, int(p[0, 1]), int(p[0, 0])) for label, p in boxes]
        assert keys == sorted(keys)
        for _, points in boxes:
            np.testing.assert_array_equal(order_vertices(points), points)
            width, height = record["resized_size"]
            assert points[:, 0].min() >= 0 and points[:, 0].max() <= width
            assert points[:, 1].min() >= 0 and points[:, 1].max() <= height


def test_tiles_are_the_pixels_the_backend_shows_the_model(exported, scene):
    folder, _ = exported
    path, _ = scene
    with RasterSource.open(path) as source:
        stretch = source.stretch_for(source.window_for_extent(None))
        for record in records(folder, "val")[:4]:
            stored = np.asarray(Image.open(folder / "val" / record["images"][0]))
            width, height = record["image_size"]
            assert (height, width) == smart_resize(height, width)  # the processor will not resize it again
            np.testing.assert_array_equal(stored, source.read_view(view_of(record), stretch).image)


def test_dota_labels_and_manifest_counts_match_the_files(exported):
    folder, manifest = exported
    for split in ("train", "val"):
        recs = [r for r in records(folder, split) if r["task"] == "detect"]
        counts = manifest["counts"][split]
        assert counts["tiles"] == len(recs) == len(list((folder / split / "images").iterdir()))
        objects = 0
        for record in recs:
            name = Path(record["images"][0]).stem
            lines = (folder / split / "labelTxt" / f"{name}.txt").read_text().splitlines()
            answer = answer_boxes(record["messages"][-1]["content"])
            assert len(lines) == len(answer)
            for line in lines:
                fields = line.split()
                assert len(fields) == 10 and fields[9] in ("0", "1") and " " not in fields[8]
            objects += len(answer)
        assert sum(counts["objects"].values()) == objects
        assert counts["empty_tiles"] == sum(r["messages"][-1]["content"] == "There are none." for r in recs)


def test_train_and_val_tiles_never_share_pixels(exported):
    folder, manifest = exported
    assert {b["split"] for b in manifest["blocks"]} == {"train", "val"}
    footprints = {split: shapely.union_all([shapely.Polygon(view_of(r).corners()) for r in records(folder, split)]) for split in ("train", "val")}
    assert footprints["train"].intersection(footprints["val"]).area == 0


def test_blocks_cover_the_extent_and_splits_are_seeded():
    from backend.raster import PixelWindow

    blocks = plan_blocks(PixelWindow(10, 20, 1000, 700), 1000, 700, 300)
    assert sum(b.width * b.height for b in blocks) == 1000 * 700
    assert shapely.union_all([shapely.box(b.col_off, b.row_off, b.col_off + b.width, b.row_off + b.height) for b in blocks]).equals(
        shapely.box(10, 20, 1010, 720)
    )
    splits = assign_splits(12, 0.25, seed=4)
    assert splits.count("val") == 3 and splits == assign_splits(12, 0.25, seed=4)
    assert assign_splits(1, 0.5, 0) == ["train"]
    assert assign_splits(2, 0.01, 0).count("val") == 1


def test_labels_in_another_crs_are_reprojected(scene, tmp_path):
    path, _ = scene
    from pyogrio.raw import read

    meta, _, geometry, fields = read(path.with_suffix(".truth.gpkg"))
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    reprojected = [shapely.transform(shapely.from_wkb(g), lambda xy: np.stack(to_wgs84.transform(xy[:, 0], xy[:, 1]), axis=-1)) for g in geometry]
    labels = tmp_path / "wgs84.geojson"
    write_vector(str(labels), np.array(shapely.to_wkb(reprojected), dtype=object), fields, list(meta["fields"]), driver="GeoJSON",
                 geometry_type="Polygon", crs=CRS.from_epsg(4326).to_wkt())
    manifest = export_dataset(path, labels, tmp_path / "out", class_field="label", options=OPTIONS)
    assert manifest["source"]["reprojected"] and manifest["source"]["labels_crs"] == "EPSG:4326"
    assert check_round_trip(tmp_path / "out", truth_in_pixels(path)) > 0


def test_grounding_and_captions_from_attributes(scene, tmp_path):
    path, plan = scene
    pixels = [o.box() for o in plan.objects]
    geometry = np.array([shapely.to_wkb(shapely.Polygon(raster_to_map(p, plan.transform))) for p in pixels], dtype=object)
    labels = np.array([o.label for o in plan.objects], dtype=object)
    texts = np.array([f"the {o.label} number {i}" if o.label == "plane" else "" for i, o in enumerate(plan.objects)], dtype=object)
    captions = np.array([f"a {o.label} seen from above" for o in plan.objects], dtype=object)
    layer = tmp_path / "described.gpkg"
    write_vector(str(layer), geometry, [labels, texts, captions], ["kind", "description", "caption"], driver="GPKG",
                 geometry_type="Polygon", crs=CRS.from_epsg(32633).to_wkt())
    manifest = export_dataset(path, layer, tmp_path / "out", class_field="kind", text_field="description",
                              caption_field="caption", options=OPTIONS)
    samples = records(tmp_path / "out", "train") + records(tmp_path / "out", "val")
    grounding = [s for s in samples if s["task"] == "ground"]
    assert grounding
    for sample in grounding:
        system, user, answer = sample["messages"]
        assert "image object detection" in system["content"]
        expression = user["content"].removeprefix("<image>find the ")
        assert expression.startswith("plane number ")  # the layer's "the" is not doubled
        coords, text = answer["content"].split(" ", 1)
        assert text == expression
        box = np.array([int(v) for v in coords.split(",")], dtype=float).reshape(2, 2)
        truth = pixels[int(expression.split()[-1])]
        corners = view_of(sample).to_raster(box)
        assert np.abs(corners - np.array([truth.min(axis=0), truth.max(axis=0)])).max() <= 1.5
    captions_seen = [s for s in samples if s["task"] == "caption"]
    assert captions_seen and all(s["messages"][0]["content"].startswith("<image>[identify] What is the object present at [") for s in captions_seen)
    totals = {task: manifest["counts"]["train"]["samples"].get(task, 0) + manifest["counts"]["val"]["samples"].get(task, 0) for task in ("ground", "caption")}
    assert totals == {"ground": len(grounding), "caption": len(captions_seen)}


@pytest.mark.realdata
def test_real_geotiff_with_building_footprints(realdata, tmp_path):
    raster = realdata / "geotiff" / "solaris" / "sample_geotiff.tif"
    labels = realdata / "geotiff" / "solaris" / "geotiff_labels.geojson"
    if not raster.is_file():
        pytest.skip(f"{raster} is absent")
    options = ExportOptions(tile_size=512, tile_overlap=128, block_size=512, keep_empty=1.0, val_fraction=0.25)
    manifest = export_dataset(raster, labels, tmp_path / "buildings", class_name="building", options=options)
    assert manifest["classes"] == ["building"]
    assert manifest["counts"]["labels"]["usable"] == 43
    assert manifest["source"]["raster_crs"] == "EPSG:32616" and not manifest["source"]["reprojected"]
    shown = manifest["counts"]["train"]["objects"].get("building", 0) + manifest["counts"]["val"]["objects"].get("building", 0)
    assert shown >= 43 * 0.9
    with RasterSource.open(raster) as source:
        layer = read_labels(labels, source, class_name="building")
    assert check_round_trip(tmp_path / "buildings", [(o.label, o.geometry) for o in layer.objects]) >= 30
    first = records(tmp_path / "buildings", "train")[0]
    image = np.asarray(Image.open(tmp_path / "buildings" / "train" / first["images"][0]))
    assert image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() and image.std() > 10  # 1-band uint16 -> stretched grey


def _layer(path: Path, geometries: list, labels: list, crs: str | None = "EPSG:32633") -> Path:
    wkb = np.array([shapely.to_wkb(g) if g is not None else None for g in geometries], dtype=object)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # a layer without CRS is the point
        write_vector(str(path), wkb, [np.array(labels, dtype=object)], ["label"], driver="GPKG", geometry_type="Unknown",
                     crs=CRS.from_user_input(crs).to_wkt() if crs else None)
    return path


def test_bad_geometries_are_skipped_and_counted(scene, tmp_path):
    path, plan = scene
    x0, y0 = plan.transform @ (100, 100)
    good = shapely.box(x0, y0 - 10, x0 + 10, y0)
    bowtie = shapely.Polygon([(x0, y0), (x0 + 10, y0 - 10), (x0 + 10, y0), (x0, y0 - 10)])
    layer = _layer(tmp_path / "mixed.gpkg", [good, bowtie, shapely.Point(x0, y0), shapely.Polygon(), None, good],
                   ["ship", "ship", "ship", "ship", "ship", ""])
    manifest = export_dataset(path, layer, tmp_path / "out", class_field="label", options=OPTIONS)
    skipped = manifest["counts"]["labels"]["skipped"]
    assert manifest["counts"]["labels"]["usable"] == 1
    assert sum(skipped.values()) == 5 and skipped["no class value"] == 1
    assert any(reason.startswith("invalid geometry") for reason in skipped)
    assert any(reason.startswith("not a polygon") for reason in skipped)


@pytest.mark.parametrize(
    "case, message",
    [
        ("nothing usable", "no usable polygon"),
        ("far away", "overlaps the raster"),
        ("missing field", "--class-field 'type' is not a field"),
        ("no crs", "the labels have no CRS"),
        ("exists", "already exists"),
        ("overwrite a folder that is no export", "holds no earlier export"),
        ("bad option", "--min-visible"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(scene, tmp_path, case, message):
    path, plan = scene
    x0, y0 = plan.transform @ (100, 100)
    box = shapely.box(x0, y0 - 10, x0 + 10, y0)
    labels = _layer(tmp_path / "labels.gpkg", [box], ["ship"])
    kwargs = {"class_field": "label", "options": OPTIONS}
    out = tmp_path / "out"
    if case == "nothing usable":
        labels = _layer(tmp_path / "bad.gpkg", [shapely.Point(x0, y0)], ["ship"])
    elif case == "far away":
        labels = _layer(tmp_path / "far.gpkg", [shapely.affinity.translate(box, 1e5, 1e5)], ["ship"])
    elif case == "missing field":
        kwargs["class_field"] = "type"
    elif case == "no crs":
        labels = _layer(tmp_path / "nocrs.gpkg", [box], ["ship"], crs=None)
    elif case in ("exists", "overwrite a folder that is no export"):
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        kwargs["overwrite"] = case != "exists"
    elif case == "bad option":
        kwargs["options"] = ExportOptions(min_visible=0.0)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserError, match=message):
        export_dataset(path, labels, out, **kwargs)
    assert sorted(os.listdir(tmp_path)) == before
    if out.exists():
        assert (out / "keep.txt").read_text() == "mine"


def test_cancelling_leaves_nothing(scene, tmp_path):
    path, _ = scene
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        export_dataset(path, path.with_suffix(".truth.gpkg"), tmp_path / "out", class_field="label", options=OPTIONS, should_stop=stop)
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_a_previous_export(exported, scene, tmp_path):
    path, _ = scene
    out = tmp_path / "out"
    export_dataset(path, path.with_suffix(".truth.gpkg"), out, class_field="label", options=OPTIONS)
    (out / "stale.txt").write_text("old")
    progress = []
    export_dataset(path, path.with_suffix(".truth.gpkg"), out, class_field="label", options=OPTIONS, overwrite=True,
                   progress=lambda done, total: progress.append((done, total)))
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()
    assert progress[-1][0] == progress[-1][1] and sorted(os.listdir(tmp_path)) == ["out"]


def test_export_at_a_coarser_gsd(scene, tmp_path):
    path, _ = scene
    options = ExportOptions(tile_size=TILE, tile_overlap=OVERLAP, block_size=BLOCK // 2, keep_empty=1.0, gsd=1.0)
    manifest = export_dataset(path, path.with_suffix(".truth.gpkg"), tmp_path / "out", class_field="label", options=options)
    assert manifest["policy"]["gsd"] == 1.0 and len(manifest["blocks"]) == 4
    first = records(tmp_path / "out", "train")[0]
    # a working pixel at 1 m is two raster pixels at 0.5 m (a tile a few pixels over 252 is read into 252: up to 2% more)
    assert 2.0 <= first["window"][2] / first["image_size"][0] <= 2.0 * 1.02
    # 1.5 px of the working grid is 3 raster pixels here
    assert check_round_trip(tmp_path / "out", truth_in_pixels(path), tolerance=3.0) > 0
