"""`rscovlm train export | fit | merge` through the real command-line entry point."""

from __future__ import annotations

import json

from backend.cli import main

from .conftest import BLOCK, OVERLAP, TILE


def test_export_command(scene, tmp_path, capsys):
    path, _ = scene
    out = tmp_path / "boats"
    code = main(["train", "export", "--raster", str(path), "--labels", str(path.with_suffix(".truth.gpkg")),
                 "--class-field", "label", "--out", str(out), "--tile-size", str(TILE), "--tile-overlap", str(OVERLAP),
                 "--block-size", str(BLOCK), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"train: {manifest['counts']['train']['tiles']} tile(s)" in captured.out
    assert f"wrote {out}" in captured.out


def test_export_bad_input_is_one_line_and_exit_2(scene, tmp_path, capsys):
    path, _ = scene
    code = main(["train", "export", "--raster", str(path), "--labels", str(path.with_suffix(".truth.gpkg")),
                 "--class-field", "kind", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rscovlm: error: --class-field 'kind' is not a field") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_fit_and_merge_commands(tiny_checkpoint, exported, tmp_path, capsys):
    data, _ = exported
    out = tmp_path / "run"
    code = main(["train", "fit", "--data", f"{data}%50", "--model", str(tiny_checkpoint), "--out", str(out), "--max-steps", "2",
                 "--set", "lora_r=4", "--set", "val_samples=2", "--set", "val_ap_samples=0", "--set", "rescale=0", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "trained 2 step(s), val loss" in captured.out and str(out / "adapter") in captured.out
    code = main(["train", "merge", "--model", str(tiny_checkpoint), "--adapter", str(out / "adapter"), "--out", str(tmp_path / "m")])
    assert code == 0 and (tmp_path / "m" / "config.json").is_file()
    code = main(["train", "fit", "--data", str(tmp_path / "none"), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "r2")])
    assert code == 2 and "missing dataset" in capsys.readouterr().err
