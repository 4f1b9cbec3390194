"""Asking the model the way RSCoVLM-7B was trained (MODEL_IO): every trained class in the
detection prompt, repetition penalty 1.0 for detection, the trained pixel range, multiple
choice, region captions; and results that stay inside the extent asked about."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from affine import Affine

from backend.cli import main as cli_main
from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.model_defaults import ModelDefaults, model_defaults
from backend.prompts import MULTIPLE_CHOICE_SUFFIX
from backend.resolution import MAX_PIXELS, MIN_PIXELS, smart_resize, visual_tokens
from tests.rasters import marker_scene, write_tif
from tests.scripted import ScriptedEngine


@pytest.fixture
def raster(tmp_path):
    return write_tif(tmp_path / "scene.tif", marker_scene(1200, 900))  # 0.5 m, EPSG:32633, marker at col 700, row 300


def test_detection_prompts_the_trained_list_at_penalty_one_and_keeps_what_was_asked(raster):
    engine = ScriptedEngine(["10,10,60,10,60,40,10,40 plane\n100,100,150,100,150,140,100,140 harbor\n5,5,20,5,20,9,5,9 boat"],
                            defaults=ModelDefaults(classes=("harbor", "plane", "ship")))
    result = run_task(TaskRequest(task="detect", raster=str(raster), classes=["plane", "fishing boat"]), engine)
    user = engine.seen[0][-1].text
    assert user == "find the fishing boat, harbor, plane, ship."  # the trained list and the untrained request, sorted
    assert set(engine.penalties) == {1.0}
    assert {f.properties["label"] for f in result.features} == {"plane"}  # harbors were not asked for
    assert result.stats.boxes_not_requested == result.stats.views  # one harbor per tile
    assert any("not trained to detect 'fishing boat'" in w for w in result.warnings)
    caption = ScriptedEngine(["a scene"])
    run_task(TaskRequest(task="caption", raster=str(raster)), caption)
    assert caption.penalties == [None]  # other tasks keep the checkpoint's own generation config


def test_the_pixel_range_comes_from_the_checkpoints_processor_and_a_user_range_outside_it_warns(raster, tiny_checkpoint, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    processor = json.loads((folder / "processor_config.json").read_text())
    processor["image_processor"]["size"] = {"shortest_edge": 56 * 56, "longest_edge": 448 * 448}
    (folder / "processor_config.json").write_text(json.dumps(processor))
    defaults = model_defaults(str(folder))
    assert defaults.options == {"min_pixels": 56 * 56, "max_pixels": 448 * 448}
    assert model_defaults(str(tiny_checkpoint)).options == {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    engine = ScriptedEngine(["a scene"], defaults=defaults)
    result = run_task(TaskRequest(task="caption", raster=str(raster)), engine)
    assert result.stats.visual_tokens == visual_tokens(*smart_resize(900, 1200, 28, 56 * 56, 448 * 448)) == 13 * 18  # the trained budget
    assert not result.warnings
    wider = run_task(TaskRequest(task="caption", raster=str(raster), options=TaskOptions(max_pixels=MAX_PIXELS)), engine)
    assert wider.stats.visual_tokens > 256
    assert any("max_pixels 1016064 is above the 200704 the model was trained with" in w for w in wider.warnings)


def test_multiple_choice_as_the_training_data_writes_it(raster):
    engine = ScriptedEngine(["B"])
    result = run_task(TaskRequest(task="ask", raster=str(raster), question="What colour is the square?", choices=["Yellow", "White", "Red"]), engine)
    assert engine.seen[0][-1].text == ("What colour is the square? The choices are listed below: \n(A) Yellow\n(B) White\n(C) Red\n"
                                       + MULTIPLE_CHOICE_SUFFIX)
    assert result.text == "White" and result.features[0].properties["raw_text"] == "B"
    with pytest.raises(ValueError, match="two to five"):
        TaskRequest(task="ask", raster=str(raster), question="?", choices=["only one"])


def test_a_region_is_described_with_its_box_in_the_view_and_context_around_it(raster):
    engine = ScriptedEngine(lambda conversation: "a white rectangle")
    region = (500350.0, 4400290.0, 500370.0, 4400300.0)  # the marker: columns 700:740, rows 300:320
    result = run_task(TaskRequest(task="describe", raster=str(raster), regions=[region], options=TaskOptions(tile_size=224)), engine)
    [conversation] = engine.seen
    prompt, image = conversation[-1].text, conversation[-1].images[0]
    x0, y0, x1, y1 = map(int, re.fullmatch(r"\[identify\] What is the object present at \[(\d+), (\d+), (\d+), (\d+)\]", prompt).groups())
    assert image[y0:y1, x0:x1].min() == 255 and (x1 - x0, y1 - y0) == (40, 20)  # exactly the marker in the view
    assert image.shape[:2] == (224, 224)  # a tile of context around a small feature
    [feature] = result.features
    assert feature.properties["text"] == "a white rectangle" and feature.properties["region"] == 0
    assert shapely.geometry.shape(feature.geometry).equals(shapely.box(*region))


def test_describe_region_writes_the_answers_into_the_layer(raster, tiny_checkpoint, tmp_path, capsys):
    layer = tmp_path / "features.gpkg"
    geometry = np.array([shapely.to_wkb(shapely.Point(500360.0, 4400295.0)), shapely.to_wkb(shapely.box(500100, 4400100, 500140, 4400130))],
                        dtype=object)
    pyogrio.raw.write(str(layer), geometry, [np.array(["tower", "field"], dtype=object)], ["name"], geometry_type="Unknown", crs="EPSG:32633", driver="GPKG")
    out = tmp_path / "described.gpkg"
    code = cli_main(["describe-region", str(raster), "--model", str(tiny_checkpoint), "--feature-layer", str(layer), "--max-new-tokens", "4",
                     "--no-progress", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    meta, _, geometries, fields = pyogrio.raw.read(str(out))
    assert list(meta["fields"]) == ["name", "description"] and list(fields[0]) == ["tower", "field"]
    assert all(isinstance(text, str) for text in fields[1])  # one answer per feature, whatever the random model said
    assert [shapely.from_wkb(g).geom_type for g in geometries] == ["Point", "Polygon"]  # the features as they were
    assert cli_main(["describe-region", str(raster), "--model", str(tiny_checkpoint), "-o", str(out)]) == 2
    assert "either --feature-layer or --box" in capsys.readouterr().err


def test_results_stay_inside_the_extent_on_a_rotated_geotransform(tmp_path):
    """A rotated raster's window is the extent's pixel bounding box, wider than the extent: a box the
    model finds in the corner of that window is clipped back to the extent."""
    rotated = Affine.rotation(20) * Affine(0.5, 0, 0, 0, -0.5, 0)
    path = write_tif(tmp_path / "rotated.tif", marker_scene(600, 600), transform=Affine.translation(500000, 4400000) * rotated)
    extent = (500050.0, 4399900.0, 500150.0, 4400000.0)
    engine = ScriptedEngine(lambda conversation: "0,0,{0},0,{0},{0},0,{0} plane".format(conversation[-1].images[0].shape[1]))
    result = run_task(TaskRequest(task="detect", raster=str(path), classes=["plane"], extent=extent, options=TaskOptions(tile_size=2016)), engine)
    box = shapely.box(*extent)
    assert result.features and all(box.buffer(1e-6).contains(shapely.geometry.shape(f.geometry)) for f in result.features)


def test_the_local_engine_applies_penalty_one_over_the_checkpoints_and_counts_answers_cut_off(raster, tiny_checkpoint, tmp_path):
    """The checkpoint's generation config asks 1.05; detection runs at 1.0 all the same, other
    tasks at the checkpoint's. Random weights never end an answer, so every view stops at the limit."""
    from backend.engine.local import load_local_engine

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.05}))
    engine = load_local_engine(str(folder), batch_size=4)
    asked, generate = [], engine.model.generate

    def recorded(**inputs):
        asked.append(inputs["generation_config"].repetition_penalty)
        return generate(**inputs)

    engine.model.generate = recorded
    options = TaskOptions(max_new_tokens=4, tile_size=448)
    detected = run_task(TaskRequest(task="detect", raster=str(raster), classes=["plane"], options=options), engine)
    assert set(asked) == {1.0} and engine.generation_config.repetition_penalty == 1.05
    assert detected.stats.views_truncated == detected.stats.views > 1
    assert any(f"{detected.stats.views} of {detected.stats.views} view(s) stopped at the answer limit of 4 tokens" in w and "--max-new-tokens" in w
               for w in detected.warnings)
    asked.clear()
    run_task(TaskRequest(task="caption", raster=str(raster), options=TaskOptions(max_new_tokens=4)), engine)
    assert asked == [1.05]


