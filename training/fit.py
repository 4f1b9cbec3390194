"""Fine-tune RSCoVLM (any Qwen2.5-VL checkpoint) on a data mixture: LoRA, QLoRA or full.

One entry point for every scale, through accelerate:

    python -m training.fit --config training/configs/lora.yaml --data "data/boats*3" --model M --out runs/boats
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml -m training.fit ...

The run folder holds `checkpoints/` (resumable, atomic), `log.jsonl` (loss, learning rate,
validation), then `adapter/` (LoRA: `rscovlm detect --adapter runs/boats/adapter`) or `model/`
(full: `--model runs/boats/model`), `merged/` with `merge: true`, and `metrics.json`. Running
the same command again resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.atomic import staged_folder, write_text
from backend.engine.loading import check_checkpoint, choose_placement
from backend.errors import Cancelled, UserError
from backend.model_defaults import TASK_DEFAULTS_FILE
from training.checkpoints import (
    complete_checkpoints,
    load_checkpoint,
    register_trainable_only,
    remove_unfinished,
    save_checkpoint,
    without_training_heads,
)
from training.config import RESUMABLE_CHANGES, FitConfig, load_config, parse_overrides
from training.data import Collator, DatasetSpec, Mixture, conversations_file, parse_data_spec
from training.dense_head import attach as attach_dense_head
from training.position_head import attach as attach_position_head
from training.run_folder import (
    METRICS_FILE,
    RUN_FILE,
    append_log,
    check_identity,
    check_overwrite,
    clear,
    trim_log,
    write_identity,
)
from training.validation import detection_ap_nc, detection_classes, evenly_spaced, grounding_accuracy, validation_loss

# LoRA targets by module path in transformers' Qwen2.5-VL: the language model's attention and
# MLP projections; optionally the merger and the vision tower (whose MLP names are the same as
# the language model's, hence full paths rather than bare names).
LORA_LANGUAGE = r"model\.language_model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
LORA_MERGER = r"model\.visual\.merger\.mlp\.\d+"
LORA_VISION = r"model\.visual\.blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:gate|up|down)_proj)"


@dataclass(frozen=True)
class FitSettings:
    model: str  # checkpoint folder or hub id
    data: str  # data spec, e.g. "data/boats*3,data/general%20"
    out: str  # run folder
    config: FitConfig = field(default_factory=FitConfig)
    val_data: str | None = None  # default: the val split of the same datasets
    overwrite: bool = False  # start over even if the run folder holds checkpoints


@dataclass(frozen=True)
class FitStatus:
    """What a progress callback is told after every optimizer step and validation."""

    step: int
    total_steps: int
    epoch: int
    loss: float | None
    learning_rate: float
    val_loss: float | None = None
    val_ap_nc: float | None = None


ProgressCallback = Callable[[FitStatus], None]
StopCheck = Callable[[], bool]


@contextlib.contextmanager
def _quiet_peft():
    """peft asks transformers a deprecated question on every wrap; the warning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_target(config: FitConfig) -> str:
    parts = [LORA_LANGUAGE] + ([LORA_MERGER] if config.lora_merger else []) + ([LORA_VISION] if config.lora_vision else [])
    return "^(?:" + "|".join(parts) + ")$"


def _identity(settings: FitSettings, world_size: int) -> dict:
    config = {k: v for k, v in asdict(settings.config).items() if k not in RESUMABLE_CHANGES}
    return {"model": settings.model, "data": settings.data, "val_data": settings.val_data, "world_size": world_size, "config": config}


