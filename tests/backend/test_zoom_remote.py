"""The Zoom-in Chain through the OpenAI-compatible remote engine, against a real `rscovlm serve`
app on 127.0.0.1: both images travel as PNG data URLs, and the chain comes out exactly as it
does on the same checkpoint loaded in this process (greedy decoding)."""

import numpy as np
import pytest

from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.engine.local import load_local_engine
from backend.engine.remote import RemoteEngine
from backend.prompts import zoom_tool_call
from tests.backend.markers import write_marker_raster
from tests.backend.server.conftest import start_server
from tests.scripted import ScriptedFirstTurn

pytestmark = pytest.mark.slow
CALL = zoom_tool_call([100, 150, 240, 290])  # -> the 280 x 280 px window around the marker


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    server = start_server(load_local_engine(str(tiny_checkpoint), batch_size=2))
    yield server
    server.stop()


def test_the_chain_through_a_remote_engine_matches_the_local_one(served, tiny_engine, tmp_path):
    raster = write_marker_raster(tmp_path / "marker.tif", 2016, (240, 340, 260, 360))
    request = TaskRequest(task="ask", raster=str(raster), question="What color is the square?", options=TaskOptions(zoom="on", max_new_tokens=12))
    remote = RemoteEngine(served.url, served.token, concurrency=2)
    try:
        over_http = run_task(request, ScriptedFirstTurn(remote, CALL))
    finally:
        remote.close()
    here = run_task(request, ScriptedFirstTurn(tiny_engine, CALL))

    first, second = over_http.zoom.turns[:2]
    assert second.image == "zoom" and second.window == (200, 300, 280, 280) and second.image_size == (280, 280)
    assert (first.visual_tokens, second.visual_tokens) == (1296, 1296 + 100)
    # the server counted both images' placeholder tokens in the prompt: the crop reached it
    assert second.prompt_tokens >= 1296 + 100
    assert [t.model_dump() for t in over_http.zoom.turns] == [t.model_dump() for t in here.zoom.turns]
    assert over_http.zoom.outcome == here.zoom.outcome and over_http.text == here.text
    assert len(over_http.features) == len(here.features)
    for remote_feature, local_feature in zip(over_http.features, here.features):
        assert remote_feature.properties["role"] == local_feature.properties["role"]
        assert np.allclose(remote_feature.geometry["coordinates"], local_feature.geometry["coordinates"])
