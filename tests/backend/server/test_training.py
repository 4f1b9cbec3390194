"""Training jobs over HTTP against a real server with the tiny checkpoint: `POST /training/export`,
`/training/fit` and `/training/grpo` run `training.runner` in a child process; progress, results, the queue,
cancel (an export leaves nothing, a fit leaves a checkpoint the same fit resumes from), bad
input, uploaded label files, and inference served while training runs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from backend.contract import ExportTrainingRequest, FitTrainingRequest
from backend.server.training_jobs import TrainingJobs
from tests.backend.server.conftest import job, wait_for
from training.runner import DEFAULT_NICENESS, NICENESS_ENVIRONMENT

FINAL = ("done", "failed", "cancelled")


@pytest.fixture(autouse=True)
def full_priority(monkeypatch):
    """Training children at the server's priority: on a busy shared test machine a niced fit
    waits for everyone else's work (the lower priority itself is checked once, below)."""
    monkeypatch.setenv(NICENESS_ENVIRONMENT, "0")
TILES = {"tile_size": 256, "tile_overlap": 64, "block_size": 512, "keep_empty": 1.0, "val_fraction": 0.25}
# A LoRA fit on the tiny checkpoint: a step takes milliseconds to a second, by the machine's load.
QUICK = ["lora_r=4", "num_workers=0", "val_samples=2", "val_ap_samples=1", "val_max_new_tokens=8", "rescale=0",
         "warmup_steps=0", "grad_accum=1", "log_every=1", "gradient_checkpointing=false", "min_pixels=50176", "max_pixels=65536"]


def follow(client, url: str, timeout_s: float = 180, until=lambda status: status["state"] in FINAL) -> tuple[dict, list[dict]]:
    """The status once `until` holds, and every status seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(url).json()
        seen.append(status)
        if until(status):
            return status, seen
        time.sleep(0.02)
    raise AssertionError(f"{url} still {seen[-1]['state']} after {timeout_s} s")


def export_body(scene_path: Path, out: Path, **fields) -> dict:
    return {"raster": str(scene_path), "labels": str(scene_path.with_suffix(".truth.gpkg")), "class_field": "label",
            "out": str(out), "options": dict(TILES), **fields}


def fit_body(checkpoint: Path, data: Path, out: Path, max_steps: int, *extra: str) -> dict:
    return {"model": str(checkpoint), "data": str(data), "out": str(out), "max_steps": max_steps, "overrides": [*QUICK, *extra]}


@pytest.fixture(scope="module")
def dataset(served, scene, tmp_path_factory) -> tuple[Path, dict]:
    """A dataset exported through the service, and the job's final status."""
    from tests.backend.server.conftest import client_for

    out = tmp_path_factory.mktemp("service-export") / "scene"
    with client_for(served) as client:
        created = client.post("/training/export", json=export_body(scene[0], out))
        assert created.status_code == 202, created.text
        status, _ = follow(client, created.json()["url"])
    return out, status


