"""A checkpoint's own task defaults (rscovlm_task_defaults.json): the task commands use them
when that checkpoint is the model; options on the command line still win; a bad file is refused
with one line."""

import json
import shutil

import pytest

from backend.cli import main as cli_main
from backend.engine.loading import TASK_DEFAULTS_FILE, declared_task_options
from backend.errors import UserError


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
    assert declared_task_options(str(tiny_checkpoint)) == {}
    assert declared_task_options("Qingyun/RSCoVLM-7B-2512") == {} and declared_task_options(None) == {}
    (declaring_checkpoint / TASK_DEFAULTS_FILE).write_text(json.dumps({"max_pixel": 1}))
    with pytest.raises(UserError, match="unknown task options: max_pixel"):
        declared_task_options(str(declaring_checkpoint))
    path, _ = scene
    assert cli_main(["detect", str(path), "--model", str(declaring_checkpoint), "--classes", "ship"]) == 2
    assert "max_pixel" in capsys.readouterr().err
