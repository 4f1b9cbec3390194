"""training.position_head on the tiny checkpoint: its targets are the grid positions Qwen2.5-VL's
own rotary index gives the image tokens, a fit with it puts the column into the image tokens'
states (which a fit without it does not), and the saved checkpoint is a plain Qwen2.5-VL."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import load_config
from training.fit import FitSettings, fit
from training.position_head import ATTRIBUTE, column_r2, grid_targets


def _inputs(processor, sizes):
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)) for i, (w, h) in enumerate(sizes)]
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "find the plane."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=images, return_tensors="pt")


def test_targets_are_the_rows_and_columns_the_model_gives_its_image_tokens(tiny_checkpoint, processor):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    inputs = _inputs(processor, [(224, 224), (336, 224)])  # an 8 x 8 and an 8 x 12 token grid
    keys = ("input_ids", "image_grid_thw", "attention_mask", "mm_token_type_ids")
    positions, _ = model.model.get_rope_index(**{k: inputs[k] for k in keys if k in inputs})
    image = inputs["input_ids"][0] == model.config.image_token_id
    _, rows, cols = positions[:, 0, image]
    targets = grid_targets(inputs["image_grid_thw"])
    assert targets.shape == (64 + 96, 2)
    for start, end in ((0, 64), (64, 160)):  # rotary positions count from each image's first token
        assert torch.equal(targets[start:end, 0], (rows[start:end] - rows[start]).float())
        assert torch.equal(targets[start:end, 1], (cols[start:end] - cols[start]).float())
    assert targets[64 + 12 + 11].tolist() == [1.0, 11.0]


def _column_r2(model_dir, processor) -> float:
    """training.position_head.column_r2 on twelve noise images."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    inputs = []
    for seed in range(12):
        batch = _inputs(processor, [(224, 224)])
        batch["pixel_values"] = batch["pixel_values"] + torch.randn(batch["pixel_values"].shape, generator=torch.Generator().manual_seed(seed))
        inputs.append(batch)
    return column_r2(model, inputs)


@pytest.fixture(scope="module")
def positional_tiny(exported, tmp_path_factory):
    """The tiny size with the demo's rotary design (training.scratch.DEMO): a small base whose
    width section turns by a usable angle from one column to the next. With Qwen's 1e6 base and
    16-dim heads it turns by 1e-4 rad and no head can read a column from it."""
    from training.scratch import SIZES, build_model, build_processor, build_tokenizer

    tokenizer = build_tokenizer(SIZES["tiny"].vocab_size)
    model = build_model(replace(SIZES["tiny"], text_rope_theta=20.0, mrope_section=(2, 3, 3)), tokenizer, seed=0)
    out = tmp_path_factory.mktemp("positional") / "tiny"
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out


@pytest.mark.slow
def test_a_fit_with_the_head_teaches_the_column_and_saves_no_head(positional_tiny, exported, processor, tmp_path):
    from safetensors import safe_open

    data, _ = exported
    tiny_checkpoint = positional_tiny
    common = {"method": "full", "max_steps": 100, "batch_size": 2, "learning_rate": 1e-2, "val_samples": 2, "val_ap_samples": 0,
              "rescale": 0.0, "log_every": 10, "min_pixels": 224 * 224, "max_pixels": 224 * 224}
    runs = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"weight{weight}"
        fit(FitSettings(str(tiny_checkpoint), str(data), str(out), load_config(None, {**common, "position_head_weight": weight})))
        runs[weight] = out / "model"
    untrained, without, with_head = (_column_r2(m, processor) for m in (tiny_checkpoint, runs[0.0], runs[1.0]))
    # measured: 0.33 untrained, 0.32 after the fit without the head, 0.99 with it
    assert untrained < 0.5 and without < 0.5, (untrained, without)
    assert with_head > 0.9, (untrained, without, with_head)
    with safe_open(str(runs[1.0] / "model.safetensors"), "pt") as saved:
        assert not [k for k in saved.keys() if k.startswith(ATTRIBUTE)]