def test_export_job_writes_the_dataset_and_reports_tiles(dataset):
    out, status = dataset
    assert status["state"] == "done", status["error"]
    assert status["kind"] == "export" and status["error"] is None
    progress = status["progress"]
    assert progress["unit"] == "tiles" and progress["done"] == progress["total"] > 0 and progress["loss"] is None
    assert status["outputs"]["dataset"] == str(out.resolve()) and status["outputs"]["run"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert status["result"] == manifest
    counts = manifest["counts"]
    assert counts["train"]["tiles"] > 0 and counts["val"]["tiles"] > 0
    for split in ("train", "val"):
        lines = (out / split / "conversations.jsonl").read_text().splitlines()
        assert len(lines) == sum(counts[split]["samples"].values())
        assert len(list((out / split / "images").glob("*.png"))) == counts[split]["tiles"]


def test_training_jobs_run_one_at_a_time(client, scene, tmp_path):
    first = client.post("/training/export", json=export_body(scene[0], tmp_path / "a")).json()
    second = client.post("/training/export", json=export_body(scene[0], tmp_path / "b")).json()
    assert first["url"] == f"/training/{first['id']}"
    waiting = client.get(second["url"]).json()
    assert waiting["state"] == "queued" and waiting["started"] is None
    assert {first["id"], second["id"]} <= {j["id"] for j in client.get("/training").json()}
    done_first, _ = follow(client, first["url"])
    done_second, _ = follow(client, second["url"])
    assert done_first["state"] == done_second["state"] == "done"
    assert done_second["started"] >= done_first["finished"]
    assert client.delete(first["url"]).json()["state"] == "done"  # a finished job is dropped
    assert client.get(first["url"]).status_code == 404


@pytest.mark.slow
def test_grpo_job_reports_the_reward_per_task_and_a_cancel_keeps_a_checkpoint(client, dataset, tiny_checkpoint, tmp_path):
    data, _ = dataset
    out = tmp_path / "rl"
    body = {"model": str(tiny_checkpoint), "data": str(data), "out": str(out), "max_steps": 40,
            "overrides": ["prompts_per_step=1", "num_generations=2", "max_tokens_detect=12", "max_tokens_ground=12", "save_every=1000"]}
    created = client.post("/training/grpo", json=body).json()
    running, _ = follow(client, created["url"], until=lambda s: s["progress"]["done"] >= 1 or s["state"] in FINAL)
    assert running["state"] == "running", running["error"]
    assert running["progress"]["rewards"] and "format" in running["progress"]["rewards"] and running["progress"]["reward"] is not None
    client.delete(created["url"])
    status, _ = follow(client, created["url"])
    assert status["state"] == "cancelled" and "stopped at step" in status["error"]
    step = int(status["error"].split("stopped at step ")[1].split()[0])
    assert status["outputs"]["checkpoint"].endswith(f"checkpoint-{step}") and not (out / "adapter").exists()
    resumed = client.post("/training/grpo", json={**body, "max_steps": step + 1}).json()
    status, _ = follow(client, resumed["url"])
    assert status["state"] == "done", status["error"]
    assert status["result"]["steps"] == step + 1 and status["outputs"]["adapter"] == str(out / "adapter")


@pytest.mark.slow
def test_fit_job_reports_steps_loss_and_validation(client, dataset, tiny_checkpoint, tmp_path):
    data, _ = dataset
    out = tmp_path / "run"
    # Enough steps that the status, polled every 20 ms, shows one in flight even when steps
    # take milliseconds (with 3, the whole fit could pass between two polls).
    steps = 30
    created = client.post("/training/fit", json=fit_body(tiny_checkpoint, data, out, steps)).json()
    status, seen = follow(client, created["url"])
    assert status["state"] == "done", status["error"]
    progress = status["progress"]
    assert progress["unit"] == "steps" and progress["done"] == progress["total"] == steps
    assert progress["loss"] > 0 and progress["learning_rate"] is not None
    assert progress["val_loss"] > 0 and 0.0 <= progress["val_ap_nc"] <= 1.0
    assert any(s["state"] == "running" and 0 < s["progress"]["done"] < steps for s in seen), "no step was reported while running"
    outputs = status["outputs"]
    assert outputs["run"] == str(out.resolve()) and outputs["adapter"] == str(out / "adapter") and outputs["model"] is None
    assert (out / "adapter" / "adapter_config.json").is_file() and outputs["checkpoint"].endswith(f"step-{steps:07d}")
    metrics = json.loads((out / "metrics.json").read_text())
    assert status["result"] == metrics and metrics["steps"] == steps
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "loss" in e] == list(range(1, steps + 1))
    assert progress["epoch"] == [e for e in logged if "loss" in e][-1]["epoch"] >= 1  # 30 steps pass the end of the data


