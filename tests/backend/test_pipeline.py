"""The whole pipeline with an engine whose answers we control: a 'perfect model' that reports
the white marker where it really is in each view, in the trained answer format. Everything
else (reads, views, parsing, mapping, merging) is the real code."""

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, box, shape

from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.errors import Cancelled, UserError
from backend.prompts import DOTA_CLASSES
from tests.rasters import marker_scene, write_tif
from tests.scripted import ScriptedEngine

TOP = 4400000.0 + 900 * 0.5  # marker_scene is 900 rows at 0.5 m


def marker_answer(label="plane"):
    """Answer like a detector would: the white pixels' box in the view's pixels, or none."""

    def answer(conversation):
        image = conversation[-1].images[0]
        rows, cols = np.nonzero(image[..., 0] > 200)
        if len(rows) == 0:
            return "There are none."
        x1, y1, x2, y2 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
        return f"{x1},{y1},{x2},{y1},{x2},{y2},{x1},{y2} {label}\ngarbage line"

    return answer


def marker_map_box(col, row, w, h, transform=Affine(0.5, 0, 500000.0, 0, -0.5, TOP)):
    x0, y0 = transform @ (col, row)
    x1, y1 = transform @ (col + w, row + h)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.fixture
def marker_tif(tmp_path):
    return write_tif(tmp_path / "marker.tif", marker_scene())


def request(path, task="detect", **fields):
    options = fields.pop("options", {})
    if task in ("detect", "classify"):
        fields.setdefault("classes", ["plane", "ship"])
    return TaskRequest(task=task, raster=str(path), options=TaskOptions(**options), **fields)


def test_detection_lands_on_the_marker_in_map_coordinates(marker_tif):
    engine = ScriptedEngine(marker_answer())
    result = run_task(request(marker_tif), engine)
    assert result.crs == "EPSG:32633"
    assert len(result.features) == 1  # seen by several overlapping tiles, merged to one
    feature = result.features[0]
    assert feature.properties["label"] == "plane"
    assert feature.properties["task"] == "detect" and feature.properties["model"] == "scripted"
    # every class the model was trained on (DOTA-v1.0's fifteen, RSCoVLM's list), as it was trained and evaluated
    assert feature.properties["prompt"] == "find the " + ", ".join(sorted(DOTA_CLASSES)) + "."
    found = shape(feature.geometry)
    truth = marker_map_box(700, 300, 40, 20)
    assert found.symmetric_difference(truth).area / truth.area < 0.1
    assert found.hausdorff_distance(truth) <= 1.0  # metres: two raster pixels
    assert result.stats.views == 9 and result.stats.boxes_parsed >= 2
    assert result.stats.boxes_merged_away == result.stats.boxes_parsed - 1
    assert result.stats.lines_skipped == result.stats.boxes_parsed  # one garbage line per answer with a box
    assert any("could not be used" in w for w in result.warnings)


def test_tiles_are_read_at_the_smart_resize_size(marker_tif):
    engine = ScriptedEngine(["There are none."])
    run_task(request(marker_tif), engine)
    shapes = {m.images[0].shape for conv in engine.seen for m in conv if m.images}
    assert shapes == {(504, 504, 3)}


def test_gsd_resamples_the_tiles(marker_tif):
    engine = ScriptedEngine(marker_answer())
    result = run_task(request(marker_tif, options={"gsd": 1.0}), engine)
    assert result.stats.views == 2  # 600 x 450 working pixels: two 512 tiles
    found = shape(result.features[0].geometry)
    truth = marker_map_box(700, 300, 40, 20)
    assert found.hausdorff_distance(truth) <= 2.0


def test_extent_limits_the_views(marker_tif):
    engine = ScriptedEngine(marker_answer())
    extent = (500300, TOP - 200, 500400, TOP - 100)  # 200 x 200 px around the marker
    result = run_task(request(marker_tif, extent=extent), engine)
    assert result.stats.views == 1
    assert result.raster.window == (600, 200, 200, 200)
    assert shape(result.features[0].geometry).hausdorff_distance(marker_map_box(700, 300, 40, 20)) <= 1.0


def test_rotated_geotransform(tmp_path):
    transform = Affine(0.5, 0.2, 500000.0, 0.1, -0.5, 4400450.0)
    path = write_tif(tmp_path / "rotated.tif", marker_scene(), transform=transform)
    result = run_task(request(path), ScriptedEngine(marker_answer()))
    ring = np.asarray(result.features[0].geometry["coordinates"][0])[:4]
    expected = [transform @ (c, r) for c, r in [(700, 300), (740, 300), (740, 320), (700, 320)]]
    assert Polygon(ring).hausdorff_distance(Polygon(expected)) <= 1.0