def _prepare_run_folder(settings: FitSettings, accelerator) -> tuple[Path, Path | None]:
    """The run folder, and the checkpoint to resume from (None: a fresh start). A folder holding
    another run's checkpoints or result is refused rather than mixed with this one."""
    out = Path(settings.out)
    identity = _identity(settings, accelerator.num_processes)
    check_overwrite(out, settings.overwrite)
    if accelerator.is_main_process:
        if settings.overwrite and out.exists():
            clear(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_unfinished(out)
    accelerator.wait_for_everyone()
    checkpoints = complete_checkpoints(out)
    if (out / RUN_FILE).is_file() and (checkpoints or (out / METRICS_FILE).is_file()):
        check_identity(out, identity, ("model", "data", "val_data", "world_size"))
    elif accelerator.is_main_process:
        write_identity(out, identity)
    accelerator.wait_for_everyone()
    return out, (checkpoints[-1][1] if checkpoints else None)


def load_model(settings: FitSettings, accelerator):
    """The model to train (LoRA-wrapped or whole), its processor and the engine placement."""
    import torch
    from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    from backend.engine.local import configure_pixel_limits

    config = settings.config
    transformers_logging.disable_progress_bar()
    source = check_checkpoint(settings.model)
    device = "cuda" if accelerator.device.type == "cuda" else "cpu"
    placement = choose_placement(device, "4bit" if config.method == "qlora" else "none")
    kwargs: dict = {"attn_implementation": placement.attention}
    if config.method == "full" or device == "cpu":
        kwargs["dtype"] = torch.float32  # full: fp32 master weights (bf16 autocast on CUDA); CPU: fp32
    else:
        kwargs["dtype"] = getattr(torch, placement.dtype_name)
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
            llm_int8_skip_modules=["visual", "lm_head"],
        )
        kwargs["device_map"] = {"": accelerator.local_process_index}
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load the model '{settings.model}' ({str(exc).splitlines()[0]}).",
                        "Pass a local checkpoint folder (hf download <id> --local-dir <folder>).") from exc
    configure_pixel_limits(processor, config.min_pixels, config.max_pixels)
    processor.tokenizer.padding_side = "left"  # generation (validation); the training collator pads right itself
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "full":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = not (config.freeze_vision and name.startswith("model.visual.") and ".merger." not in name)
        return model, processor, placement
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=lora_target(config), bias="none")
    with _quiet_peft():
        model = get_peft_model(model, lora)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("no LoRA target matched a layer of this model.", "Check that --model is a Qwen2.5-VL checkpoint.")
    return model, processor, placement


class EpochOrder:
    """Sample order of an epoch for one process: a seeded permutation, padded so every process
    gets as many samples, dealt round-robin, from a position onwards (where a resumed run
    starts). It depends on (seed, epoch) only."""

    def __init__(self, length: int, seed: int, rank: int, world: int):
        self.length, self.seed, self.rank, self.world = length, seed, rank, world
        self.epoch, self.start = 0, 0

    def per_process(self) -> int:
        return math.ceil(self.length / self.world)

    def __iter__(self):
        import numpy as np

        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        padded = np.resize(order, self.per_process() * self.world)
        yield from padded[self.rank :: self.world][self.start :].tolist()

    def __len__(self) -> int:
        return self.per_process() - self.start


def _loader(dataset, order, batch_size: int, collator, num_workers: int, seed: int):
    import torch

    # A generator of its own: creating a loader must not draw from the global RNG, or a resumed
    # run (which creates one mid-epoch) would drift from an uninterrupted one.
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=order, collate_fn=collator, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
    )


def merge_adapter(model: str, adapter: str | Path, out: str | Path) -> Path:
    """A full checkpoint folder (loadable with --model) of a base with a LoRA adapter merged in.
    The base is loaded unquantised, so a QLoRA adapter merges into full-precision weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    from backend.engine.loading import check_adapter, check_checkpoint

    transformers_logging.disable_progress_bar()
    source = check_checkpoint(model)
    adapter_path = check_adapter(str(adapter))
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype)
    with _quiet_peft():
        merged = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    processor = AutoProcessor.from_pretrained(source)
    with staged_folder(out) as staging:
        merged.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "rscovlm_training.json").write_text(json.dumps({"base": model, "adapter": str(adapter)}, indent=2) + "\n")
    return Path(out)


def trained_classes(train: Mixture) -> list[str]:
    """The detection classes the run's prompts listed: what the result declares it was trained on."""
    classes = set()
    for sample in train.samples:
        if sample.task == "detect":
            classes.update(detection_classes(next(m["content"] for m in sample.messages if m["role"] == "user")))
    return sorted(classes)


