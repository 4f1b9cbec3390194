"""Training settings: a YAML file (training/configs/lora.yaml, full.yaml, grpo.yaml) plus
overrides, read into a frozen dataclass (`FitConfig` here, `training.grpo_config.GrpoConfig`).

Every key of the YAML file is a field of the dataclass; an unknown key is an error rather than a
silently ignored typo. `--set key=value` overrides any field from the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from backend.errors import UserError
from backend.resolution import FACTOR, MAX_PIXELS, MIN_PIXELS

METHODS = ("lora", "qlora", "full")
SHIPPED_CONFIGS = Path(__file__).parent / "configs"
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class FitConfig:
    method: str = "lora"  # lora | qlora (4-bit base, CUDA) | full
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_merger: bool = False  # also adapt the vision-language merger
    lora_vision: bool = False  # also adapt the vision tower
    freeze_vision: bool = False  # full fine-tuning: keep the vision tower (not the merger) fixed
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    max_steps: int = 0  # optimizer steps; 0: run `epochs` epochs
    epochs: float = 1.0
    batch_size: int = 1  # per process
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    rescale: float = 0.3  # probability of randomly rescaling a detection sample
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    save_every: int = 100  # steps between checkpoints
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between validations; 0: at the end only
    val_samples: int = 64  # validation conversations scored for loss
    val_ap_samples: int = 32  # validation detection tiles generated for AP_nc, and grounding samples for Acc@0.5; 0: neither
    val_max_new_tokens: int = 512
    seed: int = 0
    num_workers: int = 0  # data loading processes
    bf16: bool = True  # bf16 on CUDA; CPU always trains in fp32
    merge: bool = False  # LoRA: also write the adapter merged into a full checkpoint
    log_every: int = 1
    # Weight of training.dense_head's loss (where objects are, per vision token) beside the
    # answers' loss; 0: no head. Training only: the result is a plain Qwen2.5-VL.
    dense_head_weight: float = 0.0
    # Weight of training.position_head's loss (each image token's row and column, read from the
    # language model's state of it) beside the answers' loss; 0: no head. Training only too.
    position_head_weight: float = 0.0


# Fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "epochs", "save_every", "keep_checkpoints", "eval_every", "val_samples", "val_ap_samples",
     "val_max_new_tokens", "num_workers", "merge", "log_every"}
)


def _coerce(name: str, value, kind):
    kind = {"int": int, "float": float, "bool": bool, "str": str}[kind] if isinstance(kind, str) else kind
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if kind is str and isinstance(value, str):
        return value
    raise UserError(f"config key '{name}' must be {kind.__name__}, not {value!r}.", "Fix the value in the YAML file or --set.")


def _check(config: FitConfig) -> FitConfig:
    problems = []
    if config.method not in METHODS:
        problems.append(f"method '{config.method}' is not one of {', '.join(METHODS)}")
    if config.lr_scheduler not in SCHEDULERS:
        problems.append(f"lr_scheduler '{config.lr_scheduler}' is not one of {', '.join(SCHEDULERS)}")
    for name in ("lora_r", "batch_size", "grad_accum", "save_every", "keep_checkpoints", "log_every"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name in ("max_steps", "warmup_steps", "eval_every", "val_samples", "val_ap_samples", "num_workers"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must not be negative")
    if config.max_steps == 0 and config.epochs <= 0:
        problems.append("give max_steps or a positive number of epochs")
    if not 0 <= config.rescale <= 1 or not 0 <= config.lora_dropout < 1:
        problems.append("rescale must be in [0, 1] and lora_dropout in [0, 1)")
    if config.learning_rate <= 0:
        problems.append("learning_rate must be positive")
    if not FACTOR * FACTOR <= config.min_pixels <= config.max_pixels:
        problems.append(f"need {FACTOR * FACTOR} <= min_pixels <= max_pixels")
    if problems:
        raise UserError("invalid fine-tuning config: " + "; ".join(problems) + ".", "Fix the YAML file or the --set values.")
    return config


def config_path(value: str | Path) -> Path:
    """A YAML file, or the name of a shipped one (`lora`, `full`: training/configs/<name>.yaml)."""
    path = Path(value)
    if path.exists():
        return path
    shipped = SHIPPED_CONFIGS / f"{value}.yaml"
    if str(value).isidentifier() and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise UserError(f"config '{value}' is neither a file nor a shipped config ({names}).", "Give a YAML file or one of those names.")


def load_settings(kind: type, check, path: str | Path | None = None, overrides: dict | None = None):
    """A `kind` dataclass from a YAML file or shipped config name (defaults when None) with
    `overrides` applied, then `check`ed (it raises UserError naming every problem)."""
    values: dict = {}
    if path is not None:
        path = config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"config {path} cannot be read ({exc}).", "Pass a YAML file such as training/configs/lora.yaml.") from exc
        if not isinstance(loaded, dict):
            raise UserError(f"config {path} is not a mapping of keys to values.", "See training/configs/lora.yaml.")
        values.update(loaded)
    values.update(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown config key(s): {', '.join(unknown)}.", f"Valid keys: {', '.join(fields)}.")
    return check(kind(**{name: _coerce(name, value, fields[name].type) for name, value in values.items()}))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> FitConfig:
    """The fine-tuning config of a YAML file or shipped config name, with `overrides`."""
    return load_settings(FitConfig, _check, path, overrides)


def parse_overrides(items: list[str] | None) -> dict:
    """`key=value` strings (values in YAML syntax: 8, 1e-4, true, cosine) as a dict."""
    result = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' is not key=value.", "Write e.g. --set lora_r=8.")
        try:
            result[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"--set '{item}' has an unreadable value ({exc}).", None) from exc
    return result
