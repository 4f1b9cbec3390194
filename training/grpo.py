"""Reinforcement fine-tuning with task-aware rewards (GeoVLM-R1's idea) on TRL's GRPOTrainer:
for each prompt the model answers several times, each answer is scored by training.rewards
against the sample's reference answer, and LoRA on the language model learns from how each
answer compares with the others of its group.

    rscovlm train grpo --model M [--adapter runs/boats/adapter] --data "data/boats,data/general%20" --out runs/boats-rl

The data are the folders `train export` writes (or RSCoVLM/LLaVA JSON): every single-image sample
of a rewarded task (detect, ground, classify, vqa, caption) is a prompt, its answer the
reference. An SFT adapter given with --adapter is merged into the base first, so the KL
reference is the SFT model. The run folder (training.run_folder) holds `checkpoints/` (TRL's,
resumed when the command runs again), `log.jsonl` (mean reward per task, KL, lengths),
`adapter/` (`rscovlm detect --adapter runs/boats-rl/adapter`), `merged/` with merge, and
`metrics.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.atomic import staged_folder, write_text
from backend.engine.loading import check_adapter, check_checkpoint
from backend.errors import Cancelled, UserError
from backend.model_defaults import TASK_DEFAULTS_FILE, trained_pixel_range
from training.data import IMAGE_PLACEHOLDER, Mixture, parse_data_spec
from training.fit import LORA_LANGUAGE, StopOnSignal, merge_adapter
from training.grpo_config import GRPO_RESUMABLE_CHANGES, TRAINED_TASKS, GrpoConfig, load_grpo_config, max_tokens, weight
from training.rewards import Reference, format_reward, gated
from training.run_folder import (
    METRICS_FILE,
    RUN_FILE,
    append_log,
    check_identity,
    check_overwrite,
    clear,
    read_log,
    trim_log,
    write_identity,
)

CHECKPOINTS = "checkpoints"
SFT_MERGED = "sft-merged"  # the base with --adapter merged in: the policy's start and the KL reference


@dataclass(frozen=True)
class GrpoSettings:
    model: str
    data: str
    out: str
    config: GrpoConfig = field(default_factory=GrpoConfig)
    adapter: str | None = None  # an SFT adapter, merged into the base first
    overwrite: bool = False


@dataclass(frozen=True)
class GrpoStatus:
    """What a progress callback is told after every logged step."""

    step: int
    total_steps: int
    reward: float | None
    rewards: dict[str, float]  # mean reward per task (and 'format') of the step's answers
    kl: float | None = None


ProgressCallback = Callable[[GrpoStatus], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class Prompt:
    """A rewarded sample as TRL takes it: the conversation before the answer, its images (at the
    size their coordinates refer to), and what the reward needs."""

    id: str
    task: str
    messages: tuple[dict, ...]
    image_index: int  # the sample's index in the Mixture (images loaded when a batch needs them)
    answer: str
    size: tuple[int, int] | None


def rewarded_prompts(mixture: Mixture) -> tuple[list[Prompt], Counter]:
    """The samples GRPO trains on, and how many others were left out, by reason."""
    prompts, left_out = [], Counter()
    for index, sample in enumerate(mixture.samples):
        turns = [m for m in sample.messages if m["role"] == "assistant"]
        if sample.task not in TRAINED_TASKS:
            left_out[f"{sample.task}: no reward" if sample.task not in ("change", "change_caption") else f"{sample.task}: video input"] += 1
        elif len(turns) != 1 or len(sample.images) != 1 or sample.messages[-1]["role"] != "assistant":
            left_out[f"{sample.task}: not one image and one answer"] += 1
        else:
            size = sample.resized_sizes[0] if sample.resized_sizes and sample.resized_sizes[0] else None
            prompts.append(Prompt(sample.id, sample.task, sample.messages[:-1], index, sample.answer(), size))
    return prompts, left_out


def _sized(prompts: list[Prompt], mixture: Mixture, processor) -> list[Prompt]:
    """A sample without a recorded size has its coordinates in the image as the processor
    resizes it (Qwen2.5-VL's absolute coordinates): that size, from the image file's."""
    from PIL import Image

    from backend.resolution import FACTOR, smart_resize

    size = processor.image_processor.size
    sized = []
    for prompt in prompts:
        if prompt.size is None and prompt.task in ("detect", "ground"):
            with Image.open(mixture.samples[prompt.image_index].images[0]) as image:
                h, w = smart_resize(image.height, image.width, FACTOR, size["shortest_edge"], size["longest_edge"])
            prompt = Prompt(prompt.id, prompt.task, prompt.messages, prompt.image_index, prompt.answer, (w, h))
        sized.append(prompt)
    return sized


def _content(text: str) -> list[dict]:
    """A user text with `<image>` placeholders as TRL's content blocks (every message as blocks:
    Arrow cannot mix string and list contents in one column)."""
    parts = []
    for number, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if number:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def trl_dataset(prompts: list[Prompt], mixture: Mixture):
    """A datasets.Dataset of the prompts; images are read (and resized) as rows are drawn."""
    from datasets import Dataset

    from training.data import Sample

    rows = Dataset.from_dict({
        "prompt_json": [json.dumps(list(p.messages)) for p in prompts],
        "index": [p.image_index for p in prompts],
        "task": [p.task for p in prompts],
        "answer": [p.answer for p in prompts],
        "width": [p.size[0] if p.size else 0 for p in prompts],
        "height": [p.size[1] if p.size else 0 for p in prompts],
    })  # fmt: skip

    def load(batch: dict) -> dict:
        samples: list[Sample] = [mixture.samples[i] for i in batch["index"]]
        batch["prompt"] = [[{"role": m["role"], "content": _content(m["content"])} for m in json.loads(text)] for text in batch["prompt_json"]]
        batch["images"] = [mixture.load_images(sample) for sample in samples]
        return batch

    return rows.with_transform(load)


class TaskReward:
    """One task's gated reward as TRL calls reward functions (None for other tasks' samples),
    or with task None the format reward of every sample. A completion whose tokens hold a vision
    token, or that ran to its task's limit, is out of form."""

    def __init__(self, task: str | None, forbidden_ids: set[int], limits: dict[str, int]):
        self.task, self.forbidden_ids, self.limits = task, forbidden_ids, limits
        self.__name__ = task or "format"  # TRL logs rewards/<name>/mean

    def __call__(self, prompts, completions, completion_ids, task, answer, width, height, **_) -> list[float | None]:
        values = []
        for text, ids, t, a, w, h in zip(completions, completion_ids, task, answer, width, height):
            if self.task is not None and t != self.task:
                values.append(None)
                continue
            content = text[0]["content"] if isinstance(text, list) else str(text)
            broken = bool(self.forbidden_ids.intersection(ids)) or len(ids) >= self.limits.get(t, 1 << 30)
            reference = Reference(t, a, (int(w), int(h)) if w and h else None)
            values.append(format_reward(reference, content, broken) if self.task is None else gated(reference, content, broken))
        return values


