"""A training run's folder, shared by `train fit` and `train grpo`: what makes it a run folder
(run.json: the settings that must not change on resume), its log, and its result.

Running a command again on its folder resumes it; other settings are refused rather than mixed
in; --overwrite starts over, but only on a folder that is a run folder (a mistyped dataset or
home folder is never emptied).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from backend.atomic import write_text
from backend.errors import UserError

RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
# What a run writes, all of it removed by --overwrite.
RUN_ENTRIES = ("checkpoints", "adapter", "model", "merged", "sft-merged", RUN_FILE, LOG_FILE, METRICS_FILE)


def check_overwrite(out: Path, overwrite: bool) -> None:
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise UserError(
            f"{out} is not empty and holds no earlier training run (no {RUN_FILE}); --overwrite only replaces a run folder.",
            "Give the run folder to start over in, or an empty or new --out.",
        )


def clear(out: Path) -> None:
    """Everything an earlier run wrote (check_overwrite first)."""
    for name in RUN_ENTRIES:
        target = out / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def check_identity(out: Path, identity: dict, top_keys: tuple[str, ...]) -> None:
    """Refuse to resume a run of other settings: `top_keys` and every key of identity['config']."""
    previous = json.loads((out / RUN_FILE).read_text())
    differs = [k for k in top_keys if previous.get(k) != identity.get(k)]
    differs += sorted(k for k in set(previous.get("config", {})) | set(identity.get("config", {}))
                      if previous.get("config", {}).get(k) != identity.get("config", {}).get(k))
    if differs:
        raise UserError(
            f"{out} holds a run with other settings ({', '.join(differs)} differ).",
            "Run with the same settings to resume, give another --out, or pass --overwrite to start over.",
        )


def write_identity(out: Path, identity: dict) -> None:
    write_text(out / RUN_FILE, json.dumps(identity, indent=2) + "\n")


def append_log(out: Path, entry: dict) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def trim_log(out: Path, step: int) -> None:
    """Drop log lines past the checkpoint a run resumes from: they will be written again."""
    path = out / LOG_FILE
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))


def read_log(out: Path) -> list[dict]:
    path = out / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
