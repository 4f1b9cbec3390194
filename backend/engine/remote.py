"""An engine that is an OpenAI-compatible chat-completions server: vLLM serving RSCoVLM, or
another `rscovlm serve`. This is the scale-out path: the views of a batch are sent at once from
a bounded thread pool, so a server that batches across requests fills its batches from one
task's tiles, and a request that fails only costs its own view.

Images travel as PNG data URLs: lossless, so the server sees exactly the pixels, at exactly the
size, that the model's coordinates refer to. System, user and assistant turns and several
images per turn pass through unchanged (the Zoom-in Chain sends two turns and two images).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from backend.engine import Generation
from backend.errors import UserError
from backend.model_defaults import ModelDefaults
from backend.prompts import Conversation
from backend.resolution import smart_resize, visual_tokens

# Busy or restarting servers answer these; anything else is not helped by asking again.
RETRY_STATUS = frozenset({429, 502, 503, 504})
RETRY_DELAYS_S = (0.5, 2.0)
DEFAULT_TIMEOUT_S = 600.0


def png_data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def video_data_url(frames) -> str:
    """Frames as vLLM takes a video of frames: `data:video/jpeg;base64,<frame>,<frame>` (JPEG at
    quality 95: vLLM reads no lossless form of a frame list)."""
    parts = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
        parts.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return "data:video/jpeg;base64," + ",".join(parts)


def openai_messages(conversation: Conversation) -> list[dict]:
    """Chat-completions messages; a user turn's images come before its text, as in training, a
    video between its lead text and its question."""
    messages = []
    for message in conversation:
        if message.images or message.video:
            content: str | list[dict] = [{"type": "text", "text": message.lead}] if message.lead else []
            content += [{"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in message.images]
            if message.video:
                content.append({"type": "video_url", "video_url": {"url": video_data_url(message.video)}})
            content.append({"type": "text", "text": message.text})
        else:
            content = message.text
        messages.append({"role": message.role, "content": content})
    return messages


def base_url(url: str) -> str:
    """The server root: 'http://host:8000', whether given with '/v1' or a trailing slash."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--engine-url {url} is not an http(s) URL.", "Give it as http://host:port (the server's root or its /v1).")
    return url.removesuffix("/v1")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        return str(detail)[:300]
    return str(body)[:300]


class RemoteEngine:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        model: str | None = None,
        concurrency: int = 4,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        if concurrency < 1:
            raise UserError(f"--engine-concurrency {concurrency} must be at least 1.", None)
        self.url = base_url(url)
        self.concurrency = concurrency
        self.batch_size = concurrency
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="remote-engine")
        try:
            self.model_id = model or self._served_model()
        except BaseException:
            self.close()
            raise
        # Another `rscovlm serve` says what its model was trained on; vLLM serves no /model.
        self.defaults = ModelDefaults.from_description((self._server_model() or {}).get("defaults"))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        delays = iter(RETRY_DELAYS_S)
        while True:
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise self._unreachable(exc) from exc
            else:
                delay = next(delays, None) if response.status_code in RETRY_STATUS else None
                if delay is None:
                    return self._checked(response)
            time.sleep(delay)

    def _unreachable(self, exc: httpx.TransportError) -> Exception:
        if isinstance(exc, httpx.ConnectError):
            return UserError(
                f"cannot reach the engine server at {self.url} ({exc}).",
                "Start it (rscovlm serve, or vLLM) or check --engine-url.",
            )
        return RuntimeError(f"the engine server at {self.url} did not answer ({type(exc).__name__}: {exc})")

    def _checked(self, response: httpx.Response) -> httpx.Response:
        code = response.status_code
        if code in (401, 403):
            raise UserError(
                f"the engine server at {self.url} refused the request (HTTP {code}: {_detail(response)}).",
                "Pass its token with --engine-token or RSCOVLM_ENGINE_TOKEN.",
            )
        if 400 <= code < 500:
            raise UserError(f"the engine server at {self.url} refused the request (HTTP {code}: {_detail(response)}).", None)
        if code >= 500:
            raise RuntimeError(f"the engine server at {self.url} failed (HTTP {code}: {_detail(response)})")
        return response

    def _served_model(self) -> str:
        models = self._request("GET", "/v1/models").json().get("data") or []
        if not models:
            raise UserError(f"the engine server at {self.url} serves no model.", "Check that it finished loading one.")
        return str(models[0]["id"])

    def _complete(self, conversation: Conversation, max_new_tokens: int, repetition_penalty: float | None) -> Generation:
        payload = {
            "model": self.model_id,
            "messages": openai_messages(conversation),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
        }
        if repetition_penalty is not None:
            payload["repetition_penalty"] = repetition_penalty  # vLLM's extension; without it vLLM applies the checkpoint's
        body = self._request("POST", "/v1/chat/completions", json=payload).json()
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            usage = body.get("usage") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"the engine server at {self.url} answered without choices[0].message.content") from exc
        images = [image for message in conversation for image in message.images] + [m.video[0] for m in conversation if m.video]
        tokens = sum(visual_tokens(*smart_resize(image.shape[0], image.shape[1])) for image in images)
        finished = choice.get("finish_reason") != "length"
        return Generation(text.strip(), int(usage.get("prompt_tokens", 0)), tokens, int(usage.get("completion_tokens", 0)), finished)

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int, repetition_penalty: float | None = None) -> list[Generation]:
        return list(self.pool.map(lambda conversation: self._complete(conversation, max_new_tokens, repetition_penalty), conversations))

    def _server_model(self) -> dict | None:
        """GET /model of another `rscovlm serve` (where its model runs, what it was trained on);
        None from a server without the route (vLLM) or one that is down for now."""
        try:
            response = self.client.get("/model")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        try:
            remote = response.json()
        except ValueError:
            return None
        return remote if isinstance(remote, dict) else None

    def describe(self) -> dict:
        described = {"model": self.model_id, "engine": "remote", "url": self.url, "concurrency": self.concurrency}
        remote = self._server_model()
        if remote is not None:
            described.update({k: remote.get(k) for k in ("device", "dtype", "quantize") if k in remote})
            described["memory"] = remote.get("memory") or {}
        described["defaults"] = self.defaults.describe()
        return described
