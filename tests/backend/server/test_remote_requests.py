"""What the remote engine sends an OpenAI-compatible server (vLLM serving RSCoVLM-7B), recorded
by a real HTTP server on 127.0.0.1 that answers like one: the trained prompts, the full class
list, repetition penalty 1.0 for detection only, detection's answer limit, grounding asked on
the whole view even far over the budget (box or polygon form), the zoom chain's turn 1, and a
truncated answer reported."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from backend.contract import DEFAULT_MAX_NEW_TOKENS, TaskOptions, TaskRequest
from backend.drive import run_task
from backend.engine.remote import RemoteEngine
from backend.prompts import DETECTION_SYSTEM, DOTA_CLASSES, ZOOM_SYSTEM, zoom_tool_call
from tests.backend.markers import write_marker_raster


class Recorder(BaseHTTPRequestHandler):
    """/v1/models and /v1/chat/completions; every completion request body is kept. The answer
    is the server's `answer(body)`: (text, finish_reason)."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "RSCoVLM-7B-2512", "object": "model"}]})
        else:
            self._send(404, {"detail": "Not Found"})  # vLLM has no /model route

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        text, finish = self.server.answer(body)
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


@pytest.fixture
def openai_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.bodies, server.answer = [], lambda body: ("There are none.", "stop")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def large_raster(tmp_path_factory):
    """4032 px: 16x the 1008 px pixel budget, far over the zoom factor."""
    return write_marker_raster(tmp_path_factory.mktemp("remote") / "large.tif", 4032, (1000, 1200, 1100, 1300))


def engine_for(server) -> RemoteEngine:
    return RemoteEngine(f"http://127.0.0.1:{server.server_address[1]}", concurrency=2)


def images_of(body) -> list[tuple[int, int]]:
    sizes = []
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part["type"] == "image_url":
                raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                sizes.append(Image.open(io.BytesIO(raw)).size)
    return sizes


def texts_of(body) -> list[tuple[str, str]]:
    out = []
    for message in body["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text") or "" for p in content)
        out.append((message["role"], text))
    return out


def test_detection_asks_every_trained_class_at_penalty_one_with_room_for_dense_tiles(openai_server, large_raster):
    openai_server.answer = lambda body: ("10,10,60,10,60,40,10,40 plane\n100,100,150,100,150,120,100,120 ship", "stop")
    engine = engine_for(openai_server)
    request = TaskRequest(task="detect", raster=str(large_raster), classes=["plane"], extent=[500000, 4398000, 500300, 4398300])
    result = run_task(request, engine)
    body = openai_server.bodies[0]
    assert texts_of(body)[0] == ("system", DETECTION_SYSTEM["polygon"])
    assert texts_of(body)[1][1] == "find the " + ", ".join(sorted(DOTA_CLASSES)) + "."  # DOTA-v1.0's 15, not the subset
    assert body["repetition_penalty"] == 1.0 and body["temperature"] == 0.0
    assert body["max_tokens"] == DEFAULT_MAX_NEW_TOKENS["detect"] == 4096
    assert all(size[0] % 28 == 0 and size[1] % 28 == 0 for b in openai_server.bodies for size in images_of(b))
    assert {f.properties["label"] for f in result.features} == {"plane"}  # the ship is a trained class not asked for
    assert result.stats.boxes_not_requested > 0 and not result.stats.views_truncated
    engine.close()


def test_a_truncated_answer_is_counted_and_said(openai_server, large_raster):
    openai_server.answer = lambda body: ("10,10,60,10,60,40,10,40 plane\n100,100,1", "length")
    engine = engine_for(openai_server)
    request = TaskRequest(task="detect", raster=str(large_raster), classes=["plane"], extent=[500000, 4398000, 500300, 4398300],
                          options=TaskOptions(max_new_tokens=40))
    result = run_task(request, engine)
    assert result.stats.views_truncated == result.stats.views > 0
    assert any("stopped at the answer limit of 40 tokens" in w and "--max-new-tokens" in w for w in result.warnings)
    engine.close()


@pytest.mark.parametrize("form", [None, "polygon"])
def test_grounding_is_asked_on_the_whole_view_even_far_over_the_budget(openai_server, large_raster, form):
    answers = {None: "500,600,550,650 white square", "polygon": "500,600,550,600,550,650,500,650 white square"}
    openai_server.answer = lambda body: (answers[form], "stop")
    engine = engine_for(openai_server)
    options = TaskOptions(box_form=form) if form else TaskOptions()
    result = run_task(TaskRequest(task="ground", raster=str(large_raster), expression="the white square", options=options), engine)
    [body] = openai_server.bodies  # one turn: no Zoom-in Chain for grounding
    assert texts_of(body) == [("system", DETECTION_SYSTEM["polygon" if form else "hbox"]), ("user", "find the white square")]
    assert images_of(body) == [(1008, 1008)] and "repetition_penalty" not in body
    assert result.zoom is None and len(result.features) == 1
    assert any("narrow --extent" in w for w in result.warnings)
    engine.close()


def test_a_zoomed_question_carries_the_trained_instruction_in_turn_one(openai_server, large_raster):
    replies = iter([(zoom_tool_call([240, 290, 280, 330]), "stop"), ("white", "stop")])
    openai_server.answer = lambda body: next(replies)
    engine = engine_for(openai_server)
    result = run_task(TaskRequest(task="ask", raster=str(large_raster), question="What colour is the square?"), engine)
    first, second = openai_server.bodies
    assert texts_of(first) == [("system", ZOOM_SYSTEM), ("user", "What colour is the square?\n Answer the question using a single word "
                                                                  "or phrase.\nZoom in to the region of interest and answer the question.")]
    assert [role for role, _ in texts_of(second)] == ["system", "user", "assistant", "user"] and len(images_of(second)) == 2
    assert result.text == "white" and result.zoom.outcome == "answered after zooming"
    assert np.isclose(result.zoom.turns[1].window[2], 160.0)  # 40 overview px at 4 raster px each
    engine.close()
