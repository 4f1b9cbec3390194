"""The models folder and downloads from a hub: a real huggingface_hub against a stand-in hub on
127.0.0.1 (tests/hub.py) serving the tiny checkpoint's real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import Cancelled, UserError
from backend.model_download import download_model
from backend.model_folders import PARTIAL_FOLDER, deletable_folder, delete_model_folder, list_model_folders
from backend.prompts import DOTA_CLASSES
from tests.hub import COMMIT, StandInHub

WEIGHTS = "model.safetensors"


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repos(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    declared = shutil.copytree(tiny_checkpoint, root / "declared")
    (declared / "rscovlm_task_defaults.json").write_text(json.dumps({"classes": ["building", "plane"], "tile_size": 224}))
    other = root / "not-qwen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / WEIGHTS).write_bytes(b"\0" * 200_000)
    return {"test-org/tiny-vl": tiny_checkpoint, "test-org/declared": declared, "test-org/bert": other}


@pytest.fixture
def hub(repos, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the test session is offline but for this hub
    with StandInHub(repos) as hub:
        yield hub


def test_a_download_is_the_hub_files_listed_with_size_kind_classes_and_source(hub, repos, tmp_path):
    seen = []
    model = download_model("test-org/tiny-vl", tmp_path, on_progress=lambda done, total: seen.append((done, total)), endpoint=hub.url)
    folder = tmp_path / "test-org--tiny-vl"
    assert model.path == str(folder.resolve()) and model.kind == "checkpoint"
    files = digest(folder)
    assert files.pop("rscovlm-model.json") and files == digest(repos["test-org/tiny-vl"])
    assert model.source == f"test-org/tiny-vl@{COMMIT}"
    assert model.classes == DOTA_CLASSES  # declares none: RSCoVLM's own list
    total = sum(p.stat().st_size for p in repos["test-org/tiny-vl"].iterdir())
    assert seen[-1] == (total, total) and all(done <= total for done, _ in seen)
    assert not (tmp_path / PARTIAL_FOLDER / "test-org--tiny-vl").exists()
    [listed] = list_model_folders(tmp_path)
    assert listed == model and listed.size_bytes == sum(p.stat().st_size for p in folder.iterdir())

    declared = download_model("test-org/declared", tmp_path, endpoint=hub.url)
    assert declared.classes == ("building", "plane")
    assert [m.name for m in list_model_folders(tmp_path)] == ["test-org--declared", "test-org--tiny-vl"]
    with pytest.raises(UserError, match="exists already"):
        download_model("test-org/tiny-vl", tmp_path, endpoint=hub.url)


def test_a_connection_cut_part_way_through_a_file_resumes_with_a_range_request(hub, repos, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # It keeps what it has read in whole chunks (10 MB by default: a shard of a 7B holds hundreds).
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 2**16)
    hub.state.cut = (WEIGHTS, 300_000)
    model = download_model("test-org/tiny-vl", tmp_path, endpoint=hub.url)
    first, resumed = hub.ranges(WEIGHTS)
    assert first is None and resumed.startswith("bytes=") and 0 < int(resumed[6:-1]) <= 300_000
    assert digest(Path(model.path))[WEIGHTS] == digest(repos["test-org/tiny-vl"])[WEIGHTS]


def test_a_download_that_fails_lists_no_model_keeps_the_files_that_arrived_and_the_next_fetches_the_rest(hub, repos, tmp_path):
    hub.state.cut, hub.state.refuse_after_cut = (WEIGHTS, 300_000), True
    with pytest.raises(UserError, match="download of test-org/tiny-vl stopped.*download again: the files that arrived are kept"):
        download_model("test-org/tiny-vl", tmp_path, endpoint=hub.url, max_workers=1)
    [partial] = list_model_folders(tmp_path)
    assert partial.kind == "partial" and partial.name == "test-org--tiny-vl"
    kept = [name for name in digest(Path(partial.path)) if not name.startswith(".cache")]
    assert "config.json" in kept and WEIGHTS not in kept

    hub.state.refusing = False
    before = len(hub.state.requests)
    model = download_model("test-org/tiny-vl", tmp_path, endpoint=hub.url)
    fetched_again = [path.rsplit("/", 1)[-1] for method, path, _ in hub.state.requests[before:] if method == "GET" and "/resolve/" in path]
    assert WEIGHTS in fetched_again and not set(fetched_again) & set(kept)
    assert [m.kind for m in list_model_folders(tmp_path)] == ["checkpoint"] and model.name == "test-org--tiny-vl"


def test_cancel_stops_the_download_and_leaves_a_stopped_download_that_can_be_deleted(hub, tmp_path):
    beats = []
    with pytest.raises(Cancelled, match="cancelled"):
        download_model("test-org/tiny-vl", tmp_path, endpoint=hub.url, should_stop=lambda: beats.append(1) or len(beats) > 2)
    [partial] = list_model_folders(tmp_path)
    assert partial.kind == "partial"
    delete_model_folder(deletable_folder(tmp_path, partial.name))
    assert list_model_folders(tmp_path) == [] and not Path(partial.path).exists()


def test_a_repository_that_holds_no_qwen_checkpoint_is_refused_before_its_weights_are_fetched(hub, tmp_path):
    with pytest.raises(UserError, match="test-org/bert is not a Qwen2.5-VL checkpoint.*model_type 'bert'"):
        download_model("test-org/bert", tmp_path, endpoint=hub.url)
    assert hub.ranges(WEIGHTS) == []
    assert list_model_folders(tmp_path) == []


@pytest.mark.parametrize("repo_id, problem", [("nobody/none", "the hub has no model nobody/none"), ("../etc", "is not a model id"),
                                              ("a/b/c", "is not a model id"), ("", "is not a model id")])
def test_an_unknown_or_malformed_hub_id_is_one_clear_error(hub, tmp_path, repo_id, problem):
    with pytest.raises(UserError, match=problem):
        download_model(repo_id, tmp_path, endpoint=hub.url)
    assert list_model_folders(tmp_path) == []


def test_delete_takes_only_a_model_folder_by_its_name_and_never_the_running_model(tiny_checkpoint, tmp_path):
    model = shutil.copytree(tiny_checkpoint, tmp_path / "mine")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    for name, problem in [("notes", "is not a model folder"), ("file.txt", "no model"), ("../mine", "not a model folder's name"),
                          (str(model), "not a model folder's name"), ("", "not a model folder's name"), (".downloading", "not a model folder's name")]:
        with pytest.raises(UserError, match=problem):
            deletable_folder(tmp_path, name)
    with pytest.raises(UserError, match="the model the backend is running"):
        deletable_folder(tmp_path, "mine", in_use=(str(model),))
    delete_model_folder(deletable_folder(tmp_path, "mine", in_use=("/somewhere/else",)))
    assert not model.exists() and (notes / "todo.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "notes"]


def test_the_command_line_downloads_lists_and_deletes(hub, tmp_path, monkeypatch, capsys):
    from backend.cli import main

    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}  # huggingface_hub reads them when imported
    done = subprocess.run([str(Path(sys.executable).parent / "rscovlm"), "models", "download", "test-org/tiny-vl", "--models-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[-1] == str((tmp_path / "test-org--tiny-vl").resolve()) and "\tcheckpoint\t" in printed[0]
    assert main(["models", "list", "--models-dir", str(tmp_path)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("test-org--tiny-vl\tcheckpoint\t") and "plane, ship" in line
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["models", "delete", "test-org--tiny-vl", "--models-dir", str(tmp_path)]) == 2
    assert "needs a yes" in capsys.readouterr().err and (tmp_path / "test-org--tiny-vl").is_dir()
    assert main(["models", "delete", "test-org--tiny-vl", "--models-dir", str(tmp_path), "--yes"]) == 0
    assert list_model_folders(tmp_path) == []
