"""Uploads, /model, /health, the OpenAI-compatible chat route, and the exported schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.engine.remote import png_data_url
from backend.prompts import Message, single_turn
from backend.server.app import openapi_json
from tests.backend.server.conftest import UPLOAD_LIMIT, job, wait_for

OPENAPI = Path(__file__).resolve().parents[3] / "resources" / "openapi.json"


def test_uploaded_geotiff_is_usable_as_a_job_raster(client, small_raster, served):
    response = client.post("/rasters", params={"name": "layer.tif"}, content=small_raster.read_bytes())
    assert response.status_code == 201
    upload = response.json()
    assert upload["bytes"] == small_raster.stat().st_size
    assert Path(upload["raster"]).parent == served.uploads.folder and upload["raster"].endswith(".tif")
    status = wait_for(client, client.post("/jobs", json=job(upload["raster"])).json()["id"])
    assert status["state"] == "done" and status["result"]["raster"]["width"] == 400
    assert client.delete(f"/rasters/{upload['id']}").status_code == 204
    assert not Path(upload["raster"]).exists()
    assert client.delete(f"/rasters/{upload['id']}").status_code == 404


def test_uploads_that_are_not_rasters_or_too_large_are_refused(client, served):
    response = client.post("/rasters", content=b"this is not a GeoTIFF" * 10)
    assert response.status_code == 400 and "not a raster GDAL reads" in response.json()["detail"]
    assert client.post("/rasters", content=b"").status_code == 400
    response = client.post("/rasters", content=b"\0" * (UPLOAD_LIMIT + 1))
    assert response.status_code == 413
    assert list(served.uploads.folder.iterdir()) == []  # nothing half-written is left behind


def test_model_and_health(client, tiny_checkpoint):
    model = client.get("/model").json()
    assert model["model"] == str(tiny_checkpoint) and model["engine"] == "local"
    assert model["device"] == "cpu" and model["dtype"] == "float32" and model["quantize"] == "none"
    assert model["batch_size"] == 4 and model["memory"]["rss_bytes"] > 0 and model["parameters"] > 0
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == str(tiny_checkpoint)
    assert set(health["jobs"]) == {"queued", "running", "done", "failed", "cancelled"}
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == str(tiny_checkpoint)


def _image(seed: int, size=(224, 280)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


def test_chat_completion_is_the_local_engine_answer(client, served):
    image = _image(0)
    body = {
        "model": "anything",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the image"},
                    {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                ],
            },
        ],
        "max_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.9,
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == served.scheduler.engine.model_id
    choice = answer["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    expected = served.scheduler.engine.generate(
        [[Message("system", "You are a helpful assistant."), *single_turn(image, "Describe the image")]], 7
    )[0]
    assert choice["message"]["content"] == expected.text  # greedy, whatever the temperature
    assert choice["finish_reason"] == ("length" if expected.new_tokens >= 7 else "stop")
    usage = answer["usage"]
    assert usage == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.new_tokens,
        "total_tokens": expected.prompt_tokens + expected.new_tokens,
    }


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ([{"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}], {}, "not a base64 data URL"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}], {}, "readable image"),
        ("hello", {"stream": True}, "streaming is not supported"),
        ("hello", {"n": 2}, "invalid input (n)"),
    ],
)
def test_bad_chat_requests_are_4xx(client, content, extra, message):
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **extra})
    assert 400 <= response.status_code < 500
    assert message in response.json()["detail"]


def test_openapi_file_matches_the_code():
    """resources/openapi.json is what the plugin codes against; regenerate it with
    `rscovlm serve --export-openapi resources/openapi.json` when the contract changes."""
    assert OPENAPI.is_file(), "run: rscovlm serve --export-openapi resources/openapi.json"
    assert json.loads(OPENAPI.read_text()) == json.loads(openapi_json()), (
        "resources/openapi.json differs from the code: run rscovlm serve --export-openapi resources/openapi.json"
    )
    schema = json.loads(openapi_json())
    assert {"/jobs", "/jobs/{job_id}", "/rasters", "/health", "/model", "/v1/chat/completions"} <= set(schema["paths"])
    assert "TaskRequest" in schema["components"]["schemas"] and "JobStatus" in schema["components"]["schemas"]
