"""A real `rscovlm serve` service whose model answers with scripted texts, run by the backend's
Python (`.venv/bin/python -m tests.plugin.scripted_backend SERVER_FILE`): the random tiny
checkpoint never writes a box, and the plugin's partial results need boxes that arrive tile
by tile. Everything but the model's words is the real server and pipeline."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from backend.server.jobs import Scheduler
from backend.server.security import write_server_file
from backend.server.serving import LocalServer
from tests.scripted import ScriptedEngine

ANSWER_DELAY_S = 0.15  # per view, so a job takes a few polls


def answer(conversation) -> str:
    time.sleep(ANSWER_DELAY_S)
    return "20,20,120,20,120,60,20,60 plane\n150,150,190,150,190,230,150,230 ship"


def main() -> None:
    server_file = Path(sys.argv[1])
    server = LocalServer(Scheduler(ScriptedEngine(answer, batch_size=1)), "127.0.0.1", 0)
    write_server_file(server.url, server.token, "scripted", server_file)
    print(f"serving scripted at {server.url}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
