"""Checkpoints that resume exactly, written so that none is ever half there.

A checkpoint is accelerate's saved state (trainable weights, optimizer, scheduler, every
process's RNG states) plus `trainer_state.json` (step, epoch and position in the epoch's sample
order). It is written into a hidden staging folder and renamed to `step-NNNNNNN` only once all
processes have finished writing, so a run killed mid-write leaves the previous checkpoint as the
latest complete one. Only trainable weights are stored (the LoRA adapter, or the whole model in
full fine-tuning): a frozen 7B base is read again from its checkpoint, not copied every N steps.
Under DeepSpeed and FSDP accelerate writes its own sharded model and optimizer files instead.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

from backend.errors import UserError

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_WORDS = ("no space left", "file too large", "disk quota", "out of disk")


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def complete_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    folder = Path(out) / CHECKPOINTS
    found = []
    for path in folder.glob(f"{PREFIX}*") if folder.is_dir() else []:
        suffix = path.name[len(PREFIX):]
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def remove_unfinished(out: Path) -> None:
    """Staging folders left by a run killed while writing a checkpoint."""
    folder = Path(out) / CHECKPOINTS
    for path in folder.glob(f".{PREFIX}*") if folder.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return True
    # safetensors and torch.save wrap the OS error in their own exception types; its text stays
    text = str(exc).lower()
    return any(word in text for word in _DISK_WORDS)


def register_trainable_only(accelerator) -> None:
    """Save and load only parameters that train (accelerate's hooks), outside DeepSpeed/FSDP."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return

    def save(models, weights, output_dir):
        from safetensors.torch import save_file

        for index, model in enumerate(models):
            unwrapped = accelerator.unwrap_model(model)
            state = {n: p.detach().contiguous().cpu() for n, p in unwrapped.named_parameters() if p.requires_grad}
            if accelerator.is_main_process:
                save_file(state, str(Path(output_dir) / _trainable_file(index)))
        weights.clear()

    def load(models, input_dir):
        from safetensors.torch import load_file

        for index, model in enumerate(models):
            unwrapped = accelerator.unwrap_model(model)
            state = load_file(str(Path(input_dir) / _trainable_file(index)))
            trainable = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
            if set(state) != trainable:
                raise UserError(
                    f"checkpoint {input_dir} holds other trainable weights than this run's model.",
                    "Resume with the same --model, method and LoRA settings, or start over with --overwrite.",
                )
            unwrapped.load_state_dict(state, strict=False)
        models.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _trainable_file(index: int) -> str:
    return TRAINABLE_FILE if index == 0 else TRAINABLE_FILE.replace(".", f"_{index}.")


def save_checkpoint(accelerator, out: Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Write checkpoint `step` atomically on every process; keep the newest `keep`."""
    import torch

    folder = Path(out) / CHECKPOINTS
    target = folder / checkpoint_name(step)
    staging = folder / f".{checkpoint_name(step)}.partial"
    failure: BaseException | None = None
    try:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - every process must reach the vote below
        failure = exc
    ok = torch.tensor([0.0 if failure else 1.0], device=accelerator.device)
    ok = accelerator.reduce(ok, reduction="sum") if accelerator.num_processes > 1 else ok
    if int(ok.item()) != accelerator.num_processes:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        latest = complete_checkpoints(out)
        previous = f"the last complete checkpoint is step {latest[-1][0]}" if latest else "no checkpoint was kept"
        if failure is not None and is_disk_full(failure):
            raise UserError(
                f"out of disk space while writing checkpoint step {step} in {folder} ({_first_line(failure)}); "
                f"nothing partial was left and {previous}.",
                "Free disk space or give another --out, then run the same command to resume.",
            ) from failure
        if failure is not None:
            raise failure
        raise UserError(f"another process failed to write checkpoint step {step}; {previous}.", "See that process's error.")
    if accelerator.is_main_process:
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        for _, old in complete_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def without_training_heads(state: dict) -> dict:
    """The weights a saved model keeps: the training-only heads (training.dense_head,
    training.position_head) left out, so the result is a plain Qwen2.5-VL."""
    from training.dense_head import ATTRIBUTE as DENSE_HEAD
    from training.position_head import ATTRIBUTE as POSITION_HEAD

    heads = (DENSE_HEAD + ".", POSITION_HEAD + ".")
    return {name: value for name, value in state.items() if not name.startswith(heads)}


def full_model_at(base: str | Path, checkpoint: Path, target: Path) -> Path:
    """The model of a full fine-tuning checkpoint as a checkpoint folder the backend loads (the
    base's config and processor, the checkpoint's weights): a run scored mid-schedule."""
    from safetensors.torch import load_file
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from backend.atomic import staged_folder

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(base))
    missing, unexpected = model.load_state_dict(without_training_heads(load_file(str(Path(checkpoint) / TRAINABLE_FILE))), strict=False)
    tied = {"lm_head.weight"} if model.config.get_text_config().tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise UserError(f"checkpoint {checkpoint} does not hold the whole of {base} (missing {missing[:3]}, unexpected {unexpected[:3]}).",
                        "Give a checkpoint of a full fine-tuning run of this base model; a LoRA run's is its adapter.")
    with staged_folder(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        AutoProcessor.from_pretrained(str(base)).save_pretrained(staging)
    return Path(target)


def load_checkpoint(accelerator, path: Path) -> dict:
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
