"""A minimal model hub on 127.0.0.1 for download tests: the routes huggingface_hub calls to
download a repository (model info, the file tree, HEAD and GET of each file with Range), served
from local folders. It can cut a file off part way (a client then asks for the rest with a Range
request) and then refuse every request, as a proxy that starts blocking does, and it records each request so a test can see what the client asked for.
Point huggingface_hub at it with HF_ENDPOINT (a child process) or `endpoint=` (this one)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
FILE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass
class HubState:
    repos: dict[str, Path] = field(default_factory=dict)  # hub id -> folder it serves
    cut: tuple[str, int] | None = None  # (file name, bytes): send that much of it once and close the connection
    refuse_after_cut: bool = False  # then answer every request 403 (an error huggingface_hub does not retry)
    refusing: bool = False
    seconds_per_file: float = 0.0  # send each file's bytes over this long (a slow link, to cancel on)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*")) if path.is_file()}


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _answer(self) -> None:
        state = self.server.state
        path = unquote(urlsplit(self.path).path)
        with state.lock:
            state.requests.append((self.command, path, self.headers.get("Range")))
            if state.refusing:
                self._json(403, {"error": "refused by the stand-in hub"})
                return
        for pattern in (TREE, INFO, FILE):
            match = pattern.match(path)
            if match and match["repo"] in state.repos:
                break
        else:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        files = state.files(match["repo"])
        if pattern is INFO:
            self._json(200, {"id": match["repo"], "modelId": match["repo"], "sha": COMMIT, "private": False,
                             "siblings": [{"rfilename": name} for name in files]})
        elif pattern is TREE:
            self._json(200, [{"type": "file", "oid": _oid(p), "size": p.stat().st_size, "path": name} for name, p in files.items()])
        elif match["path"] not in files:
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        else:
            self._file(match["path"], files[match["path"]])

    def _file(self, name: str, path: Path) -> None:
        state = self.server.state
        data = path.read_bytes()
        start = 0
        asked = self.headers.get("Range")
        if asked and (found := re.match(r"bytes=(\d+)-$", asked)):
            start = int(found[1])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{_oid(path)}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with state.lock:
            cut = state.cut if state.cut and state.cut[0] == name else None
            if cut:
                state.cut, state.refusing = None, state.refuse_after_cut
        if cut:
            self.wfile.write(body[: cut[1]])
            self.wfile.flush()
            self.close_connection = True
            return
        if state.seconds_per_file <= 0:
            self.wfile.write(body)
            return
        pieces = 20
        step = max(1, -(-len(body) // pieces))
        for start in range(0, len(body), step):
            self.wfile.write(body[start:start + step])
            self.wfile.flush()
            time.sleep(state.seconds_per_file / pieces)

    do_GET = do_HEAD = _answer


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class StandInHub:
    """`with StandInHub({"owner/name": folder}) as hub:` serves at hub.url."""

    def __init__(self, repos: dict[str, Path]):
        self.state = HubState(dict(repos))
        self.server = _HubServer(self.state)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ranges(self, name: str) -> list[str | None]:
        """The Range headers of the GETs of one file."""
        return [asked for method, path, asked in self.state.requests if method == "GET" and path.endswith("/" + name)]
