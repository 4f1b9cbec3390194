"""Reinforcement fine-tuning on TRL's GRPOTrainer: two steps on a tiny checkpoint that an SFT
adapter taught to answer briefly (so its answers differ in reward and there is something to
learn from), cancelled with a checkpoint and resumed, the adapter loaded back by `rscovlm
detect`; and bad input refused before --out is touched."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from backend.cli import main as cli_main
from backend.errors import Cancelled, UserError
from training.config import load_config
from training.fit import FitSettings, fit
from training.grpo import GrpoSettings, grpo
from training.grpo_config import load_grpo_config
from training.run_folder import read_log

GRPO = {"max_steps": 2, "prompts_per_step": 2, "num_generations": 4, "learning_rate": 1e-3, "save_every": 1}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, tiny_checkpoint):
    """A classification set, and an SFT adapter of a dozen steps on it: the tiny model then
    sometimes stops after a short answer, so a group's answers differ in their rewards."""
    from tests.training.conftest import _image, write_records

    folder = tmp_path_factory.mktemp("scenes")
    records = [{"id": f"k{i}", "task": "classify", "images": [_image(folder / "images" / f"{i}.png", 224, 224, i)], "messages": [
        {"role": "user", "content": "<image>Classify the image within one of the given classes:harbor,airport."},
        {"role": "assistant", "content": ("harbor", "airport")[i % 2]}]} for i in range(4)]  # fmt: skip
    data = str(write_records(folder / "scenes.jsonl", records))
    fit(FitSettings(str(tiny_checkpoint), data + "*4", str(folder / "sft"),
                    load_config(None, {"max_steps": 12, "learning_rate": 2e-2, "batch_size": 4, "rescale": 0.0})))
    return data + "*4", folder / "sft" / "adapter"


def test_two_steps_cancelled_resumed_and_the_adapter_detects(scenes, tiny_checkpoint, scene, tmp_path):
    data, sft = scenes
    out = tmp_path / "rl"
    settings = GrpoSettings(str(tiny_checkpoint), data, str(out), load_grpo_config("grpo", GRPO), adapter=str(sft))
    seen = []
    with pytest.raises(Cancelled, match="stopped at step 1 of 2"):
        grpo(settings, progress=seen.append, should_stop=lambda: True)
    assert (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file() and not (out / "adapter").exists()
    assert seen and seen[0].step == 1 and "format" in seen[0].rewards and "classify" in seen[0].rewards
    summary = grpo(settings)  # the same call resumes
    assert summary["steps"] == 2 and summary["prompt_tasks"] == {"classify": 16}
    log = read_log(out)
    assert [e["step"] for e in log] == [1, 2]
    assert any(e["loss"] or e["kl"] for e in log)  # the group's rewards differed: there was a gradient
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(bool(torch.any(v != 0)) for v in lora_b)  # LoRA B starts at zero: it learned
    assert all(".language_model." in k for k in weights)  # the language model's LoRA only
    assert (out / "sft-merged" / "config.json").is_file()  # the SFT adapter merged in: the start and the KL reference
    assert grpo(settings)["steps"] == 2  # complete: running again changes nothing
    path, _ = scene
    code = cli_main(["detect", str(path), "--classes", "plane", "--model", str(out / "sft-merged"), "--adapter", str(out / "adapter"),
                     "--max-new-tokens", "8", "--extent", "500000,4400000,500200,4400200", "--no-progress", "--json"])
    assert code == 0


def test_bad_input_is_refused_before_anything_is_written(scenes, tiny_checkpoint, tmp_path, capsys):
    from tests.training.conftest import _image, write_records

    data, sft = scenes
    out = tmp_path / "never"
    chat = write_records(tmp_path / "chat.jsonl", [{"id": "c", "images": [_image(tmp_path / "images" / "c.png", 224, 224, 0)], "messages": [
        {"role": "user", "content": "<image>Hello"}, {"role": "assistant", "content": "Hi."}]}])  # fmt: skip
    with pytest.raises(UserError, match="holds no sample of a rewarded task .1 chat: no reward"):
        grpo(GrpoSettings(str(tiny_checkpoint), str(chat), str(out)))
    with pytest.raises(UserError, match="unknown config key.*colour"):
        load_grpo_config("grpo", {"colour": "red"})
    with pytest.raises(UserError, match="num_generations must be at least 2"):
        load_grpo_config("grpo", {"num_generations": 1})
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="4-bit quantisation needs a CUDA GPU"):
            grpo(GrpoSettings(str(tiny_checkpoint), data, str(out), load_grpo_config("grpo", {"quantize": "4bit"})))
    other = tmp_path / "other-adapter"
    shutil.copytree(sft, other)
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "r": config["r"] * 2}))  # weights of another shape
    with pytest.raises(UserError, match="does not fit --model"):
        grpo(GrpoSettings(str(tiny_checkpoint), data, str(out), load_grpo_config("grpo", GRPO), adapter=str(other)))
    assert not out.exists() and not list(tmp_path.glob(".rscovlm-sft-merge-*"))
    assert cli_main(["train", "grpo", "--model", str(tiny_checkpoint), "--data", str(chat), "--out", str(out)]) == 2
    assert "rewarded task" in capsys.readouterr().err and not out.exists()