def test_nodata_tiles_are_not_sent_to_the_model(tmp_path):
    data = marker_scene()
    data[:, :, :600] = 0
    path = write_tif(tmp_path / "collar.tif", data, nodata=0)
    engine = ScriptedEngine(marker_answer())
    result = run_task(request(path), engine)
    assert result.stats.views_skipped_nodata == 3  # the left column of tiles is all nodata
    assert len(engine.seen) == result.stats.views - 3
    assert len(result.features) == 1


def test_grounding_keeps_the_first_box(marker_tif):
    engine = ScriptedEngine(["56,28,112,84 the white plane\n0,0,10,10 another"])
    result = run_task(request(marker_tif, "ground", expression="the white plane"), engine)
    assert len(engine.seen) == 1
    system = engine.seen[0][0].text
    assert "x1,y1,x2,y2 object" in system and engine.seen[0][1].text == "find the white plane"
    assert len(result.features) == 1
    view = engine.seen[0][1].images[0]  # the whole extent in one view
    sx, sy = 1200 / view.shape[1], 900 / view.shape[0]
    truth = marker_map_box(56 * sx, 28 * sy, 56 * sx, 56 * sy)
    assert shape(result.features[0].geometry).hausdorff_distance(truth) < 1e-6
    assert result.features[0].properties["label"] == "the white plane"


def test_grounding_without_a_box_warns(marker_tif):
    result = run_task(request(marker_tif, "ground", expression="a ship"), ScriptedEngine(["I cannot see it"]))
    assert result.features == [] and any("no box" in w for w in result.warnings)


def test_caption_classify_ask_give_text_on_the_extent_polygon(marker_tif):
    caption = run_task(request(marker_tif, "caption"), ScriptedEngine(["A white plane on dark ground."]))
    assert caption.text == "A white plane on dark ground."
    polygon = shape(caption.features[0].geometry)
    assert polygon.equals(box(500000, TOP - 450, 500600, TOP))
    assert caption.features[0].properties["text"] == caption.text
    classify = run_task(request(marker_tif, "classify", classes=["airport", "harbor"]), ScriptedEngine(["Airport."]))
    assert classify.features[0].properties["label"] == "airport"
    unknown = run_task(request(marker_tif, "classify", classes=["airport", "harbor"]), ScriptedEngine(["forest"]))
    assert unknown.features[0].properties["label"] == "" and unknown.warnings
    ask = run_task(request(marker_tif, "ask", question="How many planes?"), ScriptedEngine(["1"]))
    assert ask.text == "1"
    assert ask.features[0].properties["prompt"] == "How many planes? Answer the question using a single word or a short phrase."


def test_progress_and_cancel(marker_tif):
    seen = []
    run_task(request(marker_tif), ScriptedEngine(["There are none."], batch_size=2), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]
    calls = []

    def stop_after_first_batch():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled, match="after 2 of 9"):
        run_task(request(marker_tif), ScriptedEngine(["There are none."], batch_size=2), should_stop=stop_after_first_batch)


def test_inputs_are_checked_before_any_model_call(marker_tif):
    engine = ScriptedEngine(["x"])
    with pytest.raises(UserError, match="does not overlap"):
        run_task(request(marker_tif, extent=(0, 0, 1, 1)), engine)
    with pytest.raises(UserError, match="--gsd needs a georeferenced raster"):
        from PIL import Image

        png = marker_tif.with_suffix(".png")
        Image.fromarray(marker_scene().transpose(1, 2, 0)).save(png)
        run_task(request(png, options={"gsd": 1.0}), engine)
    assert engine.seen == []


def test_a_gsd_far_finer_than_the_raster_is_refused_before_planning(marker_tif):
    with pytest.raises(UserError, match="finer than the raster's 0.5 m pixels"):
        run_task(request(marker_tif, options={"gsd": 0.0001}), ScriptedEngine(["x"]))


def test_request_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="non-empty list of classes"):
        TaskRequest(task="detect", raster="x.tif", classes=[" ", ""])
    with pytest.raises(ValidationError, match="needs an expression"):
        TaskRequest(task="ground", raster="x.tif")
    with pytest.raises(ValidationError, match="needs a question"):
        TaskRequest(task="ask", raster="x.tif", question="  ")
    with pytest.raises(ValidationError, match="smaller than tile_size"):
        TaskOptions(tile_size=256, tile_overlap=256)
