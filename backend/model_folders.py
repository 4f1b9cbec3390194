"""The model folders the backend can use: one data folder (`--models-dir`, else
$RSCOVLM_MODELS_DIR, else the user's data folder), each child a Qwen2.5-VL checkpoint or a LoRA
adapter, described for the Models list (size, kind, the classes it was trained to detect).

Downloads are built in `.downloading/<name>` inside it and renamed into place when complete, so
a folder listed here is always whole; a download cut off stays there and resumes. Deleting takes a
folder's name, never a path, and refuses anything that is not a model folder or a download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from backend.errors import UserError
from backend.model_defaults import read_declaration
from backend.prompts import DOTA_CLASSES

MODELS_DIR_VARIABLE = "RSCOVLM_MODELS_DIR"
SOURCE_FILE = "rscovlm-model.json"  # a download's hub id, revision and when, beside the checkpoint's files
PARTIAL_FOLDER = ".downloading"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def default_models_dir() -> Path:
    """$RSCOVLM_MODELS_DIR, else the platform's per-user data folder (never the plugin's or
    the environment's folder, which updates replace)."""
    explicit = os.environ.get(MODELS_DIR_VARIABLE, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "rscovlm" / "models"


@dataclass(frozen=True)
class ModelFolder:
    name: str
    path: str
    kind: str  # "checkpoint" | "adapter" | "partial" (a download that stopped before the end)
    size_bytes: int
    classes: tuple[str, ...]  # detection classes it was trained on; () when unknown (an adapter that declares none)
    source: str | None  # "hub-id@revision" for a download


def folder_name_for(repo_id: str) -> str:
    """The folder a hub id downloads into: owner--name, as the hub cache names repositories."""
    return repo_id.replace("/", "--")


def check_hub_id(repo_id: str) -> str:
    repo_id = repo_id.strip()
    if not HUB_ID.match(repo_id) or ".." in repo_id:
        raise UserError(f"{repo_id!r} is not a model id on the hub.", "Give it as owner/name, e.g. Qingyun/RSCoVLM-7B-2512.")
    return repo_id


def model_kind(folder: Path) -> str | None:
    """'checkpoint' for a Qwen2.5-VL checkpoint with its weights, 'adapter' for a LoRA adapter,
    None for anything else."""
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model_type") != "qwen2_5_vl":
        return None
    has_weights = any(path.suffix in WEIGHT_SUFFIXES for path in folder.iterdir() if path.is_file())
    return "checkpoint" if has_weights else None


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return total


def _source(folder: Path) -> str | None:
    try:
        data = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
        return f"{data['repo_id']}@{data['revision']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _classes(folder: Path, kind: str) -> tuple[str, ...]:
    try:
        declaration = read_declaration(folder)
    except UserError:
        declaration = None
    if declaration is not None and declaration[1]:
        return declaration[1]
    return DOTA_CLASSES if kind == "checkpoint" else ()


def describe_model_folder(folder: Path) -> ModelFolder | None:
    """The folder as the Models list shows it; None when it is no model."""
    kind = model_kind(folder) if folder.is_dir() else None
    if kind is None:
        return None
    return ModelFolder(folder.name, str(folder.resolve()), kind, folder_size(folder), _classes(folder, kind), _source(folder))


def list_model_folders(root: Path) -> list[ModelFolder]:
    """The models in `root`, then the downloads that stopped part way, each by name."""
    found: list[ModelFolder] = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            described = describe_model_folder(child)
            if described is not None:
                found.append(described)
    partial = root / PARTIAL_FOLDER
    if partial.is_dir():
        for child in sorted(partial.iterdir()):
            if child.is_dir():
                found.append(ModelFolder(child.name, str(child.resolve()), "partial", folder_size(child), (), None))
    return found


def deletable_folder(root: Path, name: str, in_use: tuple[str, ...] = ()) -> Path:
    """The folder named `name` in `root` (a model or a stopped download), once it is sure it is
    one and not a model the service is running. Raises UserError otherwise."""
    if not name or name != Path(name).name or name.startswith("."):
        raise UserError(f"{name!r} is not a model folder's name.", "Give the name the Models list shows, not a path.")
    for folder in (root / name, root / PARTIAL_FOLDER / name):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if folder.parent == root and model_kind(folder) is None:
            raise UserError(f"{folder} is not a model folder (no Qwen2.5-VL checkpoint or adapter in it).", "Delete it yourself if you mean to.")
        if any(Path(path).expanduser().resolve() == folder.resolve() for path in in_use if path):
            raise UserError(f"{name} is the model the backend is running.", "Pick another model and restart the backend first.")
        return folder
    raise UserError(f"there is no model {name!r} in {root}.", "See the Models list (GET /models, or rscovlm models list).")


def delete_model_folder(folder: Path) -> None:
    """Renamed out of the list first, so a delete that stops part way leaves no half model."""
    doomed = folder.parent / f".deleting-{folder.name}"
    os.replace(folder, doomed)
    shutil.rmtree(doomed)
