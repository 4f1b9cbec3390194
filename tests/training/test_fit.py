"""`training.fit` on the tiny checkpoint (CPU): learning, exact resumption after SIGKILL and
Ctrl-C, two processes under accelerate, the adapter in the backend, merging, bad input."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.errors import Cancelled, UserError
from training.config import load_config
from training.fit import FitSettings, fit, merge_adapter

REPO = Path(__file__).resolve().parents[2]
SMALL = {"lora_r": 4, "learning_rate": 1e-3, "log_every": 1, "val_samples": 4, "val_ap_samples": 2, "val_max_new_tokens": 12,
         "rescale": 0.0}
# Dropout, rescaling (kept to 224-280 px, so steps stay cheap) and gradient accumulation: every
# source of state a resumed run must restore (RNG, sample order, scheduler, optimizer moments).
RESUMABLE = {**SMALL, "max_steps": 5, "save_every": 2, "lora_dropout": 0.2, "rescale": 0.7, "min_pixels": 224 * 224,
             "max_pixels": 280 * 280, "grad_accum": 2, "val_ap_samples": 0, "val_samples": 2}


def settings(checkpoint, data, out, **overrides) -> FitSettings:
    return FitSettings(str(checkpoint), str(data), str(out), load_config(None, {**SMALL, **overrides}))


def cli_args(checkpoint, data, out, values: dict) -> list[str]:
    args = ["--data", str(data), "--model", str(checkpoint), "--out", str(out), "--no-progress"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def weights(folder: Path) -> dict:
    files = list(folder.glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(str(files[0]))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def run_fit(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "training.fit", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def answer_loss(checkpoint: Path, data: Path, indices: list[int]) -> float:
    """Mean loss per answer token of a checkpoint on validation samples, computed here."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from training.data import IGNORE_INDEX, Collator, DatasetSpec, Mixture

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint).eval()
    collator = Collator(AutoProcessor.from_pretrained(checkpoint))
    val = Mixture([DatasetSpec(str(data))], "val")
    total = tokens = 0.0
    with torch.no_grad():
        for i in indices:
            batch = collator([val[i]])
            n = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


@pytest.mark.slow
def test_a_short_fit_lowers_validation_loss(tiny_checkpoint, exported, tmp_path):
    data, manifest = exported
    val_tiles = manifest["counts"]["val"]["tiles"]
    out = tmp_path / "run"
    summary = fit(settings(tiny_checkpoint, data, out, method="full", max_steps=10, batch_size=2, learning_rate=1e-2,
                           val_samples=val_tiles))
    before = answer_loss(tiny_checkpoint, data, list(range(val_tiles)))
    after = answer_loss(out / "model", data, list(range(val_tiles)))
    assert after < before * 0.6, (before, after)
    assert summary["val_loss"] == pytest.approx(after, rel=1e-4)
    assert summary["val_ap_nc"] is not None and 0.0 <= summary["val_ap_nc"] <= 1.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == list(range(1, 11))
    # from scratch / full fine-tuning ends in a checkpoint folder the backend loads with --model
    from backend.engine.local import load_local_engine
    from backend.prompts import detection_prompt, single_turn

    engine = load_local_engine(str(out / "model"))
    system, user = detection_prompt(manifest["classes"])
    image = np.zeros((252, 252, 3), dtype=np.uint8)
    assert engine.generate([single_turn(image, user, system)], max_new_tokens=8)[0].new_tokens > 0


@pytest.fixture(scope="module")
def adapter_run(tiny_checkpoint, exported, tmp_path_factory) -> Path:
    data, _ = exported
    out = tmp_path_factory.mktemp("adapter") / "run"
    fit(settings(tiny_checkpoint, data, out, max_steps=4, learning_rate=2e-2, merge=True))
    return out


def _logits(engine, image: np.ndarray, user: str, system: str) -> torch.Tensor:
    from backend.engine.local import chat_messages
    from backend.prompts import single_turn

    messages, images, _ = chat_messages(single_turn(image, user, system))
    text = engine.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = engine.processor(text=[text], images=images, return_tensors="pt")
    with torch.no_grad():
        return engine.model(**inputs).logits[0, -1]


