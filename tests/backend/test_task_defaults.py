"""A checkpoint's own task defaults (rscovlm_task_defaults.json): the task commands use them
when that checkpoint is the model; options on the command line still win; a bad file is refused
with one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from backend.cli import main as cli_main
from backend.cli.tasks import BUNDLED_MODEL
from backend.contract import TaskOptions, TaskRequest
from backend.errors import UserError
from backend.model_defaults import TASK_DEFAULTS_FILE, ModelDefaults, model_defaults, with_model_defaults
from backend.prompts import DOTA_CLASSES
from backend.resolution import MAX_PIXELS, MIN_PIXELS


@pytest.fixture
def declaring_checkpoint(tiny_checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / TASK_DEFAULTS_FILE).write_text(json.dumps({"max_pixels": 200704, "tile_size": 224, "tile_overlap": 64}))
    return folder


def _views(capsys, *args) -> int:
    assert cli_main(list(args) + ["--json", "--no-progress", "--max-new-tokens", "2"]) == 0
    return json.loads(capsys.readouterr().out)["stats"]["views"]


def test_detection_cuts_the_tiles_the_checkpoint_declares(declaring_checkpoint, scene, capsys):
    path, _ = scene  # 1024 px: 224 px tiles overlapping by 64 make 6 x 6
    assert _views(capsys, "detect", str(path), "--model", str(declaring_checkpoint), "--classes", "ship") == 36
    assert _views(capsys, "detect", str(path), "--model", str(declaring_checkpoint), "--classes", "ship", "--tile-size", "504") == 9


def test_whole_extent_views_stay_inside_the_declared_budget(declaring_checkpoint, scene, capsys):
    path, _ = scene
    args = ["caption", str(path), "--model", str(declaring_checkpoint), "--json", "--no-progress", "--max-new-tokens", "2"]
    assert cli_main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stats"]["visual_tokens"] == 256  # 448 x 448: the declared budget, not MODEL_IO's 1296 tokens


def test_no_file_no_defaults_and_a_bad_file_is_refused(tiny_checkpoint, declaring_checkpoint, scene, capsys):
    for model in ("Qingyun/RSCoVLM-7B-2512", None):  # a hub id not downloaded here: nothing to read
        assert model_defaults(model) == ModelDefaults() and ModelDefaults().classes == DOTA_CLASSES
    # a checkpoint without a declaration: its processor's pixel range (MODEL_IO's for the tiny test model), DOTA-v1.0's classes
    tiny = model_defaults(str(tiny_checkpoint))
    assert tiny.options == {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS} and tiny.classes == DOTA_CLASSES
    for bad, problem in (({"max_pixel": 1}, "unknown task options: max_pixel"), ({"classes": []}, "non-empty list"), ({"tile_size": 3}, "tile_size")):
        (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(json.dumps(bad))
        with pytest.raises(UserError, match=problem):
            model_defaults(str(declaring_checkpoint))
    (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(json.dumps({"max_pixel": 1}))
    path, _ = scene
    assert cli_main(["detect", str(path), "--model", str(declaring_checkpoint), "--classes", "ship"]) == 2
    assert "max_pixel" in capsys.readouterr().err


def test_an_adapter_declares_over_its_base_and_the_user_over_both(declaring_checkpoint, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / TASK_DEFAULTS_FILE).write_text(json.dumps({"tile_size": 336, "classes": ["fishing boat", "yacht"]}))
    defaults = model_defaults(str(declaring_checkpoint), str(adapter))
    assert defaults.options == {"min_pixels": MIN_PIXELS, "max_pixels": 200704, "tile_size": 336, "tile_overlap": 64}
    assert defaults.classes == ("fishing boat", "yacht") and [Path(s).name for s in defaults.sources] == [
        "processor_config.json", TASK_DEFAULTS_FILE, TASK_DEFAULTS_FILE]
    request = TaskRequest(task="detect", raster="x.tif", classes=["yacht"])
    options = with_model_defaults(request, defaults).options
    assert (options.tile_size, options.tile_overlap, options.max_pixels, options.min_pixels) == (336, 64, 200704, TaskOptions().min_pixels)
    # a tile size of the user's own takes the overlap that goes with it, not the declared one
    mine = with_model_defaults(TaskRequest(task="detect", raster="x.tif", classes=["yacht"], options=TaskOptions(tile_size=112)), defaults)
    assert (mine.options.tile_size, mine.options.tile_overlap, mine.options.max_pixels) == (112, None, 200704)
    with pytest.raises(UserError, match="tile_overlap"):
        with_model_defaults(TaskRequest(task="detect", raster="x.tif", classes=["yacht"], options=TaskOptions(tile_overlap=400)), defaults)


def test_a_server_reports_what_a_remote_engine_then_uses():
    described = model_defaults(str(BUNDLED_MODEL)).describe()
    assert described["options"]["tile_size"] == 224 and "tile_size" in described["declared"]
    again = ModelDefaults.from_description(described)
    assert again.options == model_defaults(str(BUNDLED_MODEL)).options and "building" in again.classes
    assert ModelDefaults.from_description(None) == ModelDefaults() == ModelDefaults.from_description({"options": "junk", "classes": [3]})


def test_the_service_fills_unset_options_from_the_model_it_serves(declaring_checkpoint, scene):
    """The plugin sends only what the user set: the service asks its model the way the CLI does,
    and a remote engine pointed at that service learns the same defaults from GET /model."""
    from backend.engine.local import load_local_engine
    from backend.engine.remote import RemoteEngine
    from tests.backend.server.conftest import client_for, start_server, wait_for

    (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(
        json.dumps({"max_pixels": 200704, "tile_size": 224, "tile_overlap": 64, "classes": ["building", "ship"]})
    )
    path, _ = scene
    server = start_server(load_local_engine(str(declaring_checkpoint), batch_size=8))
    try:
        with client_for(server) as client:
            model = client.get("/model").json()
            assert model["defaults"]["options"]["tile_size"] == 224 and model["defaults"]["classes"] == ["building", "ship"]
            assert model["defaults"]["declared"] == ["max_pixels", "min_pixels", "tile_overlap", "tile_size"]

            def views(task: str, options: dict) -> dict:
                body = {"task": task, "raster": str(path), "options": {"max_new_tokens": 2, **options}}
                if task == "detect":
                    body["classes"] = ["ship"]
                status = wait_for(client, client.post("/jobs", json=body).json()["id"])
                assert status["state"] == "done", status["error"]
                return status["result"]["stats"]

            assert views("detect", {})["views"] == 36  # 224 px tiles overlapping by 64 over 1024 px: 6 x 6
            assert views("detect", {"tile_size": 504})["views"] == 9  # the user's tile, with its own overlap
            assert views("caption", {})["visual_tokens"] == 256  # the declared 448 px budget
        remote = RemoteEngine(server.url, server.token)
        try:
            assert remote.defaults.options == model_defaults(str(declaring_checkpoint)).options
            assert remote.defaults.classes == ("building", "ship")
        finally:
            remote.close()
    finally:
        server.stop()


def test_a_gsd_declared_for_detection_reads_georeferenced_scenes_there_and_other_rasters_as_they_are(declaring_checkpoint, scene, tmp_path, capsys):
    """The demo checkpoint learned detection on tiles enlarged twice and every other task at its
    world's GSD: it declares a GSD for detection alone. A raster that cannot be read at it (no
    georeference, or far coarser) is read at its own pixels with a warning; the user's own --gsd
    on such a raster is still refused."""
    path, _ = scene  # 0.5 m
    (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(
        json.dumps({"max_pixels": 200704, "tile_size": 224, "tile_overlap": 64, "tasks": {"detect": {"gsd": 0.25}}}))
    defaults = model_defaults(str(declaring_checkpoint))
    assert defaults.by_task == {"detect": {"gsd": 0.25}} and "gsd" not in defaults.options
    assert with_model_defaults(TaskRequest(task="detect", raster="x.tif", classes=["ship"]), defaults).options.gsd == 0.25
    assert with_model_defaults(TaskRequest(task="caption", raster="x.tif"), defaults).options.gsd is None
    assert with_model_defaults(TaskRequest(task="detect", raster="x.tif", classes=["ship"], options=TaskOptions(gsd=0.5)), defaults).options.gsd == 0.5
    assert ModelDefaults.from_description(defaults.describe()) == defaults

    model = ["--model", str(declaring_checkpoint), "--classes", "ship"]
    declared = _views(capsys, "detect", str(path), *model)
    assert declared == _views(capsys, "detect", str(path), *model, "--gsd", "0.25") > _views(capsys, "detect", str(path), *model, "--gsd", "0.5") == 36

    plain = tmp_path / "plain.png"
    with rasterio.open(path) as src:
        Image.fromarray(np.moveaxis(src.read(window=Window(0, 0, 448, 448)), 0, -1)).save(plain)
    assert cli_main(["detect", str(plain), *model, "--json", "--no-progress", "--max-new-tokens", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stats"]["views"] == _views(capsys, "detect", str(plain), "--model", str(declaring_checkpoint), "--classes", "ship",
                                              "--tile-size", "224", "--tile-overlap", "64")
    assert any("0.25 m per pixel" in w and "no georeference" in w for w in result["warnings"])
    assert cli_main(["detect", str(plain), *model, "--gsd", "0.25", "--no-progress"]) == 2
    assert "needs a georeferenced raster" in capsys.readouterr().err

    for bad, problem in (({"tasks": {"dance": {}}}, "'tasks' must map tasks"), ({"tasks": {"detect": {"gsd": -1}}}, "gsd"),
                         ({"tasks": {"detect": {"gsdd": 1}}}, "unknown task options: gsdd")):
        (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(json.dumps(bad))
        with pytest.raises(UserError, match=problem):
            model_defaults(str(declaring_checkpoint))