@pytest.mark.slow
def test_cancel_mid_fit_keeps_a_checkpoint_and_the_same_fit_resumes(client, dataset, tiny_checkpoint, small_raster, tmp_path):
    """While the fit runs, inference jobs are answered; DELETE stops it after the step in flight
    with a checkpoint; the same fit submitted again (max_steps may change on resuming) goes on
    from that step."""
    data, _ = dataset
    out = tmp_path / "run"
    body = fit_body(tiny_checkpoint, data, out, 200, "save_every=1000")
    created = client.post("/training/fit", json=body).json()
    follow(client, created["url"], until=lambda s: s["progress"]["done"] >= 1 or s["state"] in FINAL)
    inference = [client.post("/jobs", json=job(small_raster, task)).json()["id"] for task in ("caption", "detect")]
    for job_id in inference:
        answered = wait_for(client, job_id)
        assert answered["state"] == "done", answered["error"]
    assert client.get(created["url"]).json()["state"] == "running"

    stopping = client.delete(created["url"]).json()
    assert stopping["state"] in ("cancelling", "cancelled")
    status, _ = follow(client, created["url"])
    assert status["state"] == "cancelled", status["error"]
    step = status["progress"]["done"]
    assert 1 <= step < 200 and f"stopped at step {step} of 200" in status["error"]
    assert status["outputs"]["checkpoint"] == str((out / "checkpoints" / f"step-{step:07d}").resolve())
    assert (out / "checkpoints" / f"step-{step:07d}" / "trainer_state.json").is_file()
    assert not (out / "adapter").exists()

    resumed = client.post("/training/fit", json={**body, "max_steps": step + 1}).json()
    status, _ = follow(client, resumed["url"])
    assert status["state"] == "done", status["error"]
    assert status["progress"]["done"] == step + 1 and status["result"]["steps"] == step + 1
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert logged == list(range(1, step + 2))  # each step once: resumed, not started over


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory) -> Path:
    from training.synthetic import generate

    path = tmp_path_factory.mktemp("large-scene") / "large.tif"
    generate(path, 2048, seed=5)
    return path


def test_cancelling_an_export_leaves_nothing(served, client, large_scene, tmp_path, monkeypatch):
    """Also: the child runs at a lower CPU priority than the server, the default one."""
    monkeypatch.delenv(NICENESS_ENVIRONMENT)
    parent = tmp_path / "datasets"
    parent.mkdir()
    body = export_body(large_scene, parent / "small-tiles", options={"tile_size": 56, "tile_overlap": 0, "block_size": 512, "keep_empty": 1.0})
    created = client.post("/training/export", json=body).json()
    running, _ = follow(client, created["url"], until=lambda s: s["progress"]["done"] >= 1 or s["state"] in FINAL)
    assert running["progress"]["done"] < running["progress"]["total"]
    child = served.training.get(created["id"]).process.pid
    assert os.getpriority(os.PRIO_PROCESS, child) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + DEFAULT_NICENESS)
    autogroup = Path(f"/proc/{child}/autogroup")
    if autogroup.exists():  # Linux with autogroup scheduling: the child's own session is niced too
        assert autogroup.read_text().split()[-1] == str(DEFAULT_NICENESS)
    client.delete(created["url"])
    status, _ = follow(client, created["url"])
    assert status["state"] == "cancelled"
    assert "export stopped after" in status["error"] and "nothing was written" in status["error"]
    assert os.listdir(parent) == []


