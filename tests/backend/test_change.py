"""Change detection over two rasters of the same place: the later one read on the earlier one's
grid whatever its CRS and resolution, the pair sent as one two-frame video after TEOChat's
prefix, answers placed on the map, dated; a real tiny model and the remote engine run it too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from backend.cli import main as cli_main
from backend.contract import TaskOptions, TaskRequest
from backend.drive import open_run, run_task
from backend.errors import UserError
from backend.prompts import CHANGE_PREFIX, change_question
from tests.rasters import marker_scene, write_tif
from tests.scripted import ScriptedEngine

ORIGIN = (500000.0, 4400000.0)


def warped_copy(source, target, crs: str, resolution: float) -> None:
    """`source` reprojected into another CRS at another resolution (what a second acquisition,
    delivered by another provider, looks like)."""
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds, resolution=resolution)
        profile = {**src.profile, "crs": crs, "transform": transform, "width": width, "height": height}
        with rasterio.open(target, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.bilinear)


@pytest.fixture
def pair(tmp_path):
    """A 600 x 600 px scene at 0.5 m in UTM 33N with a white marker, and the same place later in
    Web Mercator at about 0.8 m, the marker moved and a new one built."""
    before = write_tif(tmp_path / "before.tif", marker_scene(600, 600, marker=(100, 120, 40, 20)),
                       transform=Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1]))
    with rasterio.open(before, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2020:05:01 11:00:00")
    later = marker_scene(600, 600, marker=(400, 300, 60, 30))  # the first marker gone, another there
    same_place = write_tif(tmp_path / "later-utm.tif", later, transform=Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1]))
    after = tmp_path / "after.tif"
    warped_copy(same_place, after, "EPSG:3857", 0.8)
    with rasterio.open(after, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2023:08:15 10:00:00")
    return before, after


def test_the_two_views_of_a_tile_are_the_same_ground_to_a_pixel(pair):
    before, after = pair
    request = TaskRequest(task="change", raster=str(before), raster_after=str(after), classes=["building"], options=TaskOptions(tile_size=224))
    with open_run(request, "scripted") as run:
        assert run.after.dataset.crs == run.source.crs and run.after.base.crs.to_epsg() == 3857
        for view in {(v.col_off, v.row_off): v for v in run.views}.values():
            first = run.source.read_view(view, run.stretch).image
            second = run.after.read_view(view, run.after_stretch).image
            assert first.shape == second.shape
            expected = np.zeros(first.shape[:2], bool)  # where the later marker lies on the earlier grid
            c0, r0 = 400 - view.col_off, 300 - view.row_off
            expected[max(0, int(r0)) : max(0, int(r0 + 30)), max(0, int(c0)) : max(0, int(c0 + 60))] = True
            found = second[..., 0] > 200
            if expected.any():  # the warped marker covers the same pixels, give or take its resampled edge
                assert (found & expected).sum() >= 0.8 * expected.sum() and (found & ~expected).sum() <= 0.1 * expected.sum() + 64
            else:
                assert found.sum() <= 64


def test_the_pair_goes_as_one_video_after_the_prefix_and_answers_land_on_the_map(pair):
    before, after = pair
    engine = ScriptedEngine(lambda conversation: "392,294,451,323 changed buildings" if conversation[-1].video[1][310, 410, 0] > 200
                            else "There are none.")
    request = TaskRequest(task="change", raster=str(before), raster_after=str(after), classes=["building"],
                          options=TaskOptions(tile_size=616, max_new_tokens=64))
    result = run_task(request, engine)
    [conversation] = engine.seen  # one tile, one class, one kind
    [message] = conversation
    assert message.lead == CHANGE_PREFIX and message.text == change_question("building") and message.images == ()
    assert len(message.video) == 2 and message.video[0].shape == message.video[1].shape == (588, 588, 3)
    assert engine.penalties == [1.0]
    [feature] = result.features
    assert feature.properties["label"] == "building" and feature.properties["change"] == "changed"
    assert (feature.properties["date_before"], feature.properties["date_after"]) == ("2020-05-01", "2023-08-15")
    # the box, in the 588 px frame of 600 raster pixels at 0.5 m, maps back onto the marker's ground
    marker = shapely.box(ORIGIN[0] + 400 * 0.5, ORIGIN[1] - 330 * 0.5, ORIGIN[0] + 460 * 0.5, ORIGIN[1] - 300 * 0.5)
    placed = shapely.geometry.shape(feature.geometry)
    assert placed.intersection(marker).area / placed.union(marker).area > 0.9
    assert result.raster_after.path == str(after) and result.crs == "EPSG:32633"


def test_appeared_and_disappeared_are_asked_per_class(pair):
    before, after = pair
    engine = ScriptedEngine(["There are none."])
    request = TaskRequest(task="change", raster=str(before), raster_after=str(after), classes=["building", "small vehicle"],
                          options=TaskOptions(tile_size=616, change_kinds=["appeared", "disappeared"]))
    result = run_task(request, engine)
    asked = [conversation[-1].text for conversation in engine.seen]
    assert asked == [change_question(c, k) for c in ("building", "small vehicle") for k in ("appeared", "disappeared")]
    assert "the buildings in the second image which were not in the first image" in asked[0]
    assert result.stats.views == 4 and result.features == []


def test_a_change_caption_on_the_whole_intersection(pair):
    before, after = pair
    engine = ScriptedEngine(["A building disappeared and a building appeared."])
    result = run_task(TaskRequest(task="change_caption", raster=str(before), raster_after=str(after)), engine)
    assert result.text == "A building disappeared and a building appeared." and len(engine.seen) == 1
    assert engine.seen[0][-1].text == "Describe the changes between the two images."


def test_bad_pairs_are_refused_with_one_line(pair, tmp_path):
    before, after = pair
    elsewhere = write_tif(tmp_path / "elsewhere.tif", marker_scene(100, 100), transform=Affine(0.5, 0, 600000.0, 0, -0.5, 4500000.0))
    no_crs = write_tif(tmp_path / "nocrs.png.tif", marker_scene(100, 100), crs=None, transform=Affine.identity())
    one_band = write_tif(tmp_path / "grey.tif", marker_scene(600, 600)[:1], transform=Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1]))
    for later, options, problem in ((elsewhere, {}, "do not overlap"), (no_crs, {}, "has a CRS but"),
                                    (one_band, {"bands": [3, 2, 1]}, "does not fit grey.tif")):
        request = TaskRequest(task="change", raster=str(before), raster_after=str(later), classes=["building"], options=TaskOptions(**options))
        with pytest.raises(UserError, match=problem):
            open_run(request, "scripted")
    with pytest.raises(ValueError, match="needs raster_after"):
        TaskRequest(task="change", raster=str(before), classes=["building"])


def test_the_change_command_with_a_real_model_writes_a_dated_layer(pair, tiny_checkpoint, tmp_path, capsys):
    before, after = pair
    out = tmp_path / "changes.gpkg"
    code = cli_main(["change", str(before), str(after), "--classes", "building", "--model", str(tiny_checkpoint), "--max-new-tokens", "12",
                     "--no-progress", "-o", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    assert result["task"] == "change" and result["stats"]["views"] == 4 and result["stats"]["visual_tokens"] > 0
    import pyogrio.raw

    meta, *_ = pyogrio.raw.read(str(out))
    assert {"label", "change", "date_before", "date_after"} <= set(meta["fields"]) and "32633" in meta["crs"]
    assert cli_main(["change", str(before), str(after), "--model", str(tiny_checkpoint)]) == 2
    assert "--classes (what changed) or --caption" in capsys.readouterr().err


def test_the_remote_engine_sends_the_frames_as_a_video_and_the_service_reads_them(pair, tiny_checkpoint):
    """vLLM's form of a frame list (data:video/jpeg), to another rscovlm serve: its answers are the
    local engine's on the same (JPEG-decoded) frames, and it counts one frame pair's tokens."""
    from backend.engine.local import load_local_engine
    from backend.engine.remote import RemoteEngine, openai_messages
    from backend.prompts import change_turn
    from tests.backend.server.conftest import start_server

    frames = (np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8),) * 2
    [message] = openai_messages(change_turn(*frames, change_question("ship")))
    parts = message["content"]
    assert [p["type"] for p in parts] == ["text", "video_url", "text"] and parts[0]["text"] == CHANGE_PREFIX
    assert parts[1]["video_url"]["url"].startswith("data:video/jpeg;base64,") and parts[1]["video_url"]["url"].count(",") == 2
    local = load_local_engine(str(tiny_checkpoint), batch_size=2)
    server = start_server(local)
    remote = RemoteEngine(server.url, server.token)
    try:
        before, after = pair
        request = TaskRequest(task="change", raster=str(before), raster_after=str(after), classes=["building"],
                              options=TaskOptions(tile_size=224, max_new_tokens=6))
        with open_run(request, "planned") as run:
            planned = len(run.views)
        over_http = run_task(request, remote)
        assert over_http.stats.views == planned > 1 and over_http.stats.prompt_tokens > planned * 64  # each pair's 64 visual tokens reached the server
        [answer] = remote.generate([change_turn(*frames, change_question("ship"))], 6)
        assert answer.prompt_tokens == local.generate([change_turn(*frames, change_question("ship"))], 6)[0].prompt_tokens
        assert local.generate([change_turn(*frames, "x")], 2)[0].visual_tokens == 64  # two 224 px frames: one temporal patch
    finally:
        remote.close()
        server.stop()


def test_a_checkpoint_whose_template_has_no_video_is_refused_with_the_fix(pair, tiny_checkpoint, tmp_path):
    """Older checkpoints (this project's own scratch ones before change detection) template
    images only: the processor would fail on a count mismatch; the engine names the problem."""
    import shutil

    from backend.engine.local import load_local_engine
    from backend.prompts import change_turn

    images_only = tmp_path / "images-only"
    shutil.copytree(tiny_checkpoint, images_only)
    template = images_only / "chat_template.jinja"
    video_branch = "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    template.write_text(template.read_text().replace(video_branch, ""))
    assert "video" not in template.read_text()
    engine = load_local_engine(str(images_only), batch_size=1)
    frame = np.zeros((224, 224, 3), np.uint8)
    with pytest.raises(UserError, match="writes no video"):
        engine.generate([change_turn(frame, frame, change_question("building"))], 2)