def test_the_released_checkpoints_processor_file_gives_the_pixel_range(tiny_checkpoint, tmp_path):
    """RSCoVLM's training script saves preprocessor_config.json with min_pixels / max_pixels at its top."""
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136,
                                                                  "max_pixels": 12845056, "patch_size": 14}))
    assert model_defaults(str(folder)).options == {"min_pixels": 3136, "max_pixels": 12845056}


def test_classes_dota_is_the_dota_v1_list():
    from backend.cli.tasks import _classes
    from backend.prompts import DOTA_CLASSES

    assert _classes(" DOTA ") == list(DOTA_CLASSES) and len(DOTA_CLASSES) == 15 and "container crane" not in DOTA_CLASSES
    assert _classes("plane, ship ,") == ["plane", "ship"]


def test_a_rotated_polygon_answer_to_grounding_is_kept_as_a_polygon(raster):
    engine = ScriptedEngine(["300,100,400,150,375,200,275,150"])
    result = run_task(TaskRequest(task="ground", raster=str(raster), expression="the long roof", options=TaskOptions(box_form="polygon")), engine)
    [feature] = result.features
    ring = feature.geometry["coordinates"][0]
    assert len(ring) == 5 and len({round(x, 3) for x, _ in ring[:4]}) == 4  # four corners, no two on one vertical: not a box
    assert "polygon" in engine.seen[0][0].text.lower()  # asked with the polygon system prompt


def test_describe_region_of_one_box(raster, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "described.gpkg"
    code = cli_main(["describe-region", str(raster), "--model", str(tiny_checkpoint), "--box", "500100,4400100,500140,4400130", "--extent-crs",
                     "EPSG:32633", "--max-new-tokens", "4", "--no-progress", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    meta, _, geometries, fields = pyogrio.raw.read(str(out))
    assert "text" in list(meta["fields"]) and len(geometries) == 1
    assert shapely.from_wkb(geometries[0]).bounds == pytest.approx((500100, 4400100, 500140, 4400130))
