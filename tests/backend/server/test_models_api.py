"""GET /models, POST/GET/DELETE /models/downloads and DELETE /models/{name} on a real
`rscovlm serve` app (uvicorn on 127.0.0.1) whose engine runs a model from its models folder,
downloading from the stand-in hub (tests/hub.py) through huggingface_hub."""

from __future__ import annotations

import shutil
import time

import pytest

from backend.server.jobs import Scheduler
from backend.server.security import Limits
from backend.server.serving import LocalServer
from tests.backend.server.conftest import client_for
from tests.hub import StandInHub


@pytest.fixture(scope="module")
def models_dir(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("models-folder")
    shutil.copytree(tiny_checkpoint, root / "running")
    return root


@pytest.fixture(scope="module")
def hub(tiny_checkpoint):
    with StandInHub({"test-org/tiny-vl": tiny_checkpoint}) as hub:
        yield hub


@pytest.fixture(scope="module")
def server(models_dir, hub):
    import huggingface_hub.constants

    from backend.engine.local import load_local_engine

    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, False
    server = LocalServer(Scheduler(load_local_engine(str(models_dir / "running"), batch_size=1)), "127.0.0.1", 0, limits=Limits(),
                         models_dir=models_dir)
    server.models.endpoint = hub.url
    server.start()
    yield server
    server.stop()
    huggingface_hub.constants.HF_HUB_OFFLINE = offline


@pytest.fixture
def client(server):
    with client_for(server) as client:
        yield client


def follow(client, url: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(url).json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"download still {status['state']}")


def test_download_list_and_delete_through_the_service(client, models_dir):
    listed = client.get("/models").json()
    assert listed["folder"] == str(models_dir)
    assert [(m["name"], m["kind"], m["in_use"]) for m in listed["models"]] == [("running", "checkpoint", True)]

    created = client.post("/models/downloads", json={"repo_id": "test-org/tiny-vl"})
    assert created.status_code == 202 and created.json()["url"] == f"/models/downloads/{created.json()['id']}"
    again = client.post("/models/downloads", json={"repo_id": "test-org/tiny-vl"})
    status = follow(client, created.json()["url"])
    assert status["state"] == "done", status
    assert status["progress"]["done"] == status["progress"]["total"] > 900_000
    assert status["model"]["path"] == str((models_dir / "test-org--tiny-vl").resolve()) and status["model"]["kind"] == "checkpoint"
    if again.status_code != 202:  # submitted while the first was still active
        assert again.status_code == 400 and "being downloaded already" in again.json()["detail"]

    listed = client.get("/models").json()
    by_name = {m["name"]: m for m in listed["models"]}
    assert set(by_name) == {"running", "test-org--tiny-vl"} and not by_name["test-org--tiny-vl"]["in_use"]
    assert by_name["test-org--tiny-vl"]["source"].startswith("test-org/tiny-vl@") and len(by_name["test-org--tiny-vl"]["classes"]) == 15
    assert any(d["id"] == created.json()["id"] for d in listed["downloads"])

    deleted = client.delete("/models/test-org--tiny-vl")
    assert deleted.status_code == 200 and [m["name"] for m in deleted.json()["models"]] == ["running"]
    assert not (models_dir / "test-org--tiny-vl").exists()


def test_the_running_model_other_folders_and_bad_ids_are_refused_with_one_line(client, models_dir):
    (models_dir / "notes").mkdir(exist_ok=True)
    (models_dir / "notes" / "keep.txt").write_text("mine")
    for name, problem in [("running", "is the model the backend is running"), ("notes", "is not a model folder"), ("nothing", "there is no model")]:
        answer = client.delete(f"/models/{name}")
        assert answer.status_code == 400 and problem in answer.json()["detail"], answer.text
    assert (models_dir / "running" / "config.json").is_file() and (models_dir / "notes" / "keep.txt").read_text() == "mine"

    for body, status, problem in [({"repo_id": "../../etc"}, 400, "is not a model id"), ({"repo_id": "a/b", "mirror": "x"}, 422, "mirror"),
                                  ({"repo_id": "x" * 300}, 422, "repo_id")]:
        answer = client.post("/models/downloads", json=body)
        assert answer.status_code == status and problem in answer.json()["detail"], answer.text

    failed = follow(client, client.post("/models/downloads", json={"repo_id": "nobody/none"}).json()["url"])
    assert failed["state"] == "failed" and "the hub has no model nobody/none" in failed["error"]
    assert client.get("/models/downloads/0000").status_code == 404
