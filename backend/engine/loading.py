"""Choosing device, dtype, attention and quantisation, and checking a checkpoint before loading.

Every refusal here is a `UserError` naming the problem and the fix, raised before any weights
are read, so a wrong `--model` costs a second, not a minute of loading.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.errors import UserError

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
Quantize = Literal["none", "8bit", "4bit"]
QWEN2_5_VL_TYPE = "qwen2_5_vl"


@dataclass(frozen=True)
class Placement:
    device: str
    dtype_name: str  # "bfloat16", "float16" or "float32"
    attention: str  # "flash_attention_2" or "sdpa"
    quantize: str


def choose_placement(device: DeviceChoice = "auto", quantize: Quantize = "none") -> Placement:
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if cuda else "mps" if mps else "cpu"
    elif device == "cuda" and not cuda:
        raise UserError("--device cuda was asked but PyTorch sees no CUDA GPU.", "Use --device auto or cpu.")
    elif device == "mps" and not mps:
        raise UserError("--device mps was asked but this machine has no Apple GPU.", "Use --device auto or cpu.")
    if quantize != "none":
        if device != "cuda":
            raise UserError(
                f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device}.",
                "Use --quantize none here, or run on a machine with an NVIDIA GPU.",
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(
                f"--quantize {quantize} needs the bitsandbytes package, which is not installed.",
                "Install it into the backend's venv: .venv/bin/pip install bitsandbytes",
            )
    if device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    elif device == "mps":
        dtype = "float16"
    else:
        dtype = "float32"
    flash = device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return Placement(device, dtype, "flash_attention_2" if flash else "sdpa", quantize)


def check_checkpoint(model: str) -> str:
    """Refuse, with a reason, anything that is not a Qwen2.5-VL checkpoint folder or hub id.
    Returns what `from_pretrained` should be given."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--model {model} is a file, not a checkpoint folder.", "Point --model at the folder holding config.json.")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(
                f"--model {model} has no config.json, so it is not a transformers checkpoint.",
                "Point --model at an RSCoVLM / Qwen2.5-VL folder (config.json, *.safetensors, tokenizer files).",
            )
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{config_file} cannot be read as JSON ({exc}).", "Re-download or re-save the checkpoint.") from exc
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != QWEN2_5_VL_TYPE:
            raise UserError(
                f"--model {model} is a '{model_type}' checkpoint, not Qwen2.5-VL ('{QWEN2_5_VL_TYPE}').",
                "RSCoVLM runs on Qwen2.5-VL checkpoints such as Qingyun/RSCoVLM-7B-2512.",
            )
        if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
            raise UserError(f"--model {model} has no tokenizer files.", "Copy the tokenizer files of the checkpoint into the folder.")
        return str(path)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model  # a hub id; from_pretrained resolves it (or says it cannot)
    raise UserError(f"--model {model} does not exist.", "Give a checkpoint folder or a hub id such as Qingyun/RSCoVLM-7B-2512.")


def check_adapter(adapter: str) -> str:
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise UserError(
            f"--adapter {adapter} is not a LoRA adapter folder (no adapter_config.json).",
            "Point --adapter at the 'adapter' folder a fine-tuning run wrote.",
        )
    return str(path)
