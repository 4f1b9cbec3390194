"""Settings of reinforcement fine-tuning (`rscovlm train grpo`), as TRL's trainers take theirs:
one frozen dataclass, read from a YAML file (training/configs/grpo.yaml) plus `--set` overrides
by training.config's loader, every key checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.errors import UserError
from backend.resolution import FACTOR
from training.config import load_settings

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
GENERATION_ENGINES = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class GrpoConfig:
    quantize: str = "none"  # none | 4bit (NF4 base under the LoRA, CUDA only)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 1e-5
    max_steps: int = 200  # optimizer steps
    prompts_per_step: int = 4  # per process; each answered num_generations times
    num_generations: int = 4  # answers per prompt compared with each other (the group)
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    beta: float = 0.04  # KL to the starting model (the SFT adapter merged in, when one is given)
    epsilon: float = 0.2  # clipping of the policy ratio
    loss_type: str = "dapo"
    min_pixels: int = 0  # 0: the checkpoint's trained pixel range
    max_pixels: int = 0
    # Answer limits per task, in tokens: a completion that reaches its task's limit is a runaway
    # (format reward 0). Generation runs to the largest limit of the tasks present.
    max_tokens_detect: int = 768
    max_tokens_ground: int = 48
    max_tokens_classify: int = 16
    max_tokens_vqa: int = 16
    max_tokens_caption: int = 96
    # Reward weights (TRL sums the weighted rewards): the format reward and one per task.
    weight_format: float = 0.5
    weight_detect: float = 1.0
    weight_ground: float = 1.0
    weight_classify: float = 1.0
    weight_vqa: float = 1.0
    weight_caption: float = 1.0
    generation: str = "auto"  # auto: vLLM when installed and on CUDA, else transformers
    save_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    bf16: bool = True  # on CUDA; the CPU trains in fp32
    merge: bool = False  # also write the adapter merged into a full checkpoint (merged/)
    log_every: int = 1


# Fields that may change between an interrupted run and its resumption.
GRPO_RESUMABLE_CHANGES = frozenset({"max_steps", "save_every", "keep_checkpoints", "merge", "log_every", "generation"})
TRAINED_TASKS = ("detect", "ground", "classify", "vqa", "caption")  # single-image tasks (TRL 1.16 feeds images, not video)


def max_tokens(config: GrpoConfig, task: str) -> int:
    return getattr(config, f"max_tokens_{task}")


def weight(config: GrpoConfig, name: str) -> float:
    return getattr(config, f"weight_{name}")


def _check(config: GrpoConfig) -> GrpoConfig:
    problems = []
    if config.quantize not in ("none", "4bit"):
        problems.append(f"quantize '{config.quantize}' is not none or 4bit")
    if config.loss_type not in LOSS_TYPES:
        problems.append(f"loss_type '{config.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
    if config.generation not in GENERATION_ENGINES:
        problems.append(f"generation '{config.generation}' is not one of {', '.join(GENERATION_ENGINES)}")
    for name in ("lora_r", "max_steps", "prompts_per_step", "grad_accum", "save_every", "keep_checkpoints", "log_every"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    if config.num_generations < 2:
        problems.append("num_generations must be at least 2 (GRPO compares answers to one prompt)")
    for task in TRAINED_TASKS:
        if max_tokens(config, task) < 1:
            problems.append(f"max_tokens_{task} must be at least 1")
    for name in ("format", *TRAINED_TASKS):
        if weight(config, name) < 0:
            problems.append(f"weight_{name} must not be negative")
    if config.learning_rate <= 0 or config.temperature <= 0 or config.beta < 0 or config.epsilon <= 0:
        problems.append("learning_rate, temperature and epsilon must be positive, beta not negative")
    if not 0 <= config.lora_dropout < 1:
        problems.append("lora_dropout must be in [0, 1)")
    if (config.min_pixels or config.max_pixels) and not FACTOR * FACTOR <= config.min_pixels <= config.max_pixels:
        problems.append(f"need {FACTOR * FACTOR} <= min_pixels <= max_pixels (or both 0: the checkpoint's range)")
    if problems:
        raise UserError("invalid GRPO config: " + "; ".join(problems) + ".", "Fix the YAML file or the --set values.")
    return config


def load_grpo_config(path: str | Path | None = None, overrides: dict | None = None) -> GrpoConfig:
    return load_settings(GrpoConfig, _check, path, overrides)