def _save_result(settings: FitSettings, accelerator, model, processor, out: Path, summary: dict, classes: list[str]) -> Path:
    """adapter/ (LoRA) or model/ (full), written atomically by the main process, declaring the
    detection classes it was trained on (backend.model_defaults) when its data had detection."""
    state_dict = accelerator.get_state_dict(model)  # gathers shards under ZeRO-3 / FSDP
    state_dict = without_training_heads(state_dict)
    unwrapped = accelerator.unwrap_model(model)
    folder = out / ("model" if settings.config.method == "full" else "adapter")
    if accelerator.is_main_process:
        with staged_folder(folder) as staging:
            unwrapped.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            if settings.config.method == "full":
                processor.save_pretrained(staging)
            (staging / "rscovlm_training.json").write_text(json.dumps(summary, indent=2) + "\n")
            if classes:
                base = Path(settings.model) / TASK_DEFAULTS_FILE  # the base's view sizes stay, its classes are this data's
                declared = json.loads(base.read_text()) if base.is_file() else {}
                (staging / TASK_DEFAULTS_FILE).write_text(json.dumps({**declared, "classes": classes}, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return folder


def _log(out: Path, accelerator, entry: dict) -> None:
    if accelerator.is_main_process:
        append_log(out, entry)


def _total_steps(config: FitConfig, samples: int, world: int) -> int:
    if config.max_steps:
        return config.max_steps
    batches = math.ceil(math.ceil(samples / world) / config.batch_size)
    return max(1, math.ceil(config.epochs * batches / config.grad_accum))


def fit(settings: FitSettings, progress: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> dict:
    """Train, validate, checkpoint and write the result; returns the run's metrics. When
    `should_stop()` turns true (checked after every optimizer step, agreed by all processes), a
    checkpoint is written and `Cancelled` raised: the same call later resumes from it."""
    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    config = settings.config
    cuda = torch.cuda.is_available()
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if cuda and config.bf16 else "no")
    # cpu=True without CUDA: several processes started by torchrun (accelerate launch --multi_gpu)
    # then join over gloo instead of each training alone.
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=mixed, cpu=not cuda)

    # Everything that can be refused is checked before the run folder is touched.
    specs = parse_data_spec(settings.data)
    train = Mixture(specs, "train", config.seed, config.rescale, config.min_pixels, config.max_pixels)
    if len(train) == 0:
        raise UserError(f"the data spec '{settings.data}' holds no training conversation.", "Check the datasets' train splits.")
    val = _validation_mixture(parse_data_spec(settings.val_data) if settings.val_data else specs, config, settings.val_data is not None)
    check_checkpoint(settings.model)
    choose_placement("cuda" if cuda else "cpu", "4bit" if config.method == "qlora" else "none")
    out, resume_from = _prepare_run_folder(settings, accelerator)
    total_steps = _total_steps(config, len(train), accelerator.num_processes)
    if (out / METRICS_FILE).is_file():
        previous = json.loads((out / METRICS_FILE).read_text())
        if previous.get("steps", 0) >= total_steps:
            return previous  # this run is complete; running the command again changes nothing

    set_seed(config.seed)
    model, processor, placement = load_model(settings, accelerator)
    dense_head = attach_dense_head(model) if config.dense_head_weight > 0 else None
    position_head = attach_position_head(model) if config.position_head_weight > 0 else None
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None:  # no dataloader goes through prepare(), so DeepSpeed's batch sizes are given here
        deepspeed.deepspeed_config.update({
            "train_micro_batch_size_per_gpu": config.batch_size,
            "train_batch_size": config.batch_size * config.grad_accum * accelerator.num_processes,
            "gradient_clipping": config.max_grad_norm,
        })
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step it once per process per optimizer step.
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)
    accelerator.register_for_checkpointing(scheduler)
    register_trainable_only(accelerator)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_val_loss": None}
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        if accelerator.is_main_process:
            trim_log(out, state["step"])
    collator = Collator(processor, padding_side="right")
    train_collator = Collator(processor, padding_side="right", dense_targets=dense_head is not None)
    order = EpochOrder(len(train), config.seed, accelerator.process_index, accelerator.num_processes)
    sharded = _parameters_sharded(accelerator)
    started = time.monotonic()
    metrics = {"val_loss": None, "val_ap_nc": None, "val_ground_acc": None}
    model.train()

    def validate() -> None:
        if val is None:
            return
        began = time.monotonic()
        chosen = evenly_spaced(len(val), config.val_samples)
        mine = chosen[accelerator.process_index :: accelerator.num_processes]
        if sharded:  # every process must run as many forward passes, in step
            mine = np.resize(mine, math.ceil(len(chosen) / accelerator.num_processes)).tolist()
        loader = _loader(val, mine, config.batch_size, collator, config.num_workers, config.seed)
        metrics["val_loss"] = validation_loss(model if sharded else accelerator.unwrap_model(model), loader, accelerator)
        detect = [i for i, s in enumerate(val.samples) if s.task == "detect" and len(s.images) == 1]
        if config.val_ap_samples and detect and not sharded:
            chosen = [detect[i] for i in evenly_spaced(len(detect), config.val_ap_samples)]
            ap = detection_ap_nc(accelerator.unwrap_model(model), processor, placement, val, chosen, accelerator, config)
            metrics["val_ap_nc"] = ap["ap_nc"] if ap else None
        ground = [i for i, s in enumerate(val.samples) if s.task == "ground" and len(s.images) == 1]
        if config.val_ap_samples and ground and not sharded:
            chosen = [ground[i] for i in evenly_spaced(len(ground), config.val_ap_samples)]
            found = grounding_accuracy(accelerator.unwrap_model(model), processor, placement, val, chosen, accelerator, config)
            metrics["val_ground_acc"] = found["acc_at_0.5"] if found else None
        if metrics["val_loss"] is not None and (state["best_val_loss"] is None or metrics["val_loss"] < state["best_val_loss"]):
            state["best_val_loss"] = metrics["val_loss"]
        now = time.monotonic()
        _log(out, accelerator, {"step": state["step"], **metrics, "elapsed_s": round(now - started, 3), "val_s": round(now - began, 3)})
        _report(progress, state, total_steps, None, scheduler, metrics)

    losses: list = []
    stop = False
    while state["step"] < total_steps and not stop:
        train.set_epoch(state["epoch"])
        order.epoch, order.start = state["epoch"], state["batch_in_epoch"] * config.batch_size
        for batch in _loader(train, order, config.batch_size, train_collator, config.num_workers, config.seed):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if dense_head is not None:
                dense_head.targets = batch.pop("dense_targets", None)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                if dense_head is not None and dense_head.last_loss is not None:
                    loss = loss + config.dense_head_weight * dense_head.last_loss
                    dense_head.last_loss = None
                if position_head is not None and position_head.last_loss is not None:
                    loss = loss + config.position_head_weight * position_head.last_loss
                    position_head.last_loss = None
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state["batch_in_epoch"] += 1
            losses.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step_loss = torch.stack(losses).mean()
            losses = []
            step_loss = accelerator.reduce(step_loss, reduction="mean") if accelerator.num_processes > 1 else step_loss
            if state["step"] % config.log_every == 0 or state["step"] == total_steps:
                _log(out, accelerator, {"step": state["step"], "epoch": state["epoch"], "loss": float(step_loss),
                                        "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.monotonic() - started, 3)})
            _report(progress, state, total_steps, float(step_loss), scheduler, metrics)
            if config.eval_every and state["step"] % config.eval_every == 0 and state["step"] < total_steps:
                validate()
            stop = _agreed_stop(should_stop, accelerator)
            if stop or state["step"] % config.save_every == 0 or state["step"] == total_steps:
                save_checkpoint(accelerator, out, state["step"], dict(state), config.keep_checkpoints)
            if stop or state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    if stop and state["step"] < total_steps:
        raise Cancelled(f"stopped at step {state['step']} of {total_steps}; checkpoint saved in {out / 'checkpoints'}")

    validate()
    summary = {
        "base_model": settings.model,
        "data": settings.data,
        "method": config.method,
        "steps": state["step"],
        "total_steps": total_steps,
        "epochs_started": state["epoch"] + 1,
        "train_samples": len(train),
        "train_tasks": dict(train.tasks()),
        "composition": train.composition,
        "val_samples": len(val) if val is not None else 0,
        "val_loss": metrics["val_loss"],
        "val_ap_nc": metrics["val_ap_nc"],
        "val_ground_acc": metrics["val_ground_acc"],
        "best_val_loss": state["best_val_loss"],
        "processes": accelerator.num_processes,
        "config": asdict(config),
    }
    result = _save_result(settings, accelerator, model, processor, out, summary, trained_classes(train))
    summary["result"] = str(result)
    if config.merge and config.method != "full" and accelerator.is_main_process:
        summary["merged"] = str(merge_adapter(settings.model, result, out / "merged"))
    if accelerator.is_main_process:
        write_text(out / METRICS_FILE, json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def _validation_mixture(specs, config: FitConfig, explicit: bool) -> Mixture | None:
    """Explicit validation data as named (weights ignored); by default the val split of each
    training dataset that has one (a single JSON/JSONL file has none: it is training data)."""
    present = []
    for spec in specs:
        if not explicit:
            if Path(spec.path).is_file():
                continue
            try:
                conversations_file(spec.path, "val")
            except UserError:
                continue
        present.append(DatasetSpec(spec.path))
    if not present:
        return None
    mixture = Mixture(present, "val", config.seed, 0.0, config.min_pixels, config.max_pixels)
    return mixture if len(mixture) else None


def _parameters_sharded(accelerator) -> bool:
    """ZeRO-3 and FSDP spread parameters over processes: a forward pass needs all of them."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin
    return plugin is not None and plugin.zero_stage == 3


def _agreed_stop(should_stop: StopCheck | None, accelerator) -> bool:
    import torch

    wanted = bool(should_stop()) if should_stop is not None else False
    if accelerator.num_processes == 1:
        return wanted
    flag = accelerator.reduce(torch.tensor([float(wanted)], device=accelerator.device), reduction="sum")
    return bool(flag.item() > 0)


def _report(progress, state: dict, total: int, loss: float | None, scheduler, metrics: dict) -> None:
    if progress is not None:
        progress(FitStatus(state["step"], total, state["epoch"], loss, scheduler.get_last_lr()[0], metrics["val_loss"], metrics["val_ap_nc"]))


class StopOnSignal:
    """First Ctrl-C (or SIGTERM): finish the step, write a checkpoint, stop. Second: stop now,
    leaving the last complete checkpoint."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (a checkpoint will be written); press Ctrl-C again to stop now", file=sys.stderr)

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML settings, or a shipped config's name: lora, full (training/configs/); default: LoRA defaults")
    parser.add_argument("--data", required=True, help='data spec: folders/files with *K (repeat) or %%P (keep percent), e.g. "data/boats*3,data/general%%20"')
    parser.add_argument("--val-data", help="validation data spec (default: the val split of the --data datasets)")
    parser.add_argument("--model", required=True, help="base checkpoint folder or hub id (e.g. Qingyun/RSCoVLM-7B-2512)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log, adapter/ or model/")
    parser.add_argument("--method", choices=["lora", "qlora", "full"], help="overrides the config's method")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides the config)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--merge", action="store_true", help="LoRA: also write the adapter merged into a full checkpoint (merged/)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. --set lora_r=8 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="start over even if --out holds checkpoints of another run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal anyway)")


