"""`rscovlm serve` as a second process, and the remote engine talking to it: the scale-out path.
The same tiny checkpoint runs in this process too, so the remote answers can be checked
against local ones (greedy decoding: they must be identical)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.engine.remote import RemoteEngine
from backend.errors import UserError
from backend.prompts import Message, detection_prompt, single_turn
from backend.server.jobs import Scheduler
from backend.server.serving import LocalServer
from tests.backend.server.conftest import client_for, job, wait_for

pytestmark = pytest.mark.slow
RSCOVLM = Path(sys.executable).parent / "rscovlm"


class ServeProcess:
    def __init__(self, checkpoint: Path, config: Path, *extra: str):
        self.config = config
        env = {**os.environ, "XDG_CONFIG_HOME": str(config), "PYTHONUNBUFFERED": "1"}
        command = [str(RSCOVLM), "serve", "--model", str(checkpoint), "--batch-size", "4", *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = self.process.stdout.readline()  # blocks until the model is loaded and the port bound
        if not first.startswith("serving "):
            self.process.kill()
            raise AssertionError(f"rscovlm serve did not start: {first}{self.process.stderr.read()}")
        self.url = first.split(" at ")[1].strip()
        self.server_file = config / "rscovlm" / "server.json"
        self.token = json.loads(self.server_file.read_text())["token"]

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return self.process.returncode, out


@pytest.fixture(scope="module")
def remote(tiny_checkpoint, tmp_path_factory):
    serve = ServeProcess(tiny_checkpoint, tmp_path_factory.mktemp("config"))
    yield serve
    serve.stop()


def test_serve_announces_its_url_and_writes_a_private_server_file(remote, tiny_checkpoint):
    assert remote.url.startswith("http://127.0.0.1:")
    assert stat.S_IMODE(os.stat(remote.server_file).st_mode) == 0o600
    written = json.loads(remote.server_file.read_text())
    assert written["url"] == remote.url and written["model"] == str(tiny_checkpoint)
    health = httpx.get(remote.url + "/health", headers={"Authorization": f"Bearer {remote.token}"})
    assert health.status_code == 200 and health.json()["model"] == str(tiny_checkpoint)


def _conversations() -> list:
    rng = np.random.default_rng(5)
    overview, crop = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((336, 504), (224, 224)))
    system, user = detection_prompt(["plane", "ship"])
    two_turns = [
        Message("system", "You may call image_zoom_in."),
        Message("user", "How many ships?\nZoom in to the region of interest and answer the question.", (overview,)),
        Message("assistant", '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [10, 20, 200, 220]}}\n</tool_call>'),
        Message("user", "Here's the zoomed-in image. You can complete your task now.", (crop,)),
    ]
    two_images_one_turn = [Message("user", "Compare the two images.", (overview, crop))]
    return [single_turn(overview, user, system), two_turns, two_images_one_turn, single_turn(crop, "Describe the image")]


def test_remote_engine_answers_exactly_as_the_local_engine(remote, tiny_engine, tiny_checkpoint):
    engine = RemoteEngine(remote.url, remote.token, concurrency=3)
    try:
        assert engine.model_id == tiny_checkpoint.name and engine.batch_size == 3  # served by name: no server path shown
        conversations = _conversations()
        answers = engine.generate(conversations, 10)
        local = [tiny_engine.generate([c], 10)[0] for c in conversations]
        assert [a.text for a in answers] == [g.text for g in local]
        assert [a.prompt_tokens for a in answers] == [g.prompt_tokens for g in local]
        assert [a.new_tokens for a in answers] == [g.new_tokens for g in local]
        assert [a.visual_tokens for a in answers] == [g.visual_tokens for g in local]
        described = engine.describe()
        assert described["engine"] == "remote" and described["device"] == "cpu" and described["url"] == remote.url
    finally:
        engine.close()


def test_a_server_whose_engine_is_another_server(remote, small_raster):
    """`rscovlm serve --engine-url`: jobs here, the model there."""
    engine = RemoteEngine(remote.url, remote.token, concurrency=4)
    front = LocalServer(Scheduler(engine, None), "127.0.0.1", 0).start()
    try:
        with client_for(front) as client:
            assert client.get("/model").json()["engine"] == "remote"
            ids = [client.post("/jobs", json=job(small_raster, "detect", options={"tile_size": 256, "tile_overlap": 0, "max_new_tokens": 6})).json()["id"] for _ in range(3)]
            for job_id in ids:
                status = wait_for(client, job_id)
                assert status["state"] == "done", status["error"]
                assert status["result"]["stats"]["views"] == 4
    finally:
        front.stop()
        engine.close()


def test_task_commands_take_an_engine_url(remote, small_raster, tiny_checkpoint):
    env = {**os.environ, "RSCOVLM_ENGINE_TOKEN": remote.token}
    done = subprocess.run(
        [str(RSCOVLM), "caption", str(small_raster), "--engine-url", remote.url + "/v1", "--max-new-tokens", "6", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == tiny_checkpoint.name and result["stats"]["views"] == 1
    refused = subprocess.run(
        [str(RSCOVLM), "caption", str(small_raster), "--engine-url", remote.url, "--engine-token", "wrong"],
        capture_output=True, text=True, timeout=300,
    )
    assert refused.returncode == 2 and "refused the request (HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
    both = subprocess.run(
        [str(RSCOVLM), "caption", str(small_raster), "--engine-url", remote.url, "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, timeout=300,
    )
    assert both.returncode == 2 and "--model choose a model loaded here" in both.stderr


def test_an_unreachable_engine_says_so():
    with pytest.raises(UserError, match="cannot reach the engine server at http://127.0.0.1:9"):
        RemoteEngine("http://127.0.0.1:9/v1/", concurrency=1)  # port 9 (discard): nothing listens


def test_sigterm_cancels_unfinished_jobs_and_exits_cleanly(tiny_checkpoint, tmp_path, tmp_path_factory):
    from tests.rasters import write_tif

    raster = write_tif(tmp_path / "big.tif", np.random.default_rng(0).integers(0, 255, (3, 1024, 1024), dtype=np.uint8))
    serve = ServeProcess(tiny_checkpoint, tmp_path / "config")
    with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {serve.token}"}, timeout=30) as client:
        body = job(raster, "detect", options={"tile_size": 56, "tile_overlap": 0, "max_new_tokens": 16})
        ids = [client.post("/jobs", json=body).json()["id"] for _ in range(2)]
        wait_for(client, ids[0], states=("running",))
        started = time.monotonic()
        code, out = serve.stop()
    assert code == 0
    assert time.monotonic() - started < 30
    assert "stopped; 2 unfinished job(s) cancelled" in out
    assert not serve.server_file.exists()


def test_serve_refuses_bad_input_in_one_line(tiny_checkpoint, tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    missing = subprocess.run([str(RSCOVLM), "serve", "--model", str(tmp_path / "nothing")], capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [str(RSCOVLM), "serve", "--model", str(tiny_checkpoint), "--port", str(port)], capture_output=True, text=True, env=env, timeout=300
        )
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert not (tmp_path / "rscovlm" / "server.json").exists()
