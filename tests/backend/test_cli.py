"""`rscovlm` end to end in a subprocess: a generated GeoTIFF, the tiny checkpoint, real files out."""

import json
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

RSCOVLM = Path(sys.executable).parent / "rscovlm"


def rscovlm(*args, cwd=None):
    return subprocess.run([str(RSCOVLM), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_detect_writes_a_geopackage_in_the_raster_crs(scene, tiny_checkpoint, tmp_path):
    path, _ = scene
    out = tmp_path / "detections.gpkg"
    done = rscovlm("detect", path, "--classes", "plane,ship,small vehicle", "--model", tiny_checkpoint, "--max-new-tokens", "24", "-o", out)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "tile(s)" in done.stdout
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:32633"
    assert list(info["fields"]) == ["task", "label", "model", "prompt", "tile", "raw_text", "text", "role"]


def test_json_output_and_text_tasks(scene, tiny_checkpoint):
    path, _ = scene
    extent = "500000,4400000,500256,4400256"
    done = rscovlm("caption", path, "--model", tiny_checkpoint, "--extent", extent, "--extent-crs", "EPSG:32633", "--json", "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "FeatureCollection" and result["task"] == "caption"
    assert result["crs"] == "EPSG:32633" and result["raster"]["window"] == [0, 512, 512, 512]
    assert result["features"][0]["properties"]["text"] == result["text"]
    for args in (("classify", "--classes", "airport,harbor"), ("ask", "--question", "How many planes are parked?"), ("ground", "--expression", "the plane")):
        done = rscovlm(*args[:1], path, *args[1:], "--model", tiny_checkpoint, "--json", "--max-new-tokens", "8", "--no-progress")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["task"] == args[0]


def test_unreferenced_image_gives_pixel_coordinates(tmp_path, tiny_checkpoint):
    import numpy as np
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(png)
    done = rscovlm("caption", png, "--model", tiny_checkpoint, "--json", "--max-new-tokens", "4", "-o", tmp_path / "c.gpkg")
    assert done.returncode == 0, done.stderr
    assert "no georeferencing" in done.stderr
    result = json.loads(done.stdout)
    assert result["crs"] is None
    assert pyogrio.read_info(tmp_path / "c.gpkg")["crs"] is None


@pytest.mark.parametrize(
    "args,message",
    [
        (("detect", "missing.tif", "--classes", "plane"), "raster file not found: missing.tif"),
        (("detect", "{scene}", "--classes", " , "), "needs a non-empty list of classes"),
        (("detect", "{scene}", "--classes", "plane", "--extent", "0,0,1,1"), "does not overlap the raster"),
        (("detect", "{scene}", "--classes", "plane", "--extent", "1,2,3"), "has 3 numbers, not 4"),
        (("detect", "{scene}", "--classes", "plane", "--extent", "0,0,1,1", "--extent-crs", "EPSG:0"), "unknown CRS"),
        (("detect", "{scene}", "--classes", "plane", "--quantize", "4bit"), "needs a CUDA GPU"),
        (("detect", "{scene}", "--classes", "plane", "--bands", "1,5,2"), "does not fit"),
        (("detect", "{scene}", "--classes", "plane", "-o", "out.shp"), "cannot tell the output format"),
        (("detect", "{notraster}", "--classes", "plane"), "not a readable raster"),
        (("detect", "{scene}", "--classes", "plane", "--model", "{folder}"), "no config.json"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(scene, tiny_checkpoint, tmp_path, args, message):
    notraster = tmp_path / "notes.tif"
    notraster.write_text("hello")
    folder = tmp_path / "empty-model"
    folder.mkdir()
    filled = [a.format(scene=scene[0], notraster=notraster, folder=folder) for a in args]
    if "--model" not in filled:
        filled += ["--model", str(tiny_checkpoint)]
    before = sorted(p.name for p in tmp_path.iterdir())
    if "-o" not in filled:
        filled += ["-o", "out.gpkg"]
    done = rscovlm(*filled, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_model_is_required_where_no_demo_checkpoint_is_installed(scene, tmp_path, monkeypatch, capsys):
    from backend.cli import main as cli_main
    from backend.cli import tasks

    monkeypatch.setattr(tasks, "BUNDLED_MODEL", tmp_path / "no-demo-checkpoint")
    assert cli_main(["caption", str(scene[0]), "--no-progress"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_the_bundled_demo_checkpoint_is_the_default_model():
    import argparse

    from backend.cli.tasks import BUNDLED_MODEL, resolve_model

    assert resolve_model(argparse.Namespace(model=None)) == str(BUNDLED_MODEL)
    assert resolve_model(argparse.Namespace(model="models/mine")) == "models/mine"
