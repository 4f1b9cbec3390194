"""Synthetic pairs of dates: the truth layer and mask are where the two images differ, each image
carries its date, and `rscovlm eval change` scores the truth against itself as perfect and a
misplaced or half answer as what it is."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

from backend.change import acquisition_date
from backend.cli import main as cli_main
from backend.raster import RasterSource
from training.change_pairs import AFTER_TONE, DATES, plan_change, write_pair
from training.change_pairs import main as change_pairs_main
from training.layouts import plan_layout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    pair = plan_change(plan_layout("town", 768, 768, seed=3), 3, share=0.3)
    return pair, write_pair(pair, folder / "before.tif", folder / "after.tif")


def test_the_same_plan_gives_the_same_changes():
    scene = plan_layout("harbor", 640, 640, seed=5)
    assert plan_change(scene, 5) == plan_change(scene, 5)
    assert plan_change(scene, 5) != plan_change(scene, 6)


def test_the_truth_is_where_the_two_dates_differ(written):
    pair, files = written
    assert {c.change for c in pair.changes} == {"appeared", "disappeared"}
    with RasterSource.open(files["before"]) as first, rasterio.open(files["mask"]) as mask_file:
        assert (acquisition_date(first), mask_file.crs) == (DATES[0], first.dataset.crs)
        a = first.dataset.read().astype(float)
        mask = mask_file.read(1) > 0
    with rasterio.open(files["after"]) as second:
        b = second.read().astype(float)
        assert second.tags()["TIFFTAG_DATETIME"].startswith(DATES[1].replace("-", ":"))
    gain, offset = AFTER_TONE
    differs = np.abs(b - (gain * a + offset)).max(axis=0) > 40
    near = shapely.buffer(shapely.union_all([shapely.box(*np.r_[c.obj.box().min(0), c.obj.box().max(0)]) for c in pair.changes]), 2)
    inside = rasterize([(near, 1)], out_shape=mask.shape).astype(bool)
    assert mask.sum() > 0 and (mask & ~inside).sum() == 0  # the mask burns the changed objects only
    assert (differs & ~inside).sum() < 0.002 * differs.size  # nothing else differs (the half-pixel shift's edges aside)
    assert (differs & mask).sum() > 0.3 * mask.sum()
    meta, _, geometry, fields = pyogrio.raw.read(str(files["truth"]))
    assert len(geometry) == len(pair.changes) and meta["fields"].tolist() == ["label", "change"]


def test_eval_change_scores_the_truth_as_perfect_and_a_misplaced_answer_as_nothing(written, tmp_path, capsys):
    _, files = written
    truth, mask = str(files["truth"]), str(files["mask"])
    assert cli_main(["eval", "change", "--pred", truth, "--gt", truth, "--mask", mask, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objects"]["F1"] == 1.0 and report["pixels"]["pixel_F1"] > 0.99

    meta, _, geometry, fields = pyogrio.raw.read(truth)
    polygons = shapely.from_wkb(geometry)
    shifted = np.array([shapely.to_wkb(shapely.transform(p, lambda xy: xy + [40.0, 0.0])) for p in polygons], dtype=object)
    half = np.arange(len(polygons)) % 2 == 0
    for name, geoms, keep in (("shifted", shifted, np.ones(len(polygons), bool)), ("half", geometry, half)):
        pyogrio.raw.write(str(tmp_path / f"{name}.gpkg"), geoms[keep], [f[keep] for f in fields], meta["fields"].tolist(),
                          driver="GPKG", geometry_type="Polygon", crs=meta["crs"])
    assert cli_main(["eval", "change", "--pred", str(tmp_path / "shifted.gpkg"), "--gt", truth, "--mask", mask, "--json"]) == 0
    shifted_report = json.loads(capsys.readouterr().out)
    assert shifted_report["objects"]["matched"] == 0 and shifted_report["pixels"]["pixel_F1"] < report["pixels"]["pixel_F1"]
    assert cli_main(["eval", "change", "--pred", str(tmp_path / "half.gpkg"), "--gt", truth, "--json"]) == 0
    half_report = json.loads(capsys.readouterr().out)["objects"]
    assert (half_report["precision"], half_report["matched"]) == (1.0, int(half.sum()))
    assert half_report["recall"] == pytest.approx(half.sum() / len(polygons))


def test_the_command_writes_a_pair_and_says_what_changed(tmp_path, capsys):
    files = ["--out", str(tmp_path / "a.tif"), "--after", str(tmp_path / "b.tif")]
    assert change_pairs_main([*files, "--size", "1024", "--seed", "1"]) == 0
    said = capsys.readouterr().out
    assert "appeared" in said and (tmp_path / "a.changes.gpkg").is_file() and (tmp_path / "a.changes.tif").is_file()
    with pytest.raises(SystemExit):
        change_pairs_main([*files, "--size", "300"])
    assert "--size 300 is too small for a town scene" in capsys.readouterr().err
