"""The local engine on a tiny Qwen2.5-VL built and saved by the test, loaded through from_pretrained."""

import json

import numpy as np
import pytest

from backend.engine.local import configure_pixel_limits, load_local_engine
from backend.errors import UserError
from backend.prompts import detection_prompt, single_turn
from backend.resolution import MAX_PIXELS, MIN_PIXELS, visual_tokens


def test_checkpoint_is_a_real_qwen2_5_vl_folder(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert (tiny_checkpoint / "tokenizer.json").is_file()
    assert (tiny_checkpoint / "model.safetensors").is_file()


def test_loaded_classes_and_placement(tiny_engine):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    assert isinstance(tiny_engine.model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(tiny_engine.processor, Qwen2_5_VLProcessor)
    described = tiny_engine.describe()
    assert described["device"] == "cpu" and described["dtype"] == "float32"
    assert described["attention"] == "sdpa"
    assert tiny_engine.processor.tokenizer.padding_side == "left"


def test_tokenizer_splits_digits_like_qwen(tiny_engine):
    tokens = tiny_engine.processor.tokenizer.tokenize("123,45 plane")
    assert tokens[:6] == ["1", "2", "3", ",", "4", "5"]


def test_the_processor_never_resizes_a_view_by_token_count(tiny_engine):
    """Views are read at their final size, whatever pixel budget a request chose (a user's
    --max-pixels above MODEL_IO's 1008^2 included): the processor passes them as they are."""
    ip = tiny_engine.processor.image_processor
    for side in (56, 504, 1120, 2016):
        grid = ip(images=[np.zeros((side, side, 3), np.uint8)], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert grid[1] * grid[2] // 4 == (side // 28) ** 2
    assert (1120 // 28) ** 2 > MAX_PIXELS // (28 * 28) > MIN_PIXELS // (28 * 28) > (56 // 28) ** 2


def test_pixel_limit_check_catches_a_processor_ignoring_them(tiny_engine):
    import copy

    processor = copy.deepcopy(tiny_engine.processor)
    processor.image_processor.__class__ = type(
        "Stubborn", (processor.image_processor.__class__,), {"__setattr__": lambda self, k, v: None}
    )
    processor.image_processor.__dict__["size"] = {"shortest_edge": 56 * 56, "longest_edge": 256 * 28 * 28}
    with pytest.raises(RuntimeError, match="not in effect"):
        configure_pixel_limits(processor, MIN_PIXELS, MAX_PIXELS)


def test_batched_generation_matches_one_at_a_time(tiny_engine):
    rng = np.random.default_rng(0)
    system, user = detection_prompt(["plane", "ship"])
    conversations = [
        single_turn(rng.integers(0, 255, (504, 504, 3), dtype=np.uint8), user, system),
        single_turn(rng.integers(0, 255, (224, 336, 3), dtype=np.uint8), "Describe the image"),
        single_turn(rng.integers(0, 255, (280, 280, 3), dtype=np.uint8), user, system),
    ]
    batched = tiny_engine.generate(conversations, max_new_tokens=12)
    single = [tiny_engine.generate([c], max_new_tokens=12)[0] for c in conversations]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.visual_tokens for g in batched] == [visual_tokens(504, 504), visual_tokens(224, 336), visual_tokens(280, 280)]
    assert all(g.new_tokens <= 12 for g in batched)


def test_not_a_qwen_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="'llama' checkpoint, not Qwen2.5-VL"):
        load_local_engine(str(tmp_path))


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_local_engine(str(tmp_path))


def test_quantisation_needs_cuda(tiny_checkpoint):
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        load_local_engine(str(tiny_checkpoint), quantize="4bit")


def test_hub_id_without_network_says_how_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="hf download"):
        load_local_engine("Qingyun/RSCoVLM-7B-2512")


def test_adapter_folder_is_checked(tiny_checkpoint, tmp_path):
    with pytest.raises(UserError, match="not a LoRA adapter folder"):
        load_local_engine(str(tiny_checkpoint), adapter=str(tmp_path))
