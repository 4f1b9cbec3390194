"""Engines turn conversations into answer texts. Only engines import torch.

An engine takes a batch of conversations (images + texts, see `backend.prompts`) and returns
one `Generation` per conversation, greedy. The local engine runs transformers in this process;
other engines (an OpenAI-compatible server) implement the same members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from backend.model_defaults import ModelDefaults
from backend.prompts import Conversation


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    visual_tokens: int
    new_tokens: int
    finished: bool = True  # the model ended its answer; False: it stopped at the answer limit


class Engine(Protocol):
    model_id: str
    batch_size: int
    defaults: ModelDefaults  # what the model was trained on: requests take their unset options from it

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None = None
    ) -> list[Generation]:
        """Greedy answers. `repetition_penalty` None: the checkpoint's own generation config;
        detection sets 1.0, as RSCoVLM's detection was measured (MODEL_IO, Generation limits)."""
        ...

    def describe(self) -> dict: ...

    def close(self) -> None:
        """Release the model (GPU memory, connections); the engine is unusable afterwards."""
