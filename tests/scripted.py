"""An engine that answers with scripted texts, for tests that need to know what the model
said (mapping back, merging, the Zoom-in Chain). Everything around it is the real pipeline;
the real model classes are exercised through the tiny checkpoint elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from backend.engine import Generation
from backend.model_defaults import ModelDefaults
from backend.prompts import Conversation
from backend.resolution import visual_tokens


class ScriptedEngine:
    def __init__(
        self,
        answer: Callable[[Conversation], str] | Sequence[str],
        batch_size: int = 4,
        model_id: str = "scripted",
        defaults: ModelDefaults | None = None,
    ):
        self.answer = answer
        self.batch_size = batch_size
        self.model_id = model_id
        self.defaults = defaults or ModelDefaults()
        self.seen: list[Conversation] = []
        self.penalties: list[float | None] = []  # the repetition penalty each batch was asked with

    def _next(self, conversation: Conversation) -> str:
        if callable(self.answer):
            return self.answer(conversation)
        return self.answer[(len(self.seen) - 1) % len(self.answer)]

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None = None) -> list[Generation]:
        self.penalties.append(repetition_penalty)
        out = []
        for conversation in conversations:
            self.seen.append(conversation)
            images = [img for message in conversation for img in message.images]
            tokens = sum(visual_tokens(img.shape[0], img.shape[1]) for img in images)
            out.append(Generation(self._next(conversation), tokens + 20, tokens, 10))
        return out

    def describe(self) -> dict:
        return {"model": self.model_id, "device": "cpu"}

    def close(self) -> None:
        pass


class ScriptedFirstTurn:
    """A real engine whose answer to the first turn of a conversation is replaced by a scripted
    text (a zoom call, say, which a random model never writes). Every turn still runs through
    the real model, so the rendering of multi-turn conversations and the token counts are real."""

    def __init__(self, engine, first_answer: str):
        self.engine = engine
        self.first_answer = first_answer
        self.model_id = engine.model_id
        self.batch_size = engine.batch_size
        self.defaults = engine.defaults

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None = None) -> list[Generation]:
        generations = self.engine.generate(conversations, max_new_tokens, repetition_penalty)
        return [
            replace(g, text=self.first_answer) if sum(m.role == "user" for m in c) == 1 else g
            for c, g in zip(conversations, generations)
        ]

    def describe(self) -> dict:
        return self.engine.describe()

    def close(self) -> None:
        self.engine.close()
