"""Which engine answers: a checkpoint loaded in this process, or an OpenAI-compatible server.
The task commands and `rscovlm serve` take the same options and choose here, in one place."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from backend.engine import Engine
from backend.errors import UserError

TOKEN_ENVIRONMENT = "RSCOVLM_ENGINE_TOKEN"


@dataclass(frozen=True)
class EngineChoice:
    model: str | None = None
    adapter: str | None = None
    device: str = "auto"
    quantize: str = "none"
    batch_size: int = 4
    url: str | None = None
    token: str | None = None
    remote_model: str | None = None
    concurrency: int = 4

    @property
    def label(self) -> str:
        """What to call the model before it is loaded."""
        return self.remote_model or self.url if self.url else str(self.model)


def add_engine_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--model", help="checkpoint folder or hub id (e.g. Qingyun/RSCoVLM-7B-2512)")
    group.add_argument("--adapter", help="LoRA adapter folder from a fine-tuning run")
    group.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    group.add_argument("--quantize", choices=["none", "8bit", "4bit"], default="none", help="bitsandbytes; needs CUDA")
    group.add_argument("--batch-size", type=int, default=4, help="views per forward pass (default 4)")
    group.add_argument(
        "--engine-url",
        help="use an OpenAI-compatible server as the model instead of loading one (vLLM, or another rscovlm serve)",
    )
    group.add_argument("--engine-token", help=f"bearer token of --engine-url (default: ${TOKEN_ENVIRONMENT})")
    group.add_argument("--engine-model", help="model name on --engine-url (default: the first it lists)")
    group.add_argument("--engine-concurrency", type=int, default=4, help="requests in flight to --engine-url (default 4)")


def engine_choice(args: argparse.Namespace, local_model) -> EngineChoice:
    """`local_model()` names the checkpoint when no --engine-url is given (it may refuse)."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1.", None)
    if not args.engine_url:
        return EngineChoice(args.model or local_model(), args.adapter, args.device, args.quantize, args.batch_size)
    local_only = [f"--{name}" for name, given in (("model", args.model), ("adapter", args.adapter), ("quantize", args.quantize != "none")) if given]
    if local_only:
        raise UserError(
            f"{', '.join(local_only)} choose a model loaded here, but --engine-url sends the work to a server.",
            "Leave them out (the server has its model), or leave out --engine-url.",
        )
    return EngineChoice(
        url=args.engine_url,
        token=args.engine_token or os.environ.get(TOKEN_ENVIRONMENT),
        remote_model=args.engine_model,
        concurrency=args.engine_concurrency,
    )


def load_engine(choice: EngineChoice) -> Engine:
    if choice.url:
        from backend.engine.remote import RemoteEngine

        return RemoteEngine(choice.url, choice.token, choice.remote_model, choice.concurrency)
    from backend.engine.local import load_local_engine

    return load_local_engine(choice.model, choice.adapter, choice.device, choice.quantize, choice.batch_size)