def _identity(settings: GrpoSettings) -> dict:
    config = {k: v for k, v in asdict(settings.config).items() if k not in GRPO_RESUMABLE_CHANGES}
    return {"trainer": "grpo", "model": settings.model, "adapter": settings.adapter, "data": settings.data, "config": config}


def latest_checkpoint(out: Path) -> Path | None:
    """TRL's newest checkpoint that was written to the end (its trainer_state.json is last)."""
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in (out / CHECKPOINTS).glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def _merge_sft(model: str, adapter: str, destination: Path) -> None:
    try:
        merge_adapter(model, adapter, destination)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"--adapter {adapter} does not fit --model {model} ({str(exc).splitlines()[0][:200]}).",
                        "Give the adapter a fine-tuning run of this base model wrote.") from None


@contextlib.contextmanager
def _quiet():
    """Deprecation chatter of the libraries, not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*use_cache=True.*")
        yield


class _Reports:
    """A TRL callback: every log line into log.jsonl and the progress callback, and a stop that
    is asked for ends the run after the step in flight, with a checkpoint."""

    def __init__(self, out: Path, total: int, progress: ProgressCallback | None, should_stop: StopCheck | None, tasks: list[str]):
        from transformers import TrainerCallback

        reports = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                reports.logged(state.global_step, logs or {})

            def on_step_end(self, args, state, control, **kwargs):
                if should_stop is not None and should_stop():
                    reports.stopped = True
                    control.should_save = True
                    control.should_training_stop = True

        self.out, self.total, self.progress, self.tasks = out, total, progress, tasks
        self.stopped, self.callback, self.started = False, Callback(), time.monotonic()

    def logged(self, step: int, logs: dict) -> None:
        if "reward" not in logs:
            return
        rewards = {}  # a task without a sample in the step's batch logs nothing, or NaN
        for name in ["format", *self.tasks]:
            value = logs.get(f"rewards/{name}/mean")
            if isinstance(value, (int, float)) and math.isfinite(value):
                rewards[name] = float(value)
        entry = {"step": step, "reward": logs.get("reward"), "rewards": rewards, "kl": logs.get("kl"), "loss": logs.get("loss"),
                 "completion_length": logs.get("completions/mean_length"), "lr": logs.get("learning_rate"),
                 "elapsed_s": round(time.monotonic() - self.started, 3)}
        append_log(self.out, entry)
        if self.progress is not None:
            self.progress(GrpoStatus(step, self.total, logs.get("reward"), rewards, logs.get("kl")))


def _load_model(base: str, config: GrpoConfig, cuda: bool):
    import torch
    from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    from backend.engine.local import configure_pixel_limits

    transformers_logging.disable_progress_bar()
    dtype = torch.bfloat16 if cuda and config.bf16 else torch.float32
    kwargs: dict = {"dtype": dtype}
    if config.quantize == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=["visual", "lm_head"])
    try:
        processor = AutoProcessor.from_pretrained(base, padding_side="left")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load the model '{base}' ({str(exc).splitlines()[0]}).",
                        "Pass a local checkpoint folder (hf download <id> --local-dir <folder>).") from exc
    trained = trained_pixel_range(Path(base) / "preprocessor_config.json") if Path(base).is_dir() else {}
    low = config.min_pixels or trained.get("min_pixels") or processor.image_processor.size.get("shortest_edge")
    high = config.max_pixels or trained.get("max_pixels") or processor.image_processor.size.get("longest_edge")
    configure_pixel_limits(processor, int(low), int(high))
    return model, processor


def grpo(settings: GrpoSettings, progress: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> dict:
    """Train, checkpoint and write the adapter; returns the run's metrics. When `should_stop()`
    turns true a checkpoint is written after the step in flight and `Cancelled` raised: the same
    call later resumes from it."""
    import importlib.util

    import torch

    config = settings.config
    cuda = torch.cuda.is_available()
    # Everything that can be refused is checked before the run folder is touched.
    if config.quantize == "4bit" and not cuda:
        raise UserError("4-bit quantisation needs a CUDA GPU (bitsandbytes), and none is available.", "Set quantize: none, or train on a GPU machine.")
    base = check_checkpoint(settings.model)
    if settings.adapter:
        check_adapter(settings.adapter)
    mixture = Mixture(parse_data_spec(settings.data), "train", config.seed, 0.0)
    prompts, left_out = rewarded_prompts(mixture)
    if not prompts:
        found = ", ".join(f"{n} {why}" for why, n in left_out.items()) or "no samples"
        raise UserError(f"the data spec '{settings.data}' holds no sample of a rewarded task ({found}).",
                        f"GRPO trains on single-image {', '.join(TRAINED_TASKS)} samples: export labelled layers (rscovlm train export).")
    out = Path(settings.out)
    check_overwrite(out, settings.overwrite)
    identity = _identity(settings)
    resume = latest_checkpoint(out) if out.is_dir() and not settings.overwrite else None
    if (out / RUN_FILE).is_file() and not settings.overwrite and (resume is not None or (out / METRICS_FILE).is_file()):
        check_identity(out, identity, ("trainer", "model", "adapter", "data"))
        if (out / METRICS_FILE).is_file() and json.loads((out / METRICS_FILE).read_text()).get("steps", 0) >= config.max_steps:
            return json.loads((out / METRICS_FILE).read_text())  # complete: running the command again changes nothing
    merged_sft = None
    if settings.adapter and not (out / SFT_MERGED / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".rscovlm-sft-merge-", dir=out.parent))
        try:
            _merge_sft(base, settings.adapter, staging / "merged")  # an adapter that does not fit leaves --out untouched
            merged_sft = staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if settings.overwrite and out.exists():
        clear(out)
    out.mkdir(parents=True, exist_ok=True)
    if merged_sft is not None:
        (merged_sft / "merged").rename(out / SFT_MERGED)
        shutil.rmtree(merged_sft, ignore_errors=True)
    if resume is None:
        write_identity(out, identity)
    else:
        trim_log(out, int(resume.name.rsplit("-", 1)[1]))
    start = str(out / SFT_MERGED) if settings.adapter else base

    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(config.seed)
    model, processor = _load_model(start, config, cuda)
    prompts = _sized(prompts, mixture, processor)
    tasks = [t for t in TRAINED_TASKS if any(p.task == t for p in prompts)]
    limits = {t: max_tokens(config, t) for t in tasks}
    vision = {model.config.image_token_id, model.config.video_token_id, model.config.vision_start_token_id, model.config.vision_end_token_id}
    rewards = [TaskReward(None, vision, limits)] + [TaskReward(t, vision, limits) for t in tasks]
    use_vllm = config.generation == "vllm" or (config.generation == "auto" and cuda and importlib.util.find_spec("vllm") is not None)
    if config.generation == "vllm" and not (cuda and importlib.util.find_spec("vllm")):
        raise UserError("generation: vllm needs vLLM installed and a CUDA GPU.", "Set generation: auto (transformers when vLLM cannot run).")
    arguments = GRPOConfig(
        output_dir=str(out / CHECKPOINTS), use_cpu=not cuda, bf16=cuda and config.bf16, report_to=[], activation_checkpointing=False,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations, num_generations=config.num_generations,
        gradient_accumulation_steps=config.grad_accum, max_completion_length=max(limits.values()), max_steps=config.max_steps,
        learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm, temperature=config.temperature, beta=config.beta,
        epsilon=config.epsilon, loss_type=config.loss_type, reward_weights=[weight(config, r.__name__) for r in rewards],
        logging_steps=config.log_every, save_strategy="steps", save_steps=config.save_every, save_total_limit=config.keep_checkpoints,
        seed=config.seed, data_seed=config.seed, remove_unused_columns=False, dataloader_num_workers=0, use_vllm=use_vllm,
        vllm_mode="colocate", disable_tqdm=True,
    )  # fmt: skip
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="^(?:" + LORA_LANGUAGE + ")$", bias="none", task_type="CAUSAL_LM")
    reports = _Reports(out, config.max_steps, progress, should_stop, tasks)
    with _quiet():
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=arguments, train_dataset=trl_dataset(prompts, mixture),
                              processing_class=processor, peft_config=lora, callbacks=[reports.callback])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout; log.jsonl and the progress have them
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    step = trainer.state.global_step
    if reports.stopped and step < config.max_steps:
        raise Cancelled(f"stopped at step {step} of {config.max_steps}; checkpoint saved in {out / CHECKPOINTS}")
    summary = {
        "trainer": "grpo", "base_model": settings.model, "sft_adapter": settings.adapter, "data": settings.data, "steps": step,
        "total_steps": config.max_steps, "prompts": len(prompts), "prompt_tasks": dict(Counter(p.task for p in prompts)),
        "left_out": dict(left_out), "generation": "vllm" if use_vllm else "transformers", "config": asdict(config),
        "final_rewards": next((e["rewards"] for e in reversed(read_log(out)) if e.get("rewards")), {}),
    }  # fmt: skip
    adapter = out / "adapter"
    with staged_folder(adapter) as staging:
        trainer.model.save_pretrained(staging, safe_serialization=True)
        (staging / "rscovlm_training.json").write_text(json.dumps(summary, indent=2) + "\n")
        declared = Path(start) / TASK_DEFAULTS_FILE  # what the policy started from was trained on, it still is
        if declared.is_file():
            shutil.copy2(declared, staging / TASK_DEFAULTS_FILE)
    summary["result"] = str(adapter)
    if config.merge:
        summary["merged"] = str(merge_adapter(start, adapter, out / "merged"))
    write_text(out / METRICS_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base checkpoint folder or hub id")
    parser.add_argument("--adapter", help="an SFT adapter (train fit's adapter/): merged into the base first, the KL reference")
    parser.add_argument("--data", required=True, help='data spec, as train fit: e.g. "data/boats,data/general%%20"')
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log, adapter/")
    parser.add_argument("--config", default="grpo", help="YAML settings, or a shipped config's name (default grpo: training/configs/grpo.yaml)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides the config)")
    parser.add_argument("--merge", action="store_true", help="also write the adapter merged into a full checkpoint (merged/)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. --set beta=0.0 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="start over even if --out holds another run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> GrpoSettings:
    from training.config import parse_overrides

    overrides = parse_overrides(args.set)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.merge:
        overrides["merge"] = True
    return GrpoSettings(args.model, args.data, args.out, load_grpo_config(args.config, overrides), args.adapter, args.overwrite)


def run(args: argparse.Namespace) -> int:
    """The command: a progress bar with the mean reward, Ctrl-C to stop with a checkpoint."""
    from tqdm import tqdm

    settings = settings_from_args(args)
    bar = tqdm(unit="step", desc="grpo", file=sys.stderr, disable=True if args.no_progress else None)

    def show(status: GrpoStatus) -> None:
        bar.total, bar.n = status.total_steps, status.step
        bar.set_postfix({name: f"{value:.3f}" for name, value in status.rewards.items()}, refresh=False)
        bar.refresh()

    try:
        with StopOnSignal() as stop:
            summary = grpo(settings, progress=show, should_stop=stop)
    except Cancelled as exc:
        bar.close()
        print(f"rscovlm: {exc}. Run the same command to resume.", file=sys.stderr)
        return 130
    bar.close()
    rewards = ", ".join(f"{name} {value:.3f}" for name, value in summary.get("final_rewards", {}).items())
    print(f"trained {summary['steps']} GRPO step(s) on {summary['prompts']} prompt(s) (last rewards: {rewards or '-'}); wrote {summary['result']}")
    if summary.get("left_out"):
        print("left out: " + ", ".join(f"{n} {why}" for why, n in summary["left_out"].items()), file=sys.stderr)
    return 0
