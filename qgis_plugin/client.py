"""Talking to the backend over HTTP: which backend (a connection), and one client for its routes.

Every request goes through QgsNetworkAccessManager (so QGIS's proxy and SSL settings apply) and
blocks its caller, so the client runs inside QgsTask workers and Processing algorithms, never on
the UI thread. Failures become one BackendError whose message says what happened and what to do.

No QObject made by Python takes part in a request: QGIS's static blockingGet/blockingPost make
their own, and a feedback is only asked between requests. A Python-made QObject connected to the
request machinery gets notified from the worker while the GIL is released, and that waits for
the GIL while holding a Qt lock the main thread may want while it holds the GIL (seen as a
deadlock when a widget was garbage-collected during a job). So cancelling takes effect when
the request in flight ends; each has a timeout.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import QgsFeedback, QgsNetworkAccessManager
from qgis.PyQt.QtCore import QByteArray, QEventLoop, QUrl
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from .settings import PluginSettings

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class BackendError(Exception):
    """One line for the message bar; `kind` tells which button helps (settings or log)."""

    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind  # "not running", "unreachable", "token", "rejected", "server", "timeout", "cancelled", "failed"
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Connection:
    url: str
    token: str
    source: str  # where it came from, for messages and diagnostics
    always_upload: bool = False  # e.g. a backend in a container that cannot see this machine's files

    @property
    def is_local(self) -> bool:
        return (urllib.parse.urlsplit(self.url).hostname or "") in LOOPBACK

    @property
    def uploads(self) -> bool:
        """A backend on this machine reads raster files by path; any other gets them uploaded."""
        return self.always_upload or not self.is_local


def read_server_file(path: str) -> Connection | None:
    try:
        data = json.loads(Path(path).read_text())
        return Connection(str(data["url"]).rstrip("/"), str(data["token"]), f"server file {path}")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_connection(settings: PluginSettings, child: Connection | None = None) -> Connection:
    """The backend to use: the plugin's child process, else a `rscovlm serve` found through its
    server file (local mode), or the URL and token from the settings (remote mode)."""
    if settings.mode == "remote":
        if not settings.url.strip():
            raise BackendError("not running", "No backend URL is set. Enter it in RSCoVLM settings.")
        return Connection(settings.url.strip().rstrip("/"), settings.token.strip(), "settings", settings.upload_rasters)
    if child is not None:
        return child
    found = read_server_file(settings.server_file_path())
    if found is None:
        raise BackendError(
            "not running",
            "The RSCoVLM backend is not running. Start it from the RSCoVLM dock (Start backend), "
            "run `rscovlm serve` in a terminal, or connect to a URL in RSCoVLM settings.",
        )
    return Connection(found.url, found.token, found.source, settings.upload_rasters)


def _content(reply) -> tuple[Any, int, str, bytes]:
    """HTTP status (None when no answer came), network error, its text, and the body."""
    return reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute), reply.error(), reply.errorString(), bytes(reply.content())


def _blocking_delete(request: QNetworkRequest) -> tuple[Any, int, str, bytes]:
    """QGIS has no static blocking DELETE: wait for the reply in a local loop. The reply is made by
    QGIS's manager for this thread and only sends to the loop, so no Python-made sender is involved."""
    reply = QgsNetworkAccessManager.instance().deleteResource(request)
    loop = QEventLoop()
    reply.finished.connect(loop.quit)
    if not reply.isFinished():
        loop.exec()
    answer = (reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute), reply.error(), reply.errorString(), bytes(reply.readAll()))
    reply.deleteLater()
    return answer


class BackendClient:
    def __init__(self, connection: Connection, timeout_s: float = 30.0, feedback: QgsFeedback | None = None):
        self.connection = connection
        self.timeout_s = timeout_s
        self.feedback = feedback

    def get(self, path: str) -> Any:
        return self._send("GET", path)

    def post_json(self, path: str, body: dict) -> Any:
        return self._send("POST", path, json.dumps(body).encode(), "application/json")

    def post_file(self, path: str, file_path: str) -> Any:
        data = Path(file_path).read_bytes()
        query = "?" + urllib.parse.urlencode({"name": Path(file_path).name})
        # An upload may take long to arrive on a slow link: allow a minute per 100 MB on top.
        return self._send("POST", path + query, data, "application/octet-stream", self.timeout_s + 60.0 * len(data) / 1e8)

    def delete(self, path: str) -> Any:
        return self._send("DELETE", path)

    def _request(self, path: str, content_type: str | None, timeout_s: float) -> QNetworkRequest:
        request = QNetworkRequest(QUrl(self.connection.url + path))
        request.setRawHeader(b"Authorization", f"Bearer {self.connection.token}".encode())
        request.setRawHeader(b"Accept", b"application/json")
        if content_type:
            request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, content_type)
        request.setAttribute(QNetworkRequest.Attribute.CacheLoadControlAttribute, QNetworkRequest.CacheLoadControl.AlwaysNetwork)
        request.setAttribute(QNetworkRequest.Attribute.CacheSaveControlAttribute, False)
        request.setTransferTimeout(int(timeout_s * 1000))
        return request

    def _send(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None, timeout_s: float | None = None) -> Any:
        if self.feedback is not None and self.feedback.isCanceled():
            raise BackendError("cancelled", "Cancelled.")
        timeout_s = timeout_s or self.timeout_s
        request = self._request(path, content_type, timeout_s)
        if method == "GET":
            status, error, message, body = _content(QgsNetworkAccessManager.blockingGet(request, "", True))
        elif method == "POST":
            status, error, message, body = _content(QgsNetworkAccessManager.blockingPost(request, QByteArray(data or b""), "", True))
        else:
            status, error, message, body = _blocking_delete(request)
        if status is None:
            raise self._transport_error(error, message, timeout_s)
        status = int(status)
        if status >= 400:
            raise self._http_error(status, body)
        if not body:
            return None
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            raise BackendError("server", f"The backend at {self.connection.url} answered {method} {path} with something that is not JSON. Is this URL an RSCoVLM backend?", status) from None

    def _transport_error(self, error: int, message: str, timeout_s: float) -> BackendError:
        url = self.connection.url
        if error in (QNetworkReply.NetworkError.OperationCanceledError, QNetworkReply.NetworkError.TimeoutError):
            return BackendError(
                "timeout",
                f"The backend at {url} did not answer within {timeout_s:g} s. Check that it is running "
                "(see the RSCoVLM log), or raise the timeout in RSCoVLM settings.",
            )
        return BackendError(
            "unreachable",
            f"The RSCoVLM backend at {url} is not reachable ({message.strip() or 'no answer'}). Start the backend, "
            f"or fix its URL in RSCoVLM settings (connection from {self.connection.source}).",
        )

    def _http_error(self, status: int, body: bytes) -> BackendError:
        try:
            detail = str(json.loads(body.decode("utf-8")).get("detail", "")).strip()
        except (ValueError, AttributeError):
            detail = body.decode("utf-8", "replace").strip()[:300]
        if status == 401:
            return BackendError(
                "token",
                f"The backend at {self.connection.url} refused the token (401). Copy the token from the "
                "server file of `rscovlm serve` (~/.config/rscovlm/server.json) into RSCoVLM settings.",
                status,
            )
        if 400 <= status < 500:
            return BackendError("rejected", f"The backend rejected the request ({status}): {detail or 'no reason given'}", status)
        return BackendError("server", f"The backend failed ({status}): {detail or 'no reason given'}. See its log.", status)
