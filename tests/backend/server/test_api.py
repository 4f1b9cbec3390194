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


def test_uploads_that_point_at_other_data_are_refused_before_gdal_opens_them(client, served, small_raster):
    """A VRT makes GDAL read the files (or /vsicurl/ URLs) it names, as the server: refused, as
    are raster formats that are not self-contained and OGR VRT vector files."""
    vrt = (f'<VRTDataset rasterXSize="400" rasterYSize="400"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
           f"<SourceFilename>{small_raster}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")
    for payload in (vrt, vrt.replace(str(small_raster), "/vsicurl/http://127.0.0.1:9/x.tif"), "\n  " + vrt):
        response = client.post("/rasters", params={"name": "x.vrt"}, content=payload.encode())
        assert response.status_code == 400 and "VRT" in response.json()["detail"], response.text
    for path in (b"/vsicurl/http://127.0.0.1:9/x.tif", b"  /vsizip//etc/x.zip/a.tif"):  # a GDAL path as the file's bytes
        response = client.post("/rasters", params={"name": "x.tif"}, content=path)
        assert response.status_code == 400 and "data elsewhere" in response.json()["detail"], response.text
    xyz = client.post("/rasters", params={"name": "grid.xyz"}, content=b"0 0 1\n1 0 2\n0 1 3\n1 1 4\n")
    assert xyz.status_code == 400 and "XYZ, which the server does not take" in xyz.json()["detail"]
    ogr_vrt = b'<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>/etc/passwd</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>'
    response = client.post("/vectors", params={"name": "labels.vrt"}, content=ogr_vrt)
    assert response.status_code == 400 and "VRT" in response.json()["detail"]
    assert list(served.uploads.folder.iterdir()) == []


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


def test_the_official_openai_client(served, client):
    """What chat front ends and LiteLLM do: list models, chat with an image, stream (server-sent
    events, the default of many clients), and a wrong key."""
    import openai

    from backend.engine.remote import png_data_url

    api = openai.OpenAI(base_url=served.url + "/v1", api_key=served.token, max_retries=0)
    [model] = api.models.list().data
    image = np.random.default_rng(3).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(image)}},
                                             {"type": "text", "text": "Describe the image"}]}]
    whole = api.chat.completions.create(model=model.id, messages=messages, max_tokens=6)
    assert whole.choices[0].message.content and whole.usage.completion_tokens > 0
    chunks = list(api.chat.completions.create(model=model.id, messages=messages, max_tokens=6, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer, as events
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and chunks[0].choices[0].delta.role == "assistant"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_what_a_chat_request_may_make_the_server_decode_is_bounded(client):
    """A 0.3 MB body of flat PNGs would decode to gigabytes: images per message and decoded pixels
    per request are capped (413), before the model sees anything."""
    from backend.engine.remote import png_data_url
    from backend.server.chat import MAX_IMAGES_PER_MESSAGE, MAX_REQUEST_PIXELS

    flat = png_data_url(np.zeros((4000, 4000, 3), np.uint8))  # 16 Mpx in a few kB
    many = [{"type": "image_url", "image_url": {"url": flat}}] * (MAX_IMAGES_PER_MESSAGE + 1)
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": many + [{"type": "text", "text": "hi"}]}]})
    assert response.status_code == 413 and "more than" in response.json()["detail"]
    per_message = [{"type": "image_url", "image_url": {"url": flat}}] * 5
    body = {"messages": [{"role": "user", "content": per_message}, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": per_message + [{"type": "text", "text": "and these?"}]}]}
    assert 5 <= MAX_IMAGES_PER_MESSAGE and 10 * 16_000_000 > MAX_REQUEST_PIXELS  # each message passes, the request does not
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 413 and "Mpx" in response.json()["detail"]


def test_the_openai_routes_name_the_model_as_served_model_name_says():
    from backend.server.jobs import Scheduler
    from backend.server.serving import LocalServer
    from tests.backend.server.conftest import client_for
    from tests.scripted import ScriptedEngine

    server = LocalServer(Scheduler(ScriptedEngine(["a scene"])), "127.0.0.1", 0, served_model_name="rscovlm-7b").start()
    try:
        with client_for(server) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["rscovlm-7b"]
            image = png_data_url(np.zeros((64, 64, 3), dtype=np.uint8))
            body = {"model": "rscovlm-7b", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"},
                                                                                     {"type": "image_url", "image_url": {"url": image}}]}]}
            assert client.post("/v1/chat/completions", json=body).json()["model"] == "rscovlm-7b"
    finally:
        server.stop()
