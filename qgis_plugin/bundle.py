"""An offline bundle (`make bundle`): one folder, and a zip of it, holding the plugin zip, every
wheel the backend needs for this platform and Python (PyTorch included), and model folders (the
demo checkpoint by default), so that Install backend... (or `python3 -m rscovlm_qgis.installer
--bundle DIR`) works on a machine with no network at all.

    python3 -m rscovlm_qgis.bundle --out DIR --plugin-zip dist/rscovlm_qgis.zip [--model FOLDER ...] [--torch default|cpu|cu126...] [--no-zip]

The wheels are for the Python that runs this (so run it with the Python the installer will
build from: QGIS's, or one of the same version on the same platform); its manifest says which,
and the installer refuses a bundle of another. Built in a temporary folder, renamed at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .installer import (
    BACKEND_WHEEL,
    BACKEND_WHEEL_FOLDER,
    BUNDLE_MANIFEST,
    PLUGIN_VERSION,
    TORCH_INDEX,
    TORCH_REQUIREMENTS,
    WHEELS_BYTES,
    InstallError,
    Step,
    check_disk,
    run_step,
    size_class,
)


def check_model_folder(folder: Path) -> None:
    """A folder to bundle is a Qwen2.5-VL checkpoint (what the backend loads), not just any folder."""
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        model_type = None
    if model_type != "qwen2_5_vl":
        raise InstallError(f"{folder} is not a Qwen2.5-VL checkpoint ({config} {'says ' + repr(model_type) if model_type else 'is missing or unreadable'}): "
                           "give a checkpoint folder such as resources/models/demo.")


def bundle_plan(staging: Path, backend_wheel: Path, torch: str, python: str = sys.executable) -> list[Step]:
    """pip collects the wheels: PyTorch's pair first (from PyTorch's index for a named build),
    then the backend with every requirement, which finds that pair among the collected wheels."""
    wheels = staging / "wheels"
    # No cache: the bundle is the copy to keep, a second one in pip's cache would double its size.
    pip = (python, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-input", "--no-cache-dir", "--wheel-dir", str(wheels))
    index = () if torch == "default" else ("--index-url", TORCH_INDEX + torch)
    return [
        Step(f"collecting PyTorch ({torch})", pip + index + TORCH_REQUIREMENTS),
        Step("collecting the backend and its requirements", pip + ("--find-links", str(wheels), str(backend_wheel))),
    ]


def plugin_backend_wheel(plugin_zip: Path, destination: Path) -> Path:
    """The backend wheel inside the plugin zip: the bundle installs exactly the plugin's backend."""
    member = f"rscovlm_qgis/{BACKEND_WHEEL_FOLDER}/{BACKEND_WHEEL}"
    with zipfile.ZipFile(plugin_zip) as archive:
        if member not in archive.namelist():
            raise InstallError(f"{plugin_zip} has no {member}: build the plugin zip with `make package`.")
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / BACKEND_WHEEL
        target.write_bytes(archive.read(member))
    return target


def make_bundle(out: Path, plugin_zip: Path, models: Sequence[Path], torch: str = "default", make_zip: bool = True, log=print) -> Path:
    out = out.resolve()
    if out.exists() and not (out / BUNDLE_MANIFEST).is_file():
        raise InstallError(f"{out} exists and is not a bundle: give a new folder (an earlier bundle there is replaced).")
    for model in models:
        check_model_folder(model)
    model_bytes = sum(f.stat().st_size for model in models for f in model.rglob("*") if f.is_file())
    out.parent.mkdir(parents=True, exist_ok=True)
    needed = WHEELS_BYTES[size_class(torch, platform.system())] + model_bytes
    check_disk(out.parent, 2 * needed if make_zip else needed, "the bundle")  # the zip is a second copy
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        backend_wheel = plugin_backend_wheel(plugin_zip, staging / "wheels")
        for step in bundle_plan(staging, backend_wheel, torch):
            run_step(step, {**_environment(), "PIP_NO_INPUT": "1"}, log)
        shutil.copy2(plugin_zip, staging / plugin_zip.name)
        for model in models:
            log(f"== copying model {model}")
            shutil.copytree(model, staging / "models" / model.name)
        manifest = {"platform": sysconfig.get_platform(), "python": f"{sys.version_info[0]}.{sys.version_info[1]}", "plugin_version": PLUGIN_VERSION,
                    "torch": torch, "plugin_zip": plugin_zip.name, "models": [m.name for m in models],
                    "wheels": sorted(p.name for p in (staging / "wheels").glob("*.whl"))}
        (staging / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if make_zip:
        partial = out.with_name(out.name + ".zip.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # wheels are compressed already
            for path in sorted(out.rglob("*")):
                archive.write(path, Path(out.name) / path.relative_to(out))
        partial.replace(out.with_name(out.name + ".zip"))
    return out


def _environment() -> dict:
    import os

    from .environment import clean_environment

    return clean_environment(dict(os.environ))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m rscovlm_qgis.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plugin-zip", type=Path, required=True, help="the plugin zip (make package), with its backend wheel")
    parser.add_argument("--model", type=Path, action="append", default=[], help="a model folder to include (repeatable)")
    parser.add_argument("--torch", default="default", help="PyTorch build: default (PyPI's), cpu, cu126, cu128, cu130")
    parser.add_argument("--no-zip", action="store_true", help="the folder only")
    args = parser.parse_args(argv)
    try:
        out = make_bundle(args.out, args.plugin_zip, args.model, args.torch, not args.no_zip, log=lambda line: print(line, file=sys.stderr, flush=True))
    except InstallError as exc:
        print(f"rscovlm bundle: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
