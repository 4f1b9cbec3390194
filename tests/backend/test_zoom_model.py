"""The Zoom-in Chain on the tiny random Qwen2.5-VL: two turns, two images, real token counts,
and no crash whatever the model says."""

import json

import pytest
import rasterio
import shapely
from pyogrio.raw import read as read_vector

from backend.cli import main
from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.prompts import zoom_tool_call
from backend.resolution import visual_tokens
from tests.backend.markers import write_marker_raster
from tests.scripted import ScriptedFirstTurn

SIZE = 2016
MARKER = (240, 340, 260, 360)


@pytest.fixture(scope="module")
def marker_raster(tmp_path_factory):
    return write_marker_raster(tmp_path_factory.mktemp("model") / "marker.tif", SIZE, MARKER)


def check_accounting(result):
    trace = result.zoom
    shown = 0
    for turn in trace.turns:
        assert turn.image_tokens == visual_tokens(turn.image_size[1], turn.image_size[0])
        shown += turn.image_tokens
        assert turn.visual_tokens == shown  # the engine saw every image of the conversation so far
    assert trace.visual_tokens == result.stats.visual_tokens == sum(t.visual_tokens for t in trace.turns)
    assert trace.pixels_read == sum(t.pixels_read for t in trace.turns)


def test_the_tiny_checkpoint_runs_the_chain_whatever_it_says(tiny_engine, marker_raster):
    request = TaskRequest(task="ask", raster=str(marker_raster), question="What color is the square?", options=TaskOptions(zoom="on", max_new_tokens=16))
    result = run_task(request, tiny_engine)
    trace = result.zoom
    assert trace.zoomed and 1 <= len(trace.turns) <= 1 + trace.max_steps
    # whatever the random model said, the outcome is the one its turns show
    images = [t.image for t in trace.turns]
    expected = {
        "answered without zooming": images == ["overview"] and result.text is not None,
        "answered after zooming": "zoom" in images and "repeat" not in images and result.text is not None,
        "fell back": "repeat" in images and result.text is not None,
        "step bound": len(trace.turns) == 1 + trace.max_steps and result.text is None,
    }
    assert expected.get(trace.outcome), (trace.outcome, images)
    assert trace.steps == images.count("zoom")
    check_accounting(result)


def test_a_two_image_conversation_runs_through_the_local_engine(tiny_engine, marker_raster):
    engine = ScriptedFirstTurn(tiny_engine, zoom_tool_call([100, 150, 240, 290]))
    request = TaskRequest(task="ask", raster=str(marker_raster), question="What color is the square?", options=TaskOptions(zoom="on"))
    result = run_task(request, engine)
    first, second = result.zoom.turns[:2]
    assert second.image == "zoom" and second.image_size == (280, 280)
    # counted by the real processor from the image grids: 1008^2 overview + 280^2 crop
    assert (first.visual_tokens, second.visual_tokens) == (1296, 1296 + 100)
    assert second.prompt_tokens > first.prompt_tokens + 100
    check_accounting(result)


def test_cli_zoom_end_to_end(tiny_checkpoint, marker_raster, tmp_path, capsys):
    out = tmp_path / "where.gpkg"
    argv = ["ask", str(marker_raster), "--model", str(tiny_checkpoint), "--question", "What color is the square?"]
    assert main([*argv, "--zoom", "--zoom-steps", "0", "--max-new-tokens", "16", "--no-progress", "--json", "-o", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["zoom"]["zoomed"] is True and result["zoom"]["max_steps"] == 1
    assert result["zoom"]["system"].startswith("# Tools")
    meta, _, geometry, fields = read_vector(out)
    roles = list(fields[list(meta["fields"]).index("role")])
    assert set(roles) <= {"answer", "zoom"} and roles.count("zoom") <= 1
    with rasterio.open(marker_raster) as dataset:
        left, bottom, right, top = dataset.bounds
    for x0, y0, x1, y1 in (shapely.from_wkb(g).bounds for g in geometry):  # whatever the model said, all lies on the raster
        assert left - 1e-6 <= x0 and x1 <= right + 1e-6 and bottom - 1e-6 <= y0 and y1 <= top + 1e-6


def test_cli_prints_what_the_chain_did(tiny_checkpoint, marker_raster, capsys):
    argv = ["ask", str(marker_raster), "--model", str(tiny_checkpoint), "--question", "What color is the square?"]
    assert main([*argv, "--zoom-factor", "2", "--max-new-tokens", "8", "--no-progress"]) == 0
    assert "zoom: " in capsys.readouterr().out
    assert main([*argv, "--zoom", "off", "--max-new-tokens", "8", "--no-progress"]) == 0
    assert "zoom: not used (zoom is off)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--zoom-steps", "9"], "zoom_steps"),
        (["--zoom-steps", "-1"], "zoom_steps"),
        (["--zoom-factor", "1"], "zoom_factor"),
    ],
)
def test_cli_refuses_bad_zoom_options(marker_raster, capsys, extra, message):
    assert main(["ask", str(marker_raster), "--model", "unused", "--question", "What?", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
