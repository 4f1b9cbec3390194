"""`python -m training.runner`, the child process of the service's training jobs: its stdout
is JSON lines only, its requests mean what the CLI's options mean, bad input is one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.contract import ExportTrainingOptions, ExportTrainingRequest, FitTrainingRequest
from backend.errors import UserError
from training.config import SHIPPED_CONFIGS, config_path, load_config
from training.export import ExportOptions
from training.runner import fit_settings

from .conftest import BLOCK, OVERLAP, TILE

REPO = Path(__file__).resolve().parents[2]


def run_runner(kind: str, request) -> tuple[int, list[dict], str]:
    done = subprocess.run([sys.executable, "-m", "training.runner", kind], input=request.model_dump_json(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_export_reports_json_lines_then_the_manifest(scene, tmp_path):
    path, _ = scene
    out = tmp_path / "data"
    request = ExportTrainingRequest(raster=str(path), labels=str(path.with_suffix(".truth.gpkg")), class_field="label", out=str(out),
                                    options=ExportTrainingOptions(tile_size=TILE, tile_overlap=OVERLAP, block_size=BLOCK))
    code, events, stderr = run_runner("export", request)
    assert code == 0, stderr
    listening, *progress, last = events
    assert listening == {"event": "listening"}
    assert progress and all(e["event"] == "progress" and e["progress"]["unit"] == "tiles" for e in progress)
    assert [e["progress"]["done"] for e in progress] == list(range(1, len(progress) + 1))
    assert last["event"] == "done" and last["outputs"]["dataset"] == str(out.resolve())
    assert last["result"] == json.loads((out / "manifest.json").read_text())


def test_bad_input_is_one_failed_line_and_exit_2(scene, tmp_path):
    path, _ = scene
    request = ExportTrainingRequest(raster=str(path), labels=str(path.with_suffix(".truth.gpkg")), class_field="kind", out=str(tmp_path / "x"))
    code, events, _ = run_runner("export", request)
    assert code == 2 and [e["event"] for e in events] == ["listening", "failed"]
    assert events[1]["error"].startswith("--class-field 'kind' is not a field")


def test_the_service_and_the_cli_share_export_defaults():
    service = ExportTrainingOptions().model_dump()
    cli = dataclasses.asdict(ExportOptions())
    assert service == {k: cli[k] for k in service}


def test_a_fit_request_means_what_the_cli_options_mean(tmp_path):
    request = FitTrainingRequest(model="m", data="d*2", out=str(tmp_path), config="full", method="full", max_steps=7, merge=True,
                                 overrides=["learning_rate=1e-3", "lora_r=8"])
    settings = fit_settings(request)
    expected = load_config(SHIPPED_CONFIGS / "full.yaml", {"learning_rate": 1e-3, "lora_r": 8, "method": "full", "max_steps": 7, "merge": True})
    assert settings.config == expected and (settings.model, settings.data, settings.out) == ("m", "d*2", str(tmp_path))


def test_shipped_configs_by_name(tmp_path):
    assert config_path("lora") == SHIPPED_CONFIGS / "lora.yaml" and load_config("full").method == "full"
    own = tmp_path / "lora"
    own.write_text("method: full\n")
    assert config_path(own) == own  # a file of that name wins
    with pytest.raises(UserError, match="config 'lorra' is neither a file nor a shipped config"):
        load_config("lorra")
