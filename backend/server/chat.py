"""OpenAI chat completions on the loaded model: messages in, one greedy answer out, whole or as
server-sent events (`stream: true`, as OpenAI streams: chat front ends and LiteLLM ask so).

Images come as data URLs (PNG or JPEG, base64); the server fetches nothing from anywhere. A
user turn's images go before its text, the order RSCoVLM was trained on, whatever order the
parts came in. What a request may make the server decode is bounded: images per message,
pixels per image and per request (a small body of compressed PNGs can decode to gigabytes). An
image is fitted into the model's trained pixel range as Qwen2.5-VL's processor would fit it, so
the model sees what it saw in training and coordinates in the answer refer to that image.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
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
from backend.resolution import FACTOR, smart_resize

DEFAULT_MAX_TOKENS = 1024
MAX_IMAGE_PIXELS = 64_000_000  # one image; a decompression bomb is refused before it is decoded
MAX_REQUEST_PIXELS = 128_000_000  # all images of one request
MAX_IMAGES_PER_MESSAGE = 8  # the Zoom-in Chain sends two per request


class TooMuchImage(UserError):
    """A request whose images decode to more than the server takes (HTTP 413)."""


def decode_image_url(url: str, budget: list[int] | None = None) -> np.ndarray:
    """The image of a data URL, as RGB. `budget`: pixels the request may still decode (one
    number in a list), lowered by this image's size before it is decoded."""
    header, comma, data = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64") or not comma:
        raise UserError(
            f"image_url '{url[:40]}...' is not a base64 data URL.",
            "Send images inline as data:image/png;base64,... (the server fetches no URLs).",
        )
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            pixels = image.width * image.height
            if pixels > MAX_IMAGE_PIXELS:
                raise TooMuchImage(f"an image of {image.width}x{image.height} pixels is too large.", "Send at most 64 Mpx per image.")
            if budget is not None:
                if pixels > budget[0]:
                    raise TooMuchImage(f"the request's images decode to more than {MAX_REQUEST_PIXELS // 10**6} Mpx.", "Send fewer or smaller images.")
                budget[0] -= pixels
            return np.array(image.convert("RGB"))  # writable: torch refuses read-only arrays
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise UserError(f"an image_url does not hold a readable image ({exc}).", "Send PNG or JPEG bytes, base64-encoded.") from exc


MAX_FRAMES = 8


def decode_video_url(url: str, budget: list[int]) -> list[np.ndarray]:
    """The frames of `data:video/jpeg;base64,<frame>,<frame>` (vLLM's form of a frame list)."""
    header, comma, data = url.partition(",")
    if header != "data:video/jpeg;base64" or not comma:
        raise UserError(f"video_url '{url[:40]}...' is not a list of frames.", "Send data:video/jpeg;base64,<frame>,<frame> (the server fetches no URLs).")
    frames = data.split(",")
    if len(frames) > MAX_FRAMES:
        raise TooMuchImage(f"a video of {len(frames)} frames.", f"Send at most {MAX_FRAMES}.")
    if len(frames) < 2:
        raise UserError("a video needs at least two frames.", "Send the earlier and the later image.")
    return [decode_image_url("data:image/jpeg;base64," + frame, budget) for frame in frames]


def fit_to_range(image: np.ndarray, min_pixels: int, max_pixels: int) -> np.ndarray:
    """The image at its smart_resize size for the model's pixel range (as the processor would
    resize it; unchanged when it is already such a size)."""
    height, width = smart_resize(image.shape[0], image.shape[1], FACTOR, min_pixels, max_pixels)
    if (height, width) == image.shape[:2]:
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def conversation_from_request(request: ChatCompletionRequest, min_pixels: int, max_pixels: int) -> Conversation:
    """The request's messages as a conversation, its images decoded (within the bounds) and
    fitted into the model's pixel range."""
    conversation: Conversation = []
    budget = [MAX_REQUEST_PIXELS]
    for message in request.messages:
        if isinstance(message.content, str):
            conversation.append(Message(message.role, message.content))
            continue
        lead, texts, images, video = [], [], [], []
        if sum(part.type in ("image_url", "video_url") for part in message.content) > MAX_IMAGES_PER_MESSAGE:
            raise TooMuchImage(f"a message carries more than {MAX_IMAGES_PER_MESSAGE} images.", "Send fewer images per message.")
        for part in message.content:
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "video_url":
                if part.video_url is None or video:
                    raise UserError("a message may carry one video, given as its video_url.", None)
                lead, texts = texts, []  # the text before the frames leads them, as the training data reads
                video = [fit_to_range(frame, min_pixels, max_pixels) for frame in decode_video_url(part.video_url.url, budget)]
            elif part.image_url is None:
                raise UserError("a content part of type image_url has no image_url.", None)
            else:
                try:
                    images.append(fit_to_range(decode_image_url(part.image_url.url, budget), min_pixels, max_pixels))
                except ValueError as exc:  # smart_resize refuses an aspect ratio over 200
                    raise UserError(f"an image cannot be shown to the model ({exc}).", "Send a less elongated image.") from None
        if (images or video) and message.role != "user":
            raise UserError(f"a {message.role} message carries an image; only user messages may.", None)
        if video and len({frame.shape for frame in video}) != 1:
            raise UserError("the frames of a video differ in size.", "Send frames of one size (one place, one grid).")
        conversation.append(Message(message.role, "\n".join(texts), tuple(images), tuple(video), "\n".join(lead)))
    if conversation[-1].role != "user":
        raise UserError("the last message must be the user's: the model answers it.", None)
    return conversation


def max_tokens(request: ChatCompletionRequest) -> int:
    return request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS


def finish_reason(generation: Generation) -> str:
    return "stop" if generation.finished else "length"


def completion(generation: Generation, model: str, completion_id: str | None = None) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id or f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=[ChatChoice(index=0, message=ChatResponseMessage(content=generation.text), finish_reason=finish_reason(generation))],
        usage=ChatUsage(
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.new_tokens,
            total_tokens=generation.prompt_tokens + generation.new_tokens,
        ),
    )


def stream_events(generation: Generation, model: str, include_usage: bool) -> list[str]:
    """The answer as OpenAI's server-sent events: a role chunk, the content, the finish, the usage
    when asked (`stream_options.include_usage`), then `data: [DONE]`. Greedy decoding answers
    whole, so the content comes in one chunk; clients read it as they read any stream."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": generation.text}), chunk({}, finish_reason(generation))]
    if include_usage:
        usage = {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.new_tokens,
                 "total_tokens": generation.prompt_tokens + generation.new_tokens}
        events.append(chunk({}, usage=usage, choices=False))
    return events + ["data: [DONE]\n\n"]
