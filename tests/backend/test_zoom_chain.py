"""The Zoom-in Chain's logic, driven through the real pipeline by scripted model texts."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.errors import Cancelled
from backend.georef import raster_to_map
from backend.pipeline import TaskRun
from backend.prompts import DETECTION_SYSTEM, VQA_SUFFIX, ZOOM_ANSWER_INSTRUCTION, ZOOM_FOLLOW_UP, ZOOM_SYSTEM, zoom_tool_call
from tests.backend.markers import TRANSFORM, write_marker_raster
from tests.scripted import ScriptedEngine

SIZE = 2016  # 4.0x the pixel budget; its overview is 1008 x 1008, two raster pixels per view pixel
MARKER = (240, 340, 260, 360)
ZOOM_BOX = [100, 150, 240, 290]  # -> raster window 200:480 x 300:580, shown at 280 x 280
QUESTION = "What color is the square?"


@pytest.fixture(scope="module")
def marker_raster(tmp_path_factory):
    return write_marker_raster(tmp_path_factory.mktemp("chain") / "marker.tif", SIZE, MARKER)


def ask(raster, engine, question=QUESTION, **options):
    return run_task(TaskRequest(task="ask", raster=str(raster), question=question, options=TaskOptions(**options)), engine)


def ground(raster, engine, expression="white square", **options):
    return run_task(TaskRequest(task="ground", raster=str(raster), expression=expression, options=TaskOptions(**options)), engine)


def map_box(c0, r0, c1, r1) -> np.ndarray:
    return raster_to_map(np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=float), TRANSFORM)


def ring(feature) -> np.ndarray:
    return np.asarray(feature.geometry["coordinates"][0], dtype=float)[:4]


def test_a_good_chain_shows_the_native_crop_and_keeps_the_conversation(marker_raster):
    engine = ScriptedEngine([zoom_tool_call(ZOOM_BOX), "white"])
    result = ask(marker_raster, engine, zoom="on")
    assert result.text == "white"
    trace = result.zoom
    assert (trace.zoomed, trace.outcome, trace.steps, len(trace.turns)) == (True, "answered after zooming", 1, 2)
    assert trace.system == ZOOM_SYSTEM

    first, second = engine.seen
    assert [m.role for m in first] == ["system", "user"]
    assert first[0].text == ZOOM_SYSTEM
    # the LRS-VQA instruction ("phrase", not VQA's "a short phrase"), then the zoom request
    assert first[1].text == QUESTION + ZOOM_ANSWER_INSTRUCTION + "\nZoom in to the region of interest and answer the question."
    assert first[1].images[0].shape == (1008, 1008, 3)
    assert [m.role for m in second] == ["system", "user", "assistant", "user"]
    assert second[2].text == zoom_tool_call(ZOOM_BOX)
    assert second[3].text == ZOOM_FOLLOW_UP
    crop = second[3].images[0]
    with rasterio.open(marker_raster) as dataset:
        native = dataset.read(window=Window(200, 300, 280, 280)).transpose(1, 2, 0)
    assert np.array_equal(crop, native)  # re-read from the raster, not cut from the overview

    overview_turn, zoom_turn = trace.turns
    assert overview_turn.image == "overview" and overview_turn.zoom_box == tuple(map(float, ZOOM_BOX))
    assert zoom_turn.image == "zoom" and zoom_turn.window == (200, 300, 280, 280) and zoom_turn.image_size == (280, 280)
    assert zoom_turn.user == ZOOM_FOLLOW_UP and zoom_turn.answer == "white"
    # accounting: tokens per turn (turn 2 carries both images), pixels decoded, and native tiling
    assert (overview_turn.image_tokens, zoom_turn.image_tokens) == (1296, 100)
    assert (overview_turn.visual_tokens, zoom_turn.visual_tokens) == (1296, 1396)
    assert trace.visual_tokens == result.stats.visual_tokens == 2692
    assert (overview_turn.pixels_read, zoom_turn.pixels_read) == (1008 * 1008, 280 * 280)
    assert trace.pixels_read == 1008 * 1008 + 280 * 280
    assert (trace.brute_force.tiles, trace.brute_force.visual_tokens) == (4, 4 * 1296)
    assert result.stats.views == 2

    answer, zoom = result.features
    assert answer.properties["role"] == "answer" and answer.properties["text"] == "white"
    assert zoom.properties["role"] == "zoom" and zoom.properties["step"] == 1 and zoom.properties["label"] == "zoom 1"
    assert zoom.properties["raw_text"] == zoom_tool_call(ZOOM_BOX)
    assert np.allclose(ring(zoom), map_box(200, 300, 480, 580))


def test_grounding_never_zooms_and_maps_through_the_whole_view(marker_raster):
    """The chain was trained on questions only: grounding on a raster over the budget is asked on
    the whole view, with the box prompt, and said to be coarse."""
    engine = ScriptedEngine(["120,170,130,180 white square"])
    result = ground(marker_raster, engine, zoom="on", zoom_factor=1.5)
    [conversation] = engine.seen
    assert [(m.role, m.text) for m in conversation] == [("system", DETECTION_SYSTEM["hbox"]), ("user", "find the white square")]
    assert conversation[1].images[0].shape == (1008, 1008, 3) and result.zoom is None
    assert np.allclose(ring(result.features[0]), map_box(*MARKER))  # 2 raster pixels per view pixel
    assert any("trained on questions only" in w for w in result.warnings)
    assert any("narrow --extent" in w for w in result.warnings)


def test_a_small_window_is_enlarged_to_the_least_pixels(marker_raster):
    # 112 x 112 raster pixels are shown at 224 x 224 (min_pixels): two crop pixels per raster pixel
    engine = ScriptedEngine([zoom_tool_call([110, 160, 166, 216]), "white"])
    result = ask(marker_raster, engine, zoom="on")
    assert result.zoom.turns[1].window == (220, 320, 112, 112) and result.zoom.turns[1].image_size == (224, 224)
    assert engine.seen[1][3].images[0].shape == (224, 224, 3)


def test_two_steps_nest_inside_each_other(marker_raster):
    second_box = [20, 20, 120, 120]  # in the 280 x 280 crop -> raster 220:320 x 320:420
    engine = ScriptedEngine([zoom_tool_call(ZOOM_BOX), zoom_tool_call(second_box), "white"])
    result = ask(marker_raster, engine, zoom="on", zoom_steps=1)
    trace = result.zoom
    assert (trace.steps, trace.outcome) == (2, "answered after zooming")
    assert trace.turns[2].window == (220, 320, 100, 100)
    assert trace.turns[2].image_size == (224, 224)
    assert result.text == "white"
    assert [f.properties["step"] for f in result.features[1:]] == [1, 2]
    assert np.allclose(ring(result.features[2]), map_box(220, 320, 320, 420))
    assert engine.seen[2][4].text == zoom_tool_call(second_box)


@pytest.mark.parametrize(
    ("call", "note"),
    [
        ("<tool_call>\n{not json\n</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "image_zoom_in", "arguments": {"box": [1, 2, 3, 4]}}</tool_call>', "not four numbers"),
        (zoom_tool_call([2000, 2000, 2100, 2100]), "outside the 1008x1008 image"),
        (zoom_tool_call([-50, -50, -10, -10]), "outside"),
        (zoom_tool_call([0, 0, 1008, 0]), "no area"),
        (zoom_tool_call([0, 0, 1008, 1]), "aspect ratio"),
    ],
)
def test_an_unusable_call_falls_back_to_the_whole_view(marker_raster, call, note):
    engine = ScriptedEngine([call, "white"])
    result = ask(marker_raster, engine, zoom="on")
    assert result.text == "white"
    trace = result.zoom
    assert (trace.outcome, trace.steps) == ("fell back", 0)
    assert note in trace.turns[0].note
    assert trace.turns[1].image == "repeat" and trace.turns[1].pixels_read == 0
    assert trace.turns[1].window == (0, 0, SIZE, SIZE)
    assert engine.seen[1][3].images[0] is engine.seen[0][1].images[0]  # the overview again, not re-read
    assert engine.seen[1][3].text == ZOOM_FOLLOW_UP
    assert any("could not be used" in w and note in w for w in result.warnings)
    assert [f.properties["role"] for f in result.features] == ["answer"]


def test_reversed_and_negative_corners_are_ordered_and_clipped(marker_raster):
    engine = ScriptedEngine([zoom_tool_call([240, 290, -20, -10]), "white"])
    result = ask(marker_raster, engine, zoom="on")
    turn = result.zoom.turns[0]
    assert turn.zoom_box == (0, 0, 240, 290)
    assert turn.note == "corners given in reverse order; clipped to the 1008x1008 image"
    assert result.zoom.turns[1].window == (0, 0, 480, 580)
    assert result.zoom.outcome == "answered after zooming"


@pytest.mark.parametrize("zoom_steps", [0, 1, 3])
def test_endless_zoom_requests_stop_at_the_step_bound(marker_raster, zoom_steps):
    engine = ScriptedEngine([zoom_tool_call([10, 10, 200, 200])])
    result = ask(marker_raster, engine, zoom="on", zoom_steps=zoom_steps)
    trace = result.zoom
    assert trace.max_steps == 1 + zoom_steps
    assert (trace.outcome, trace.steps, len(trace.turns)) == ("step bound", 1 + zoom_steps, 2 + zoom_steps)
    assert len(engine.seen) == 2 + zoom_steps
    assert [f.properties["role"] for f in result.features] == ["zoom"] * (1 + zoom_steps) and result.text is None  # no answer
    assert any("still asked to zoom" in w for w in result.warnings)
    windows = [t.window for t in trace.turns]
    for outer, inner in zip(windows, windows[1:]):  # each step looks inside the previous one
        assert inner[0] >= outer[0] and inner[1] >= outer[1]
        assert inner[0] + inner[2] <= outer[0] + outer[2] and inner[1] + inner[3] <= outer[1] + outer[3]


def test_an_answer_without_a_call_is_taken_as_it_is(marker_raster):
    engine = ScriptedEngine(["white"])
    result = ask(marker_raster, engine, zoom="on")
    assert result.text == "white"
    assert (result.zoom.outcome, len(result.zoom.turns), len(engine.seen)) == ("answered without zooming", 1, 1)


@pytest.mark.parametrize("question", ["How many white squares are there?", "Count the planes.", "What is the number of ships?"])
@pytest.mark.parametrize("mode", ["auto", "on"])
def test_counting_questions_skip_the_zoom(marker_raster, question, mode):
    engine = ScriptedEngine(["1"])
    result = ask(marker_raster, engine, question=question, zoom=mode, zoom_factor=1.5)
    assert result.zoom.zoomed is False and "counting" in result.zoom.reason
    assert [m.role for m in engine.seen[0]] == ["user"]
    assert engine.seen[0][0].text == question + VQA_SUFFIX
    zoomed = ask(marker_raster, ScriptedEngine(["1"]), question=question, zoom=mode, zoom_factor=1.5, zoom_counting=True)
    assert zoomed.zoom.zoomed is True


def test_auto_zooms_only_past_the_factor(marker_raster):
    at_factor = ask(marker_raster, ScriptedEngine(["white"]))  # 2016^2 is exactly 4.0x the budget
    assert at_factor.zoom.zoomed is False and at_factor.zoom.mode == "auto"
    assert at_factor.zoom.reason == "the extent is 4.0x the pixel budget, within the zoom factor 4"
    engine = ScriptedEngine(["white"])
    past = ask(marker_raster, engine, zoom_factor=3.9)
    assert past.zoom.zoomed is True and "over the zoom factor 3.9" in past.zoom.reason
    assert engine.seen[0][0].text == ZOOM_SYSTEM
    small = TaskRequest(task="ask", raster=str(marker_raster), question=QUESTION, extent=(500000, 4399500, 500500, 4400000))
    with TaskRun(small, "scripted") as run:  # 1000 x 1000 px fit the budget: answered directly
        assert run.zoom.zoomed is False and run.system is None and run.user == QUESTION + VQA_SUFFIX


def test_zoom_off_and_other_tasks(marker_raster):
    off = ask(marker_raster, ScriptedEngine(["white"]), zoom="off", zoom_factor=1.5)
    assert off.zoom.zoomed is False and off.zoom.reason == "zoom is off"
    caption = run_task(TaskRequest(task="caption", raster=str(marker_raster), options=TaskOptions(zoom="on")), ScriptedEngine(["a"]))
    assert caption.zoom is None


def test_the_zoom_stays_inside_the_extent(marker_raster):
    extent = (500050.0, 4399700.0, 500350.0, 4399900.0)  # columns 100:700, rows 200:600
    request = TaskRequest(task="ask", raster=str(marker_raster), question=QUESTION, extent=extent, options=TaskOptions(zoom="on"))
    engine = ScriptedEngine(lambda conversation: zoom_tool_call([-100, -100, 5000, 5000]) if len(conversation) == 2 else "white")
    result = run_task(request, engine)
    c, r, w, h = result.zoom.turns[1].window
    assert (c, r, c + w, r + h) == (100, 200, 700, 600)


def test_progress_counts_turns_and_cancel_stops_between_them(marker_raster):
    seen = []
    request = TaskRequest(task="ask", raster=str(marker_raster), question=QUESTION, options=TaskOptions(zoom="on"))
    run_task(request, ScriptedEngine([zoom_tool_call(ZOOM_BOX), "white"]), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3)]
    engine = ScriptedEngine([zoom_tool_call(ZOOM_BOX), "white"])
    with pytest.raises(Cancelled, match="stopped after 1 of at most 3 turns"):
        run_task(request, engine, should_stop=lambda: len(engine.seen) >= 1)
    assert len(engine.seen) == 1


def test_an_extent_of_nodata_is_not_shown(tmp_path):
    empty = write_marker_raster(tmp_path / "empty.tif", SIZE, MARKER, nodata=0)
    engine = ScriptedEngine(["white"])
    result = ask(empty, engine, zoom="on")
    assert result.zoom.outcome == "no data" and result.text is None and engine.seen == []


def test_the_cli_summary_of_a_grounding(marker_raster):
    from backend.cli.tasks import summary

    assert summary(ground(marker_raster, ScriptedEngine(["no box here"]))) == "not found"
    found = ground(marker_raster, ScriptedEngine(["120,170,130,180 white square"]))
    assert summary(found) == "found at 500120,4.39982e+06,500130,4.39983e+06 (EPSG:32633)"
