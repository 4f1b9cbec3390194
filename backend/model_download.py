"""A model from the hub into the models folder, through huggingface_hub: Qingyun/RSCoVLM-7B-2512
or any hub id, at a revision, with progress, cancel and resume.

The files go into `.downloading/<owner--name>`, and the folder is renamed into the list only
once every file is there and it is a Qwen2.5-VL checkpoint or adapter. `config.json` comes
first, so a repository that holds no such model is refused before gigabytes of something else
arrive. Resuming is huggingface_hub's: a file whose connection breaks is asked for again from
where it broke (a Range request, retried with backoff); after a download that failed or was
cancelled, the files that arrived are kept and the next download fetches the rest (a file cut
off then starts again: this huggingface_hub keeps no part of a file between calls). Which hub:
huggingface_hub's own settings ($HF_ENDPOINT, $HF_TOKEN or a stored login, $HF_HUB_OFFLINE), or
`endpoint`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from backend.errors import Cancelled, UserError
from backend.model_folders import (
    PARTIAL_FOLDER,
    SOURCE_FILE,
    ModelFolder,
    check_hub_id,
    describe_model_folder,
    folder_name_for,
    folder_size,
    model_kind,
)

HUB_METADATA = ".cache"  # huggingface_hub's bookkeeping inside a local_dir download
PROGRESS_EVERY_S = 0.25

Progress = Callable[[int, int], None]  # bytes on disk, bytes in all


def _hub_problem(repo_id: str, exc: Exception) -> UserError:
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return UserError(f"{repo_id} is gated on the hub: its licence must be accepted first.", "Accept it on the model's hub page, then give a token (HF_TOKEN).")
    if isinstance(exc, RepositoryNotFoundError):
        return UserError(f"the hub has no model {repo_id} (or it is private).", "Check the id; for a private model give a token (HF_TOKEN).")
    if isinstance(exc, RevisionNotFoundError):
        return UserError(f"{repo_id} has no such revision.", "Give a branch, tag or commit of it, or none for main.")
    if isinstance(exc, OfflineModeIsEnabled):
        return UserError("downloads are switched off (HF_HUB_OFFLINE is set).", "Unset HF_HUB_OFFLINE, or install models from an offline bundle.")
    return UserError(f"the download of {repo_id} stopped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
                     "Check the network (or the proxy), then download again: the files that arrived are kept.")


class _Watch:
    """huggingface_hub's progress bars, silenced, used as a heartbeat: each chunk it writes asks
    whether to stop (raising Cancelled out of the download, which keeps the part written) and,
    now and then, reports the bytes on disk."""

    def __init__(self, staging: Path, total: int, on_progress: Progress | None, should_stop: Callable[[], bool] | None):
        self.staging, self.total, self.on_progress, self.should_stop = staging, total, on_progress, should_stop
        self.lock = threading.Lock()
        self.last = 0.0

    def beat(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("the download was cancelled; the files that arrived are kept for the next download")
        now = time.monotonic()
        with self.lock:
            if now - self.last < PROGRESS_EVERY_S:
                return
            self.last = now
        self.report()

    def report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(folder_size(self.staging), self.total), self.total)

    def bar_class(self):
        from huggingface_hub.utils import tqdm as hub_tqdm

        watch = self

        class SilentBar(hub_tqdm):
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def update(self, n=1):
                watch.beat()
                return super().update(n)

        return SilentBar


def _repository(repo_id: str, revision: str | None, token: str | None, endpoint: str | None) -> tuple[str, dict[str, int]]:
    """The commit the revision stands for and the repository's files with their sizes."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    info = api.model_info(repo_id, revision=revision)
    files = {entry.path: int(entry.size or 0) for entry in api.list_repo_tree(repo_id, revision=info.sha, recursive=True) if isinstance(entry, RepoFile)}
    return str(info.sha), files


def _check_model_files(repo_id: str, files: dict[str, int], staging: Path, fetch_config: Callable[[], None]) -> None:
    """Refuse a repository without a Qwen2.5-VL checkpoint or adapter at its top, from the list
    of files and config.json alone."""
    if "adapter_config.json" in files:
        return
    if "config.json" not in files:
        raise UserError(f"{repo_id} holds no model (no config.json at its top).", "Give the id of a Qwen2.5-VL checkpoint such as Qingyun/RSCoVLM-7B-2512.")
    fetch_config()
    try:
        model_type = json.loads((staging / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "qwen2_5_vl":
        raise UserError(f"{repo_id} is not a Qwen2.5-VL checkpoint (its config.json says model_type {model_type!r}).",
                        "Give the id of an RSCoVLM or Qwen2.5-VL checkpoint, e.g. Qingyun/RSCoVLM-7B-2512.")
    if not any(name.endswith((".safetensors", ".bin")) and "/" not in name for name in files):
        raise UserError(f"{repo_id} has a config.json but no weights at its top.", "Give the id of a complete checkpoint.")


def download_model(
    repo_id: str,
    root: Path,
    revision: str | None = None,
    token: str | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    endpoint: str | None = None,
    max_workers: int = 4,
) -> ModelFolder:
    """Download `repo_id` into `root/<owner--name>` and describe it. Raises UserError (nothing
    listed; a part downloaded stays to resume) or Cancelled."""
    from huggingface_hub import hf_hub_download, snapshot_download

    repo_id = check_hub_id(repo_id)
    name = folder_name_for(repo_id)
    target, staging = root / name, root / PARTIAL_FOLDER / name
    if target.exists():
        raise UserError(f"{target} exists already.", "Use it, or delete it in the Models list first to download it again.")
    try:
        commit, files = _repository(repo_id, revision, token, endpoint)
    except Exception as exc:  # noqa: BLE001 - the hub's and the network's errors, said as one line
        raise _hub_problem(repo_id, exc) from None
    total = sum(files.values())
    staging.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(staging).free
    if total - folder_size(staging) > free:
        raise UserError(f"{repo_id} needs {total / 2**30:.1f} GiB and {root} has {free / 2**30:.1f} GiB free.", "Free some space or choose another models folder.")
    watch = _Watch(staging, total, on_progress, should_stop)
    options = {"revision": commit, "local_dir": staging, "token": token, "endpoint": endpoint}
    fresh = not any(path.name != HUB_METADATA for path in staging.iterdir())
    try:
        _check_model_files(repo_id, files, staging, lambda: hf_hub_download(repo_id, "config.json", tqdm_class=watch.bar_class(), **options))
        snapshot_download(repo_id, tqdm_class=watch.bar_class(), max_workers=max_workers, **options)
    except (UserError, Cancelled) as exc:
        if isinstance(exc, UserError) and fresh:
            shutil.rmtree(staging, ignore_errors=True)  # refused before anything of it was worth keeping
        raise
    except Exception as exc:  # noqa: BLE001
        raise _hub_problem(repo_id, exc) from None
    shutil.rmtree(staging / HUB_METADATA, ignore_errors=True)
    if model_kind(staging) is None:
        raise UserError(f"{repo_id} downloaded, but what arrived is no Qwen2.5-VL checkpoint or adapter.", f"Look into {staging}, then delete it.")
    source = {"repo_id": repo_id, "revision": commit, "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (staging / SOURCE_FILE).write_text(json.dumps(source, indent=1), encoding="utf-8")
    watch.report()
    os.replace(staging, target)
    described = describe_model_folder(target)
    assert described is not None
    return described
