"""`rscovlm models list | download | delete`: the models folder as the plugin's Models list
shows it (backend.model_folders), downloads from the hub (backend.model_download)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.errors import UserError
from backend.model_folders import ModelFolder, default_models_dir, deletable_folder, delete_model_folder, list_model_folders


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list, download and delete the models the backend can use",
                                   description="The models folder: list its checkpoints and adapters, download one from the hub, delete one.")
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--models-dir", type=Path, help="the models folder (default: $RSCOVLM_MODELS_DIR, else rscovlm/models in the user's data folder)")

    listing = commands.add_parser("list", parents=[folder], help="the model folders, their size, kind and trained classes")
    listing.set_defaults(handler=run_list)

    download = commands.add_parser("download", parents=[folder], help="download a hub model into the models folder")
    download.add_argument("repo_id", help="hub id, e.g. Qingyun/RSCoVLM-7B-2512")
    download.add_argument("--revision", help="branch, tag or commit (default main)")
    download.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal anyway)")
    download.set_defaults(handler=run_download)

    delete = commands.add_parser("delete", parents=[folder], help="delete a model folder (or a stopped download) by its name")
    delete.add_argument("name", help="the name `rscovlm models list` shows")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.set_defaults(handler=run_delete)


def _folder(args: argparse.Namespace) -> Path:
    return (args.models_dir or default_models_dir()).expanduser()


def describe(model: ModelFolder) -> str:
    classes = ", ".join(model.classes[:6]) + (f" (+{len(model.classes) - 6})" if len(model.classes) > 6 else "")
    return f"{model.name}\t{model.kind}\t{model.size_bytes / 2**20:,.1f} MiB\t{classes or '-'}\t{model.path}"


def run_list(args: argparse.Namespace) -> int:
    root = _folder(args)
    found = list_model_folders(root)
    print(f"# {root}: {len(found)} model folder(s)", file=sys.stderr)
    for model in found:
        print(describe(model))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.model_download import download_model

    with tqdm(total=0, unit="B", unit_scale=True, desc=args.repo_id, file=sys.stderr, disable=True if args.no_progress else None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        model = download_model(args.repo_id, _folder(args), args.revision, on_progress=progress)
    print(describe(model))
    print(model.path)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    folder = deletable_folder(_folder(args), args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"deleting {folder} needs a yes.", "Pass --yes.")
        if input(f"Delete {folder}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept", file=sys.stderr)
            return 1
    delete_model_folder(folder)
    print(f"deleted {folder}", file=sys.stderr)
    return 0