def settings_from_args(args: argparse.Namespace) -> FitSettings:
    overrides = parse_overrides(args.set)
    for key, value in (("method", args.method), ("max_steps", args.max_steps), ("seed", args.seed)):
        if value is not None:
            overrides[key] = value
    if args.merge:
        overrides["merge"] = True
    config = load_config(args.config, overrides)
    return FitSettings(args.model, args.data, args.out, config, args.val_data, args.overwrite)


def run(args: argparse.Namespace) -> int:
    """The command: a progress bar with the loss on the main process, Ctrl-C to stop cleanly."""
    from tqdm import tqdm

    settings = settings_from_args(args)
    # From the launcher's environment: creating accelerate's state here would fix it before fit
    # chooses CPU or GPU.
    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(unit="step", desc="fit", file=sys.stderr, disable=True if (args.no_progress or not main_process) else None)

    def show(status: FitStatus) -> None:
        bar.total = status.total_steps
        bar.n = status.step
        shown = {"loss": f"{status.loss:.4f}" if status.loss is not None else None,
                 "val_loss": f"{status.val_loss:.4f}" if status.val_loss is not None else None}
        bar.set_postfix({k: v for k, v in shown.items() if v is not None}, refresh=False)
        bar.refresh()

    try:
        with StopOnSignal() as stop:
            summary = fit(settings, progress=show, should_stop=stop)
    except Cancelled as exc:
        bar.close()
        if main_process:
            print(f"rscovlm: {exc}. Run the same command to resume.", file=sys.stderr)
        return 130
    bar.close()
    if main_process:
        val = f", val loss {summary['val_loss']:.4f}" if summary.get("val_loss") is not None else ""
        ap = f", val AP_nc {summary['val_ap_nc']:.3f}" if summary.get("val_ap_nc") is not None else ""
        print(f"trained {summary['steps']} step(s){val}{ap}; wrote {summary['result']}")
        if summary.get("merged"):
            print(f"merged checkpoint: {summary['merged']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"rscovlm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
