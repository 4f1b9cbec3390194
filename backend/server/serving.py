"""Running the service: bind a socket, serve with uvicorn until stopped, stop the queue first.

The socket is bound before uvicorn starts, so port 0 gives a free port whose number is known
(and written to the server file) before the first request. On SIGINT/SIGTERM the queue stops
first: the batch in flight finishes, every other job is cancelled, waiting chat requests get a
503, and only then does uvicorn wait for open connections to close.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from pathlib import Path

import uvicorn

from backend.model_folders import default_models_dir
from backend.server.app import create_app
from backend.server.jobs import Scheduler
from backend.server.model_downloads import ModelDownloads
from backend.server.security import GuardSettings, Limits, allowed_host_names, new_token
from backend.server.training_jobs import TrainingJobs
from backend.server.uploads import Uploads


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler: Scheduler):
        super().__init__(config)
        self.scheduler = scheduler
        self.cancelled = 0

    async def shutdown(self, sockets=None) -> None:
        self.cancelled = await asyncio.to_thread(self.scheduler.stop)
        await super().shutdown(sockets)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LocalServer:
    def __init__(
        self,
        scheduler: Scheduler,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        limits: Limits = Limits(),
        allow_hosts: tuple[str, ...] = (),
        log_level: str = "warning",
        served_model_name: str | None = None,
        models_dir: Path | None = None,
    ):
        self.scheduler = scheduler
        self.token = token or new_token()
        self.socket = bind(host, port)
        self.port = self.socket.getsockname()[1]
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.uploads = Uploads()
        self.training = TrainingJobs(result_ttl_s=scheduler.result_ttl_s)
        self.models = ModelDownloads(models_dir or default_models_dir(), result_ttl_s=scheduler.result_ttl_s)
        guard = GuardSettings(self.token, allowed_host_names(host, allow_hosts), limits)
        app = create_app(scheduler, self.uploads, guard, self.training, served_model_name, self.models)
        config = uvicorn.Config(
            app, log_level=log_level, access_log=False, server_header=False, lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = _Uvicorn(config, scheduler)
        self.thread: threading.Thread | None = None

    @property
    def cancelled(self) -> int:
        """Jobs cancelled by stopping."""
        return self.server.cancelled

    def serve(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or stop(). uvicorn raises the signal
        that stopped it once more when it is done; it meets a no-op here, so the caller's own
        clean-up (the server file) still runs and the exit is a normal one."""
        if threading.current_thread() is not threading.main_thread():
            self.server.run(sockets=[self.socket])
            return
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.server.run(sockets=[self.socket])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, timeout_s: float = 30.0) -> LocalServer:
        """Serve from a background thread (tests, benchmarks); returns once it answers."""
        self.thread = threading.Thread(target=self.serve, name="rscovlm-http", daemon=True)
        self.thread.start()
        for _ in range(int(timeout_s / 0.02)):
            if self.server.started or not self.thread.is_alive():
                break
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError(f"the server did not start within {timeout_s:g} s")
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout_s)