def test_the_adapter_loads_in_the_backend_and_changes_its_answers(adapter_run, tiny_checkpoint, tiny_engine, exported):
    from peft import PeftModel

    from backend.engine.local import load_local_engine
    from backend.prompts import detection_prompt, single_turn

    _, manifest = exported
    adapter = adapter_run / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    engine = load_local_engine(str(tiny_checkpoint), adapter=str(adapter))
    assert isinstance(engine.model, PeftModel)
    system, user = detection_prompt(manifest["classes"])
    image = np.random.default_rng(0).integers(0, 255, (252, 252, 3), dtype=np.uint8)
    assert engine.generate([single_turn(image, user, system)], max_new_tokens=8)[0].new_tokens > 0
    tuned, base = _logits(engine, image, user, system), _logits(tiny_engine, image, user, system)
    assert not torch.allclose(tuned, base, atol=1e-3)
    merged = load_local_engine(str(adapter_run / "merged"))
    assert torch.allclose(_logits(merged, image, user, system), tuned, atol=1e-4)
    summary = json.loads((adapter_run / "metrics.json").read_text())
    assert summary["merged"] == str(adapter_run / "merged") and summary["steps"] == 4
    # the adapter declares what its dataset taught: its classes are what `detect --adapter` prompts with
    assert engine.defaults.classes == tuple(sorted(manifest["classes"])) and engine.defaults.sources[-1].startswith(str(adapter))


def test_detect_command_takes_the_adapter(adapter_run, tiny_checkpoint, scene, tmp_path):
    from backend.cli import main

    path, _ = scene
    out = tmp_path / "boats.gpkg"
    code = main(["detect", str(path), "--model", str(tiny_checkpoint), "--adapter", str(adapter_run / "adapter"),
                 "--classes", "plane,ship", "--max-new-tokens", "8", "--extent", "500000,4400000,500128,4400128",
                 "--no-progress", "-o", str(out)])
    assert code == 0 and out.is_file()


def test_merging_an_adapter_by_itself(adapter_run, tiny_checkpoint, tmp_path):
    path = merge_adapter(str(tiny_checkpoint), adapter_run / "adapter", tmp_path / "merged")
    assert_same_weights(path, adapter_run / "merged")


@pytest.fixture(scope="module")
def uninterrupted(tiny_checkpoint, exported, tmp_path_factory) -> tuple[Path, dict]:
    data, _ = exported
    out = tmp_path_factory.mktemp("reference") / "whole"
    return out, fit(settings(tiny_checkpoint, data, out, **RESUMABLE))


