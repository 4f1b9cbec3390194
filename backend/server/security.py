"""Who may talk to the service, and how much they may send.

- Every request carries `Authorization: Bearer <token>`. The token is made at start unless given
  and written, with the URL, to a 0600 file in the user's config folder, where the plugin reads it.
- The Host header must name the bound address. A web page can make a browser send requests to
  127.0.0.1 through a name of its own that resolves there (DNS rebinding); such requests carry
  that name as Host and are refused. The port is not checked, so an SSH tunnel that arrives on
  another local port still works.
- No CORS headers are ever sent, so a browser never shows a page the answers.
- Bodies over the route's limit are refused with 413, by Content-Length when it is given and by
  counting otherwise, before they are read into memory.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

SERVER_FILE = "server.json"
MIB = 2**20
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rscovlm"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_server_file(url: str, token: str, model: str, path: Path | None = None) -> Path:
    """Where the plugin finds the running service: URL and token, readable by this user only."""
    path = path or config_dir() / SERVER_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token, "model": model, "pid": os.getpid()}, handle)
    os.replace(staging, path)
    return path


def remove_server_file(path: Path, token: str) -> None:
    """Remove the file only while it still describes this server (another may have started since)."""
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError):
        pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(bind_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Names a request may carry as Host: the bound address (on loopback its usual names too; on
    a wildcard address this machine's names and addresses), and any given as `extra`."""
    host = bind_host.strip("[]").lower()
    names = {host, *(name.strip("[]").lower() for name in extra)}
    if is_loopback(host):
        names |= LOOPBACK_NAMES
    if host in ("0.0.0.0", "::"):
        hostname = socket.gethostname()
        names |= LOOPBACK_NAMES | {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0].lower() for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass  # a machine whose own name does not resolve: its name is still allowed
    return frozenset(names)


def host_name(header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on as a 413 instead of a 400."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over this route's limit of {limit} bytes; send less (smaller images, or upload the raster).")


@dataclass(frozen=True)
class Limits:
    """Most bytes a request body may have, by route."""

    json_bytes: int = 1 * MIB
    chat_bytes: int = 64 * MIB  # a few images as base64 PNG
    upload_bytes: int = 4096 * MIB

    def for_path(self, path: str) -> int:
        if path in ("/rasters", "/vectors"):
            return self.upload_bytes
        if path == "/v1/chat/completions":
            return self.chat_bytes
        return self.json_bytes


@dataclass(frozen=True)
class GuardSettings:
    token: str
    hosts: frozenset[str]
    limits: Limits = Limits()


def _refuse(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware in front of every route."""

    def __init__(self, app, settings: GuardSettings):
        self.app = app
        self.settings = settings
        self.expected = f"Bearer {settings.token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.settings.hosts:
            response = _refuse(
                403,
                f"Host '{host}' is not this server's address; requests through other names are refused "
                f"(DNS-rebinding protection). Use http://{sorted(self.settings.hosts)[0]}:<port>.",
            )
            return await response(scope, receive, send)
        if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            given = "a wrong" if b"authorization" in headers else "no"
            response = _refuse(
                401,
                f"{given} bearer token. Send 'Authorization: Bearer <token>' with the token from {config_dir() / SERVER_FILE}.",
                {"WWW-Authenticate": "Bearer"},
            )
            return await response(scope, receive, send)
        limit = self.settings.limits.for_path(scope["path"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _refuse(413, BodyTooLarge(limit).detail)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, counted, send)
