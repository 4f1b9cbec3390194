"""A real `rscovlm serve` app on an ephemeral 127.0.0.1 port, served by uvicorn from a thread,
with the tiny checkpoint as its engine; and small GeoTIFFs written by the tests."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.server.jobs import Scheduler
from backend.server.security import Limits
from backend.server.serving import LocalServer
from tests.rasters import write_tif

UPLOAD_LIMIT = 2 * 2**20


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (3, height, width), dtype=np.uint8)


@pytest.fixture(scope="session")
def small_raster(tmp_path_factory) -> Path:
    """400 x 400 px: one view for the text tasks, 4 tiles of 256 px for detection."""
    return write_tif(tmp_path_factory.mktemp("rasters") / "small.tif", textured(400, 400, 1))


@pytest.fixture(scope="session")
def large_raster(tmp_path_factory) -> Path:
    """2048 x 2048 px: over a thousand detection tiles of 64 px, for jobs that take a while."""
    return write_tif(tmp_path_factory.mktemp("rasters") / "large.tif", textured(2048, 2048, 2), tiled=True, blockxsize=256, blockysize=256)


def start_server(engine, reload=None, **scheduler_options) -> LocalServer:
    scheduler = Scheduler(engine, reload, **scheduler_options)
    return LocalServer(scheduler, "127.0.0.1", 0, limits=Limits(upload_bytes=UPLOAD_LIMIT)).start()


def client_for(server: LocalServer, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    from backend.engine.local import load_local_engine

    def load():
        return load_local_engine(str(tiny_checkpoint), batch_size=4)

    server = start_server(load(), load, result_ttl_s=600)
    yield server
    server.stop()


@pytest.fixture
def client(served):
    with client_for(served) as client:
        yield client


def wait_for(client: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").json()
        if status["state"] in states:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {status['state']} after {timeout_s} s")


def job(raster: Path, task: str = "caption", **fields) -> dict:
    options = fields.pop("options", {})
    options.setdefault("max_new_tokens", 8)
    body = {"task": task, "raster": str(raster), "options": options, **fields}
    if task in ("detect", "classify"):
        body.setdefault("classes", ["plane", "ship"])
    if task == "ask":
        body.setdefault("question", "What is in the image?")
    if task == "ground":
        body.setdefault("expression", "the white ship")
    return body