def test_cancel_writes_a_checkpoint_and_the_rerun_matches_an_uninterrupted_one(tiny_checkpoint, exported, uninterrupted, tmp_path):
    data, _ = exported
    whole, reference = uninterrupted
    polls = []
    with pytest.raises(Cancelled, match="stopped at step 3 of 5"):
        fit(settings(tiny_checkpoint, data, tmp_path / "parts", **RESUMABLE), should_stop=lambda: polls.append(1) or len(polls) >= 3)
    assert sorted(p.name for p in (tmp_path / "parts" / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    resumed = fit(settings(tiny_checkpoint, data, tmp_path / "parts", **RESUMABLE))
    assert_same_weights(whole / "adapter", tmp_path / "parts" / "adapter")
    assert resumed["val_loss"] == reference["val_loss"]
    losses = [[json.loads(line).get("loss") for line in (run / "log.jsonl").read_text().splitlines()] for run in (whole, tmp_path / "parts")]
    assert losses[0] == losses[1]
    # the command again on a finished run changes nothing
    assert fit(settings(tiny_checkpoint, data, tmp_path / "parts", **RESUMABLE)) == resumed


def test_a_checkpoint_scored_mid_run_is_the_model_fit_writes_at_that_step(tiny_checkpoint, exported, tmp_path):
    """benchmarks/bench_localisation_curve scores the model of a checkpoint mid-schedule: it must be
    the model fit itself would write there, training-only head left out."""
    from training.checkpoints import full_model_at

    data, _ = exported
    out = tmp_path / "run"
    fit(settings(tiny_checkpoint, data, out, method="full", max_steps=3, save_every=3, position_head_weight=1.0, val_ap_samples=0))
    model = full_model_at(tiny_checkpoint, out / "checkpoints" / "step-0000003", tmp_path / "snapshot")
    assert_same_weights(out / "model", model)
    assert not any(key.startswith("position_head") for key in weights(model))
    assert not weights(model)["lm_head.weight"].equal(weights(tiny_checkpoint)["lm_head.weight"])  # trained, not the base


@pytest.mark.slow
def test_killed_and_interrupted_runs_resume_to_the_same_weights(tiny_checkpoint, exported, uninterrupted, tmp_path):
    data, _ = exported
    whole, _ = uninterrupted
    args = cli_args(tiny_checkpoint, data, tmp_path / "killed", RESUMABLE)
    process = run_fit(args)
    wait_for(tmp_path / "killed" / "checkpoints" / "step-0000002", process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "adapter").exists()
    # resumed, then Ctrl-C once it has trained a step: that step's checkpoint is written, exit 130
    process = run_fit(args)
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.monotonic() + 300
    while not any(json.loads(line).get("step") == 3 for line in log.read_text().splitlines()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Run the same command to resume" in err and "Traceback" not in err
    assert not (tmp_path / "killed" / "adapter").exists()
    process = run_fit(args)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert_same_weights(whole / "adapter", tmp_path / "killed" / "adapter")


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tiny_checkpoint, exported, tmp_path):
    data, _ = exported
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "training/configs/accelerate/multi_cpu.yaml",
               "--num_processes", "2", "-m", "training.fit", *cli_args(tiny_checkpoint, data, out, {**SMALL, "max_steps": 3, "save_every": 2})]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert (out / "checkpoints" / "step-0000002" / "random_states_1.pkl").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_out_of_disk_leaves_no_partial_checkpoint(tiny_checkpoint, exported, tmp_path):
    data, _ = exported
    out = tmp_path / "full"
    limit = 256 * 1024  # the tiny model's weights are about 1 MB: the first checkpoint cannot fit

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = run_fit(cli_args(tiny_checkpoint, data, out, {**SMALL, "method": "full", "max_steps": 3, "save_every": 2}),
                      preexec_fn=small_disk)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert "out of disk space while writing checkpoint step 2" in err and "Traceback" not in err
    assert list((out / "checkpoints").iterdir()) == []


def test_bad_input(tiny_checkpoint, exported, tmp_path):
    data, _ = exported
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        fit(settings(tiny_checkpoint, data, tmp_path / "q", method="qlora", max_steps=1))
    with pytest.raises(UserError, match="missing dataset"):
        fit(settings(tiny_checkpoint, f"{data}*2,{tmp_path}/absent", tmp_path / "m", max_steps=1))
    with pytest.raises(UserError, match="not Qwen2.5-VL|no config.json"):
        fit(settings(tmp_path, data, tmp_path / "w", max_steps=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before any run folder was made
    fit(settings(tiny_checkpoint, data, tmp_path / "r", max_steps=1, val_samples=1, val_ap_samples=0))
    with pytest.raises(UserError, match="other settings .*lora_r"):
        fit(settings(tiny_checkpoint, data, tmp_path / "r", max_steps=2, lora_r=8))
    # --overwrite replaces a run folder only: a mistyped --out (here the dataset) keeps its files
    before = sorted(p.name for p in Path(data).rglob("*"))
    with pytest.raises(UserError, match="holds no earlier training run"):
        fit(replace(settings(tiny_checkpoint, data, data, max_steps=1), overwrite=True))
    assert sorted(p.name for p in Path(data).rglob("*")) == before
    with pytest.raises(UserError, match="unknown config key"):
        load_config(None, {"lora_rank": 8})
    with pytest.raises(UserError, match="learning_rate. must be float"):
        load_config(None, {"learning_rate": "fast"})


def test_shipped_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    for name in ("lora", "full"):
        config = load_config(REPO / "training" / "configs" / f"{name}.yaml")
        assert config.method == name
    for path in sorted((REPO / "training" / "configs" / "accelerate").glob("*.yaml")):
        config = load_config_from_file(str(path))
        deepspeed = (config.deepspeed_config or {}).get("deepspeed_config_file")
        if deepspeed:
            zero = json.loads((REPO / deepspeed).read_text())["zero_optimization"]["stage"]
            assert f"zero{zero}" in path.name
