"""OpenAI chat completions on the loaded model: messages in, one greedy answer out.

Images come as data URLs (PNG or JPEG, base64); the server fetches nothing from anywhere. A
user turn's images go before its text, the order RSCoVLM was trained on, whatever order the
parts came in.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid

import numpy as np
from PIL import Image, UnidentifiedImageError

from backend.contract import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatResponseMessage,
    ChatUsage,
)
from backend.engine import Generation
from backend.errors import UserError
from backend.prompts import Conversation, Message

DEFAULT_MAX_TOKENS = 1024
MAX_IMAGE_PIXELS = 64_000_000  # a decompression bomb is refused before it is decoded


def decode_image_url(url: str) -> np.ndarray:
    header, comma, data = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64") or not comma:
        raise UserError(
            f"image_url '{url[:40]}...' is not a base64 data URL.",
            "Send images inline as data:image/png;base64,... (the server fetches no URLs).",
        )
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise UserError(f"an image of {image.width}x{image.height} pixels is too large.", "Send at most 64 Mpx per image.")
            return np.array(image.convert("RGB"))  # writable: torch refuses read-only arrays
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise UserError(f"an image_url does not hold a readable image ({exc}).", "Send PNG or JPEG bytes, base64-encoded.") from exc


def conversation_from_request(request: ChatCompletionRequest) -> Conversation:
    conversation: Conversation = []
    for message in request.messages:
        if isinstance(message.content, str):
            conversation.append(Message(message.role, message.content))
            continue
        texts, images = [], []
        for part in message.content:
            if part.type == "text":
                texts.append(part.text or "")
            elif part.image_url is None:
                raise UserError("a content part of type image_url has no image_url.", None)
            else:
                images.append(decode_image_url(part.image_url.url))
        if images and message.role != "user":
            raise UserError(f"a {message.role} message carries an image; only user messages may.", None)
        conversation.append(Message(message.role, "\n".join(texts), tuple(images)))
    if conversation[-1].role != "user":
        raise UserError("the last message must be the user's: the model answers it.", None)
    return conversation


def max_tokens(request: ChatCompletionRequest) -> int:
    return request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS


def completion(generation: Generation, model: str, limit: int) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=[
            ChatChoice(
                index=0,
                message=ChatResponseMessage(content=generation.text),
                finish_reason="length" if generation.new_tokens >= limit else "stop",
            )
        ],
        usage=ChatUsage(
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.new_tokens,
            total_tokens=generation.prompt_tokens + generation.new_tokens,
        ),
    )