def test_a_queued_job_cancels_at_once(client, large_scene, scene, tmp_path):
    running = client.post("/training/export", json=export_body(large_scene, tmp_path / "a", options={"tile_size": 56, "tile_overlap": 0})).json()
    queued = client.post("/training/export", json=export_body(scene[0], tmp_path / "b")).json()
    cancelled = client.delete(queued["url"]).json()
    assert cancelled["state"] == "cancelled" and cancelled["started"] is None and cancelled["error"] == "cancelled by the client"
    client.delete(running["url"])
    assert follow(client, running["url"])[0]["state"] == "cancelled"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"out": None}, "invalid input (out): Field required."),
        ({"class_field": None}, "give either class_field"),
        ({"class_name": "ship"}, "give either class_field"),
        ({"options": {"tile_size": 256, "tile_overlap": 256}}, "tile_overlap (256) must be smaller than tile_size (256)"),
        ({"options": {"colour": "red"}}, "invalid input (options.colour): Extra inputs are not permitted."),
    ],
)
def test_a_request_that_does_not_fit_the_schema_is_422(client, scene, tmp_path, change, message):
    body = {k: v for k, v in {**export_body(scene[0], tmp_path / "x"), **change}.items() if v is not None}
    response = client.post("/training/export", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail


def test_a_missing_fit_field_is_422(client):
    response = client.post("/training/fit", json={"model": "m", "out": "o"})
    assert response.status_code == 422 and "invalid input (data): Field required." in response.json()["detail"]


def far_away_labels(scene_path: Path, target: Path) -> Path:
    """The scene's truth layer moved 100 km east: nothing overlaps the raster."""
    meta, _, geometries, fields = pyogrio.raw.read(scene_path.with_suffix(".truth.gpkg"))
    moved = [shapely.to_wkb(shapely.affinity.translate(shapely.from_wkb(g), 1e5, 0)) for g in geometries]
    pyogrio.raw.write(str(target), geometry=np.array(moved, dtype=object), field_data=fields,
                      fields=meta["fields"], crs=meta["crs"], driver="GPKG", geometry_type="Polygon")
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no overlap", "none of the"),
        ("no such field", "--class-field 'kind' is not a field of scene.truth.gpkg"),
        ("no raster", "raster file not found"),
        ("missing dataset", "missing dataset"),
        ("unknown config", "config 'lorra' is neither a file nor a shipped config"),
    ],
)
def test_bad_input_fails_the_job_with_one_line(client, scene, tiny_checkpoint, tmp_path, case, message):
    out = tmp_path / "out"
    route, body = "/training/export", export_body(scene[0], out)
    if case == "no overlap":
        body["labels"] = str(far_away_labels(scene[0], tmp_path / "far.gpkg"))
    elif case == "no such field":
        body["class_field"] = "kind"
    elif case == "no raster":
        body["raster"] = str(tmp_path / "nowhere.tif")
    elif case == "missing dataset":
        route, body = "/training/fit", fit_body(tiny_checkpoint, tmp_path / "no-data", out, 1)
    elif case == "unknown config":
        route, body = "/training/fit", {**fit_body(tiny_checkpoint, tmp_path, out, 1), "config": "lorra"}
    created = client.post(route, json=body)
    assert created.status_code == 202
    status, _ = follow(client, created.json()["url"])
    assert status["state"] == "failed"
    assert message in status["error"] and "\n" not in status["error"] and "Traceback" not in status["error"]
    assert not out.exists()


def test_labels_uploaded_as_a_file(client, scene, tmp_path):
    path = scene[0]
    uploaded = client.post("/vectors", params={"name": "labels.gpkg"}, content=path.with_suffix(".truth.gpkg").read_bytes())
    assert uploaded.status_code == 201, uploaded.text
    upload = uploaded.json()
    assert upload["layers"] and upload["labels"].endswith(".gpkg")
    created = client.post("/training/export", json={**export_body(path, tmp_path / "out"), "labels": upload["labels"], "layer": upload["layers"][0]})
    status, _ = follow(client, created.json()["url"])
    assert status["state"] == "done", status["error"]
    assert client.delete(f"/vectors/{upload['id']}").status_code == 204
    assert not Path(upload["labels"]).exists()
    refused = client.post("/vectors", params={"name": "labels.gpkg"}, content=b"no vector here")
    assert refused.status_code == 400 and "not a vector file GDAL reads" in refused.json()["detail"]
    assert client.delete(f"/vectors/{upload['id']}").status_code == 404


def test_a_child_that_dies_without_a_result_fails_its_job(tmp_path):
    jobs = TrainingJobs(python=shutil.which("false"))
    jobs.start()
    try:
        request = ExportTrainingRequest(raster="r.tif", labels="l.gpkg", class_name="ship", out=str(tmp_path / "out"))
        job = jobs.submit("export", request)
        deadline = time.monotonic() + 30
        while job.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.state == "failed"
        assert job.error.startswith("the training process ended with status 1 without a result")
    finally:
        jobs.stop()


@pytest.mark.slow
def test_stopping_the_server_stops_a_fit_with_a_checkpoint(dataset, tiny_checkpoint, tmp_path):
    data, _ = dataset
    jobs = TrainingJobs()
    jobs.start()
    request = FitTrainingRequest.model_validate(fit_body(tiny_checkpoint, data, tmp_path / "run", 200, "save_every=1000"))
    fit = jobs.submit("fit", request)
    queued = jobs.submit("export", ExportTrainingRequest(raster="r.tif", labels="l.gpkg", class_name="ship", out=str(tmp_path / "x")))
    deadline = time.monotonic() + 120
    while fit.progress.done < 1 and fit.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.stop() == 2
    assert fit.state == "cancelled" and fit.outputs.checkpoint is not None and Path(fit.outputs.checkpoint).is_dir()
    assert queued.state == "cancelled" and queued.error == "the server was stopped"
