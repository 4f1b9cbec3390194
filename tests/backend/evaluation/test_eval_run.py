"""`eval run` end to end: the tiny Qwen2.5-VL checkpoint over a dataset split cut from a
synthetic scene, through the real pipeline; interrupted, resumed, and scored."""

import json

import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from backend.cli import main as cli_main
from backend.cli.tasks import BUNDLED_MODEL
from backend.errors import Cancelled, UserError
from backend.evaluation.dataset import open_split
from backend.evaluation.run import evaluate_model
from backend.prompts import CAPTION_PROMPT, DETECTION_SYSTEM, classification_prompt, vqa_prompt

TILE = 504
MAX_NEW_TOKENS = 16


class CountingEngine:
    """The tiny engine, one view per batch, counting what it is asked."""

    def __init__(self, engine):
        self.engine, self.batch_size, self.model_id, self.calls = engine, 1, engine.model_id, 0
        self.defaults = engine.defaults

    def generate(self, conversations, max_new_tokens, repetition_penalty=None):
        self.calls += 1
        return self.engine.generate(conversations, max_new_tokens, repetition_penalty)

    def describe(self):
        return self.engine.describe()


@pytest.fixture(scope="module")
def split(scene, tmp_path_factory):
    """Four 504 px PNG tiles of the scene with their DOTA truth (objects cut by a tile edge are
    difficult), and one conversation of every other task."""
    path, plan = scene
    root = tmp_path_factory.mktemp("data") / "val"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    with rasterio.open(path) as source:
        for row in range(2):
            for col in range(2):
                x0, y0, name = col * TILE, row * TILE, f"r{row}c{col}"
                pixels = source.read(window=Window(x0, y0, TILE, TILE)).transpose(1, 2, 0)
                Image.fromarray(pixels).save(root / "images" / f"{name}.png")
                lines = ["imagesource:synthetic", "gsd:0.5"]
                for obj in plan.objects:
                    corners = obj.box() - [x0, y0]
                    if corners.max() < 0 or corners[:, 0].min() > TILE or corners[:, 1].min() > TILE:
                        continue
                    inside = (corners >= 0).all() and (corners <= TILE).all()
                    if not inside and not ((corners.mean(axis=0) > 0).all() and (corners.mean(axis=0) < TILE).all()):
                        continue
                    lines.append(" ".join(f"{v:.1f}" for v in corners.reshape(-1)) + f" {obj.label.replace(' ', '-')} {int(not inside)}")
                (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root.parent / "manifest.json").write_text(json.dumps({"classes": sorted({o.label for o in plan.objects})}))
    size = {"images": ["images/r0c0.png"], "image_size": [TILE, TILE], "resized_size": [TILE, TILE]}
    samples = [
        {"id": "val/r0c0/ground0", "task": "ground", **size, "messages": [
            {"role": "system", "content": DETECTION_SYSTEM["hbox"]},
            {"role": "user", "content": "<image>find the white ship"},
            {"role": "assistant", "content": "100,120,180,150 the white ship"}]},
        {"id": "val/r0c0/classify", "task": "classify", **size, "messages": [
            {"role": "user", "content": "<image>" + classification_prompt(["harbor", "airport", "river"])},
            {"role": "assistant", "content": "river"}]},
        {"id": "val/r0c0/vqa", "task": "vqa", **size, "messages": [
            {"role": "user", "content": "<image>" + vqa_prompt("Is there a road?")},
            {"role": "assistant", "content": "yes"}]},
        {"id": "val/r0c0/caption", "task": "caption", **size, "references": ["a river beside a road", "a road near a river"],
         "messages": [{"role": "user", "content": "<image>" + CAPTION_PROMPT}, {"role": "assistant", "content": "a river beside a road"}]},
        {"id": "val/r0c0/zoom", "task": "zoom", **size, "messages": []},
    ]
    (root / "conversations.jsonl").write_text("\n".join(json.dumps(s) for s in samples) + "\nnot json\n")
    return root


def test_the_split_is_read_as_docs_dataset_says(split):
    data = open_split(split)
    assert sorted(data.images) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert [s.task for s in data.samples] == ["ground", "classify", "ask", "caption"]
    assert data.samples[0].argument == "white ship" and data.samples[1].argument == "harbor,airport,river"
    assert data.skipped["unreadable conversation lines"] == 1 and sum(data.skipped.values()) == 2
    assert data.classes == sorted(data.classes) and "ship" in data.classes


@pytest.mark.slow
def test_interrupted_run_resumes_and_scores_like_a_whole_one(split, tiny_engine, tmp_path):
    data = open_split(split)
    first = CountingEngine(tiny_engine)
    with pytest.raises(Cancelled, match="kept for resuming"):
        evaluate_model(first, data, tmp_path / "report", max_new_tokens=MAX_NEW_TOKENS, should_stop=lambda: first.calls >= 3)
    written = sorted(p.name for p in (tmp_path / "report" / "predictions").rglob("*") if p.is_file())
    assert len(written) == 3 and not any(name.startswith(".") for name in written)

    second = CountingEngine(tiny_engine)
    seen = []
    resumed = evaluate_model(second, data, tmp_path / "report", max_new_tokens=MAX_NEW_TOKENS, progress=lambda d, t: seen.append((d, t)))
    assert second.calls == 8 - 3  # four tiles (one view each) and four samples, three done before
    assert seen[0] == (3, 8) and seen[-1] == (8, 8)

    whole = evaluate_model(CountingEngine(tiny_engine), data, tmp_path / "whole", max_new_tokens=MAX_NEW_TOKENS)
    assert resumed["tasks"] == whole["tasks"]
    tasks = resumed["tasks"]
    assert set(tasks) == {"detection", "grounding", "classification", "vqa", "captioning"}
    detection = tasks["detection"]
    assert detection["summary"]["images"] == 4 and sum(c["truth"] for c in detection["classes"]) > 0
    assert tasks["grounding"]["samples"] == 1 and tasks["captioning"]["samples"] == 1
    assert (tmp_path / "report" / "report.json").is_file() and (tmp_path / "report" / "precision_recall.png").stat().st_size > 0
    for name in ("r0c0", "r0c1", "r1c0", "r1c1"):
        assert (tmp_path / "report" / "predictions" / "detect" / f"{name}.txt").is_file()

    with pytest.raises(UserError, match="another run"):
        evaluate_model(CountingEngine(tiny_engine), data, tmp_path / "report", max_new_tokens=MAX_NEW_TOKENS + 1)


@pytest.mark.slow
def test_eval_run_command_then_eval_detection_gives_the_same_numbers(split, tmp_path, capsys):
    """With the bundled checkpoint, which writes boxes (the tiny random one writes none, and two
    empty reports agree trivially)."""
    out = tmp_path / "report"
    code = cli_main(["eval", "run", "--model", str(BUNDLED_MODEL), "--data", str(split), "--out", str(out),
                     "--max-new-tokens", "448", "--batch-size", "8", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0 and "AP_nc" in printed.out and "Acc@0.5" not in printed.err
    assert "georeferenc" not in printed.err  # the expected pixel-coordinates warning stays quiet
    report = json.loads((out / "report.json").read_text())
    code = cli_main(["eval", "detection", "--pred", str(out / "predictions" / "detect"), "--gt", str(split), "--json",
                     "--classes", ",".join(open_split(split).classes)])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and again["summary"] == report["tasks"]["detection"]["summary"]
    assert again["classes"] == report["tasks"]["detection"]["classes"]  # per class: truth, predictions, AP, F1
    assert sum(c["predictions"] for c in again["classes"]) > 0 and again["summary"]["mF1"] is not None
