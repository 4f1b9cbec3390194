"""The demo co-training data: the dataset layout the trainer and `rscovlm eval run` read, answers
that agree with the truth, Zoom-in Chain conversations whose crop is exactly what the chain reads
for their tool call, and the chain scored by `eval run` on the kept mosaics."""

import json
from collections import Counter

import numpy as np
import pytest
import shapely
from PIL import Image

from backend.contract import TaskOptions, TaskRequest
from backend.evaluation.dataset import open_split
from backend.evaluation.dota_io import read_image_files
from backend.evaluation.run import evaluate_model
from backend.model_defaults import ModelDefaults
from backend.parsing import parse_boxes, parse_tool_call
from backend.pipeline import TaskRun
from backend.prompts import ZOOM_ANSWER_INSTRUCTION, ZOOM_REQUEST_SUFFIX, ZOOM_SYSTEM, zoom_tool_call
from backend.resolution import MIN_PIXELS
from backend.zoom_plan import zoom_view
from tests.scripted import ScriptedEngine
from training.data import Collator, Mixture, parse_data_spec
from training.demo_data import DEMO_MAX_PIXELS, TILE, DemoDataPlan, build_demo_data
from training.layouts import plan_layout
from training.world import CLASSES

PLAN = DemoDataPlan(scenes=6, tiles_per_scene=4, zoom_scenes=1, val_scenes=6, val_zoom_scenes=1, scene_sizes=(512,), town_size=640,
                    mosaic_sizes=(2048, 2048), val_mosaic_sizes=(2560, 2560), change_scenes=2, val_change_scenes=1, change_tiles_per_scene=4)
TASKS = {"detect", "ground", "vqa", "caption", "classify", "zoom", "change", "change_caption"}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    return out, build_demo_data(out, PLAN)


def _records(folder):
    return [json.loads(line) for line in (folder / "conversations.jsonl").read_text().splitlines()]


def test_every_task_is_in_the_dataset_layout(demo_data):
    out, manifest = demo_data
    train = _records(out / "train")
    assert set(Counter(r["task"] for r in train)) == TASKS
    assert manifest["classes"] == sorted(CLASSES)
    assert manifest["pixel_budget"]["max_pixels"] == DEMO_MAX_PIXELS
    for record in train:
        assert all((out / "train" / image).is_file() for image in record["images"] + sum(record.get("videos", []), []))
        if record["task"] == "detect":
            name = record["images"][0].split("/")[1].removesuffix(".png")
            assert (out / "train" / "labelTxt" / f"{name}.txt").is_file()
            assert record["resized_size"] == [TILE, TILE]
    train_seeds, val_seeds = manifest["counts"]["train"]["seeds"], manifest["counts"]["val"]["seeds"]
    assert train_seeds[1] <= val_seeds[0], "validation scenes reuse training seeds"


def test_detection_answers_agree_with_the_dota_truth(demo_data):
    out, _ = demo_data
    for record in _records(out / "train"):
        if record["task"] != "detect" or not record["messages"][1]["content"].endswith("small vehicle, storage tank."):
            continue
        name = record["images"][0].split("/")[1].removesuffix(".png")
        truth = read_image_files([out / "train" / "labelTxt" / f"{name}.txt"], truth=True, scored=False, source="t").boxes
        answer = parse_boxes(record["messages"][-1]["content"], (TILE, TILE), list(CLASSES))
        assert len(answer.boxes) == len(truth.label)
        truth_polygons = [shapely.Polygon(p) for p in truth.points]
        for box in answer.boxes:
            polygon = shapely.Polygon(box.points)
            best = max((polygon.intersection(t).area / polygon.union(t).area for t in truth_polygons), default=0.0)
            assert best > 0.6, (name, box.raw)


def test_trainer_reads_and_collates_every_task(demo_data, tiny_checkpoint):
    from transformers import AutoProcessor

    out, _ = demo_data
    mixture = Mixture(parse_data_spec(str(out)), "train", seed=0, min_pixels=MIN_PIXELS, max_pixels=DEMO_MAX_PIXELS)
    assert set(mixture.tasks()) == TASKS
    zoom = next(i for i, s in enumerate(mixture.samples) if s.task == "zoom")
    detect = next(i for i, s in enumerate(mixture.samples) if s.task == "detect")
    change = next(i for i, s in enumerate(mixture.samples) if s.task == "change")
    batch = Collator(AutoProcessor.from_pretrained(tiny_checkpoint))([mixture[zoom], mixture[detect], mixture[change]])
    assert batch["image_grid_thw"].shape[0] == 3  # overview + crop, and the tile
    assert batch["video_grid_thw"].tolist() == [[1, TILE // 14, TILE // 14]]  # two frames: one temporal patch
    assert (batch["labels"] != -100).any(dim=1).all()


def test_change_answers_are_the_truth_seen_on_the_pair(demo_data):
    """Every box a change answer gives covers a true change of its class and kind on the earlier
    grid, and where the two frames differ most lies inside the boxes."""
    from backend.prompts import change_question

    out, _ = demo_data
    records = [r for r in _records(out / "train") if r["task"] == "change"]
    assert len(records) == PLAN.change_scenes * PLAN.change_tiles_per_scene
    answered = 0
    for record in records:
        label, kind = record["change"]["label"], record["change"]["kind"]
        assert record["messages"][0]["content"].endswith(change_question(label, kind))
        answer = parse_boxes(record["messages"][1]["content"], (TILE, TILE))
        if not answer.boxes:
            assert record["messages"][1]["content"] == "There are none."
            continue
        answered += 1
        first, second = (np.asarray(Image.open(out / "train" / f), dtype=float) for f in record["videos"][0])
        differs = np.abs(second - (0.9 * first + 9.0)).max(axis=2)  # the later day's tone taken out
        boxes = [tuple(np.clip(np.round(np.r_[b.points.min(axis=0), b.points.max(axis=0)]).astype(int), 0, TILE)) for b in answer.boxes]
        elsewhere = np.ones(differs.shape, bool)
        for x0, y0, x1, y1 in boxes:
            elsewhere[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = False
        for (x0, y0, x1, y1), box in zip(boxes, answer.boxes):  # an object at one date only: the frames differ on it
            assert differs[y0:y1, x0:x1].mean() > 3 * differs[elsewhere].mean() + 2, (record["id"], box.raw)
    assert answered >= len(records) // 3


def test_zoom_crops_are_what_the_chain_reads_for_the_call(demo_data):
    out, _ = demo_data
    records = [r for r in _records(out / "val") if r["task"] == "zoom"]
    assert records and all(r["raster"].startswith("rasters/") for r in records)
    scene = plan_layout("countryside", 2560, 2560, seed=PLAN.seed + 1_000_000 + PLAN.val_scenes)
    for record in records:
        messages = record["messages"]
        assert messages[0]["content"] == ZOOM_SYSTEM and messages[1]["content"].endswith(ZOOM_REQUEST_SUFFIX)
        question = messages[1]["content"].removeprefix("<image>").removesuffix(ZOOM_REQUEST_SUFFIX).removesuffix(ZOOM_ANSWER_INSTRUCTION)
        label = question.removeprefix("What colour is the ").removesuffix("?")
        target = next(o for o in scene.objects if o.label == label)
        assert messages[-1]["content"] == target.colour_name
        request = TaskRequest(task="ask", raster=str(out / "val" / record["raster"]), question=question,
                              options=TaskOptions(max_pixels=DEMO_MAX_PIXELS, zoom="on"))
        with TaskRun(request, "test") as run:
            overview = run.views[0]
            call = parse_tool_call(messages[2]["content"], (overview.out_width, overview.out_height))
            assert messages[2]["content"] == zoom_tool_call(call.box)
            crop = zoom_view(overview, call.box, run.window, run.work_scale, MIN_PIXELS, DEMO_MAX_PIXELS, 1)
            pixels = run.source.read_view(crop, run.stretch).image
            assert np.array_equal(pixels, np.asarray(Image.open(out / "val" / record["images"][1])))
            assert shapely.box(crop.col_off, crop.row_off, crop.col_off + crop.width, crop.row_off + crop.height).contains(
                shapely.Polygon(target.box()))
            assert np.array_equal(run.source.read_view(overview, run.stretch).image, np.asarray(Image.open(out / "val" / record["images"][0])))


def test_eval_run_scores_the_chain_on_the_kept_mosaics(demo_data, tmp_path):
    """A scripted model that asks for the recorded window and answers the recorded colour scores
    1 through the real chain; one that answers without zooming, a wrong colour, scores 0."""
    out, _ = demo_data
    records = {r["messages"][1]["content"].removeprefix("<image>"): r for r in _records(out / "val") if r["task"] == "zoom"}

    def right(conversation):
        first = next(m.text for m in conversation if m.role == "user")
        if first not in records:
            return "There are none."
        turn = sum(m.role == "user" for m in conversation)
        return records[first]["messages"][2]["content"] if turn == 1 else records[first]["messages"][-1]["content"]

    split = open_split(out / "val")
    assert Counter(s.task for s in split.samples)["zoom"] == len(records)
    demo = ModelDefaults({"max_pixels": DEMO_MAX_PIXELS, "tile_size": TILE, "tile_overlap": 64})
    report = evaluate_model(ScriptedEngine(right, defaults=demo), split, tmp_path / "right")
    assert report["tasks"]["zoom"]["accuracy"] == 1.0
    assert report["tasks"]["zoom"]["outcomes"] == {"answered after zooming": len(records)}
    wrong = evaluate_model(ScriptedEngine(["purple"], defaults=demo), split, tmp_path / "wrong")
    assert wrong["tasks"]["zoom"]["accuracy"] == 0.0
    assert wrong["tasks"]["zoom"]["outcomes"] == {"answered without zooming": len(records)}


def test_the_same_plan_gives_the_same_data_in_any_number_of_processes(demo_data, tmp_path):
    out, manifest = demo_data
    small = DemoDataPlan(**{**PLAN.__dict__, "scenes": 3, "zoom_scenes": 1, "val_scenes": 0, "val_zoom_scenes": 0})
    one = build_demo_data(tmp_path / "one", small)
    two = build_demo_data(tmp_path / "two", small, workers=2)
    assert one == two
    assert (tmp_path / "one/train/conversations.jsonl").read_text() == (tmp_path / "two/train/conversations.jsonl").read_text()
    for image in sorted((tmp_path / "one/train/images").iterdir()):
        assert image.read_bytes() == (tmp_path / "two/train/images" / image.name).read_bytes()
    first = (out / "train/conversations.jsonl").read_text().splitlines()[0]
    assert first == (tmp_path / "one/train/conversations.jsonl").read_text().splitlines()[0]  # scene 0 does not depend on the plan's size


def test_a_view_zoom_enlarges_the_objects_of_detection_tiles(tmp_path):
    """view_zoom 2: tiles of half the window enlarged to the tile, so the same world's objects
    span twice the pixels a side (each class's boxes in the truth, as the answers give them)."""

    def sides(zoom: float, sparse: int) -> dict[str, float]:
        plan = DemoDataPlan(**{**PLAN.__dict__, "scenes": 12, "tiles_per_scene": 6, "zoom_scenes": 0, "val_scenes": 0, "val_zoom_scenes": 0, "change_scenes": 0,
                               "val_change_scenes": 0, "whole_views": False, "view_zoom": zoom, "max_objects": sparse})
        out = tmp_path / f"zoom{zoom:g}-{sparse}"
        build_demo_data(out, plan)
        found: dict[str, list[float]] = {}
        for path in sorted((out / "train" / "labelTxt").glob("*.txt")):
            truth = read_image_files([path], truth=True, scored=False, source="t").boxes
            for label, points, cut in zip(truth.label, truth.points, truth.difficult):
                if not cut:  # whole objects only: a cut one is as small as the tile's edge makes it
                    found.setdefault(label, []).append(shapely.Polygon(points).minimum_rotated_rectangle.length / 4)
        with Image.open(next((out / "train" / "images").glob("*.png"))) as image:
            assert image.size == (TILE, TILE)
        return {label: float(np.median(v)) for label, v in found.items() if len(v) >= 3}

    for sparse in (0, 2):  # dense tiles read from the scene, and sparse ones drawn with a few objects
        native, zoomed = sides(1.0, sparse), sides(2.0, sparse)
        ratios = {label: zoomed[label] / native[label] for label in native.keys() & zoomed.keys()}
        assert ratios and all(1.5 < r < 2.5 for r in ratios.values()), (sparse, ratios)
