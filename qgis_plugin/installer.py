"""Builds the backend's environment from QGIS alone: a virtual environment in the user's data
folder (never inside the plugin folder, which QGIS replaces on update), with the PyTorch build
that fits the machine, and the backend that ships with this exact plugin version.

    python3 -m rscovlm_qgis.installer --prefix DIR [--bundle DIR] [--torch auto|cpu|cu126|cu128|cu130] [--python PATH]

Its last line on stdout is the path of the installed `rscovlm` command. Online it installs
PyTorch from PyTorch's index for the chosen build and the backend's other requirements from
PyPI; with --bundle (`make bundle`: every wheel for one platform and Python, torch included) it
installs with no network at all. The environment is built in a temporary folder beside DIR and
renamed to DIR when it works, so a half-built environment is never left as if it worked.

What depends on the platform (which Python to build from, where a venv keeps its programs, which
PyTorch build) are pure functions of what they are told, so they are tested on every platform's
plan; the steps run through `subprocess`. Standard library only: this runs in QGIS's Python,
before any backend exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .environment import clean_environment


def _plugin_version() -> str:
    """metadata.txt's version (in the installed plugin's folder; the repository's root when run
    from a checkout): the backend wheel shipped with the plugin has the same."""
    here = Path(__file__).resolve().parent
    for metadata in (here / "metadata.txt", here.parent / "metadata.txt"):
        if metadata.is_file():
            found = re.search(r"^version=(\S+)", metadata.read_text(encoding="utf-8"), re.MULTILINE)
            if found:
                return found.group(1)
    raise RuntimeError(f"no metadata.txt with a version beside {here}")


PLUGIN_VERSION = _plugin_version()
LOG_FILE = "install.log"  # beside the environment: Copy diagnostics quotes its end
BACKEND_WHEEL = f"rscovlm_qgis-{PLUGIN_VERSION}-py3-none-any.whl"
BACKEND_WHEEL_FOLDER = "backend_wheel"  # in the plugin folder (make package puts it there)
TORCH_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1")  # the pair the backend is tested with
TORCH_INDEX = "https://download.pytorch.org/whl/"
# PyTorch's CUDA builds of that release, newest first, each with the lowest NVIDIA driver its CUDA
# toolkit runs on (the toolkits' release notes, Linux drivers; Windows ones are a few builds
# higher and are caught by the check after installing).
CUDA_BUILDS = (("cu130", (580, 65)), ("cu128", (570, 26)), ("cu126", (560, 28)))
TORCH_CHOICES = ("auto", "cpu", "default") + tuple(name for name, _ in CUDA_BUILDS)
BUNDLE_MANIFEST = "bundle.json"
INSTALLED_FILE = "rscovlm-install.json"  # in DIR: what was installed; its presence says DIR is ours
# Free space a PyTorch build with the backend's other requirements needs (Linux x86_64, Python
# 3.11): its wheels, as a bundle holds them (the CUDA build measured at 3.0 GiB), and installed,
# with pip's unpacked wheels on top at the peak (the CUDA build takes about 5.5 GB installed, the
# CPU build under 2 GB).
WHEELS_BYTES = {"cuda": 4 * 2**30, "cpu": 1 * 2**30}
INSTALL_BYTES = {"cuda": 9 * 2**30, "cpu": 3 * 2**30}


class InstallError(Exception):
    """One line saying what went wrong and what to do."""


@dataclass(frozen=True)
class TorchBuild:
    name: str  # cpu, cu126, ..., or default (PyPI's, e.g. on Apple silicon)
    reason: str

    @property
    def index_url(self) -> str | None:
        return None if self.name == "default" else TORCH_INDEX + self.name


def size_class(torch_build: str, system: str) -> str:
    """The key of WHEELS_BYTES and INSTALL_BYTES for a PyTorch build: PyPI's default build is a
    CUDA one on Linux and Windows."""
    return "cuda" if torch_build.startswith("cu") or (torch_build == "default" and system != "Darwin") else "cpu"


@dataclass(frozen=True)
class Step:
    description: str
    argv: tuple[str, ...]


def driver_version(nvidia_smi_output: str) -> tuple[int, int] | None:
    """The driver version `nvidia-smi --query-gpu=driver_version --format=csv,noheader` printed
    (one line per GPU), or None."""
    match = re.search(r"(\d+)\.(\d+)", nvidia_smi_output or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose_torch(system: str, machine: str, driver: tuple[int, int] | None, choice: str = "auto") -> TorchBuild:
    """The PyTorch build for a machine: the user's choice, else the newest CUDA build the NVIDIA
    driver runs, the default build on macOS (Metal on Apple silicon), the CPU build otherwise."""
    if choice not in TORCH_CHOICES:
        raise InstallError(f"unknown PyTorch build {choice!r}: use one of {', '.join(TORCH_CHOICES)}.")
    if choice != "auto":
        return TorchBuild(choice, "chosen")
    if system == "Darwin":
        return TorchBuild("default", "macOS: PyPI's build (Metal on Apple silicon)" if machine == "arm64" else "macOS: PyPI's build")
    if driver is not None:
        for name, lowest in CUDA_BUILDS:
            if driver >= lowest:
                return TorchBuild(name, f"NVIDIA driver {driver[0]}.{driver[1]:02d}")
        return TorchBuild("cpu", f"NVIDIA driver {driver[0]}.{driver[1]:02d} is older than any CUDA build needs ({CUDA_BUILDS[-1][1][0]}+)")
    return TorchBuild("cpu", "no NVIDIA driver found")


def venv_program(prefix: Path, name: str, system: str) -> Path:
    """A program of a virtual environment: Scripts\\name.exe on Windows, bin/name elsewhere."""
    return prefix / "Scripts" / f"{name}.exe" if system == "Windows" else prefix / "bin" / name


def base_python_candidates(system: str, executable: str, exec_prefix: str) -> list[Path]:
    """Where QGIS's own Python may be: inside QGIS `sys.executable` is often QGIS itself (Windows,
    macOS), so the interpreter is looked for beside its prefix first."""
    candidates = []
    if Path(executable).name.lower().startswith("python"):
        candidates.append(Path(executable))
    if system == "Windows":
        candidates.append(Path(exec_prefix) / "python.exe")
    else:
        candidates += [Path(exec_prefix) / "bin" / "python3", Path("/usr/bin/python3")]
    return list(dict.fromkeys(candidates))


def install_plan(staging: Path, python: Path, torch: TorchBuild, backend_wheel: Path, system: str, wheels: Path | None = None) -> list[Step]:
    """The commands that build the environment in `staging`. `wheels`: a bundle's wheel folder,
    the only source then (no index at all)."""
    pip = (str(venv_program(staging, "python", system)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input")
    source = ("--no-index", "--find-links", str(wheels)) if wheels is not None else ()
    torch_source = source or (("--index-url", torch.index_url) if torch.index_url else ())
    check = "import backend, torch; print(f'rscovlm {backend.__version__}, torch {torch.__version__}, CUDA {torch.cuda.is_available()}')"
    return [
        Step("creating the environment", (str(python), "-m", "venv", str(staging))),
        Step(f"installing PyTorch ({torch.name})", pip + torch_source + TORCH_REQUIREMENTS),
        Step("installing the backend", pip + source + (str(backend_wheel),)),
        Step("checking that it loads", (str(venv_program(staging, "python", system)), "-c", check)),
    ]


def relink_plan(prefix: Path, backend_wheel: Path, system: str) -> Step:
    """After the rename: programs pip wrote (the `rscovlm` launcher) name the folder they were
    built in, so the backend is installed once more, without its requirements, to write them
    for the final place."""
    return Step("writing the rscovlm command", (str(venv_program(prefix, "python", system)), "-m", "pip", "install", "--disable-pip-version-check",
                                                "--no-input", "--no-index", "--no-deps", "--force-reinstall", str(backend_wheel)))


def proxy_url(enabled: bool, host: str, port: int, user: str = "", password: str = "", kind: str = "HttpProxy") -> str | None:
    """QGIS's network proxy (Settings > Options > Network) as a URL for pip, or None."""
    if not enabled or not host or kind not in ("HttpProxy", "HttpCachingProxy", "DefaultProxy"):
        return None
    from urllib.parse import quote

    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    return f"http://{credentials}{host}:{port}" if port else f"http://{credentials}{host}"


def read_bundle(folder: Path, python: tuple[int, int], platform_tag: str) -> dict:
    """A bundle's manifest, refused when it was made for another platform or Python."""
    manifest_path = folder / BUNDLE_MANIFEST
    if not manifest_path.is_file():
        raise InstallError(f"{folder} is not an offline bundle (no {BUNDLE_MANIFEST}): give the folder `make bundle` wrote, unzipped.")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    wanted = f"{python[0]}.{python[1]}"
    if manifest.get("platform") != platform_tag or manifest.get("python") != wanted:
        raise InstallError(f"{folder} was made for {manifest.get('platform')} with Python {manifest.get('python')}, this is {platform_tag} "
                           f"with Python {wanted}: make a bundle on (or for) this platform.")
    if manifest.get("plugin_version") != PLUGIN_VERSION:
        raise InstallError(f"{folder} holds backend {manifest.get('plugin_version')}, this plugin is {PLUGIN_VERSION}: use the bundle of this version.")
    if not (folder / "wheels" / BACKEND_WHEEL).is_file():
        raise InstallError(f"{folder}/wheels has no {BACKEND_WHEEL}: the bundle is incomplete; make it again.")
    return manifest


def check_target(prefix: Path) -> None:
    """DIR is new, empty, or an earlier environment of this installer (replaced at the end)."""
    if prefix.exists() and (not prefix.is_dir() or (any(prefix.iterdir()) and not (prefix / INSTALLED_FILE).is_file())):
        raise InstallError(f"{prefix} exists and is not a backend environment this installer made: give a new or empty folder.")


def check_disk(folder: Path, needed: int, what: str = "the backend") -> None:
    """Refused before anything is written, rather than pip failing halfway on a full disk."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InstallError(f"{free / 2**30:.1f} GiB free in {folder}, {what} needs about {needed / 2**30:.0f} GiB: free some space or "
                           "choose another folder.")


Log = Callable[[str], None]


def run_step(step: Step, environment: dict, log: Log, should_stop: Callable[[], bool] | None = None) -> None:
    """One command, its output line by line into the log; stopped when `should_stop()` turns true."""
    log(f"== {step.description}: {' '.join(step.argv)}")
    process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, bufsize=1)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        log(line.rstrip())
        tail = (tail + [line.rstrip()])[-5:]
        if should_stop is not None and should_stop():
            process.terminate()
            process.wait()
            raise InstallError("cancelled; nothing was installed.")
    if process.wait() != 0:
        raise InstallError(f"{step.description} failed (exit {process.returncode}): {' / '.join(t for t in tail if t)[-400:]}. "
                           "The installer's log has the whole output.")


def pip_environment(proxy: str | None, offline: bool) -> dict:
    """The user's environment without QGIS's, and without pip settings of the machine when
    offline (a bundle is the only source)."""
    environment = clean_environment(dict(os.environ))
    if offline:
        environment = {k: v for k, v in environment.items() if not k.upper().startswith("PIP_")}
        environment["PIP_CONFIG_FILE"] = os.devnull
    if proxy:
        environment["HTTP_PROXY"] = environment["HTTPS_PROXY"] = proxy
    return environment


def find_base_python(candidates: Sequence[Path], environment: dict) -> Path:
    """The first candidate that can make a virtual environment with pip in it."""
    for candidate in candidates:
        if candidate.is_file():
            probe = subprocess.run([str(candidate), "-c", "import venv, ensurepip"], env=environment, capture_output=True)
            if probe.returncode == 0:
                return candidate
    raise InstallError(f"no Python that can make a virtual environment (tried {', '.join(map(str, candidates))}): on Debian/Ubuntu "
                       "install python3-venv; or give --python.")


def install(prefix: Path, backend_wheel: Path, torch_choice: str = "auto", bundle: Path | None = None, python: Path | None = None,
            proxy: str | None = None, log: Log = print, should_stop: Callable[[], bool] | None = None,
            on_step: Callable[[int, int, str], None] | None = None, models_dir: Path | None = None) -> Path:
    """Build the environment; returns its `rscovlm` command. `on_step(number, total, what)` is
    told as each step starts. A bundle's model folders go into `models_dir` when it is given."""
    system = platform.system()
    prefix = prefix.expanduser().resolve()
    check_target(prefix)
    wheels = None
    if bundle is not None:
        manifest = read_bundle(bundle, sys.version_info[:2], sysconfig.get_platform())
        wheels, backend_wheel = bundle / "wheels", bundle / "wheels" / BACKEND_WHEEL
        torch = TorchBuild(manifest["torch"], "the bundle's")
    else:
        if not backend_wheel.is_file():
            raise InstallError(f"the plugin has no backend to install ({backend_wheel} is missing): reinstall the plugin from its zip.")
        torch = choose_torch(system, platform.machine(), driver_version(_nvidia_smi()), torch_choice)
    log(f"PyTorch build: {torch.name} ({torch.reason})")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    check_disk(prefix.parent, INSTALL_BYTES[size_class(torch.name, system)])
    environment = pip_environment(proxy, wheels is not None)
    base = python or find_base_python(base_python_candidates(system, sys.executable, sys.exec_prefix), environment)
    staging = prefix.with_name(f".{prefix.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        steps = install_plan(staging, base, torch, backend_wheel, system, wheels)
        for number, step in enumerate(steps, start=1):
            if on_step is not None:
                on_step(number, len(steps) + 1, step.description)
            run_step(step, environment, log, should_stop)
        (staging / INSTALLED_FILE).write_text(json.dumps({"plugin_version": PLUGIN_VERSION, "torch": torch.name, "offline": wheels is not None,
                                                          "python": str(base), "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
        if prefix.exists():
            old = prefix.with_name(f".{prefix.name}.old-{os.getpid()}")
            prefix.rename(old)
            staging.rename(prefix)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(prefix)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    relink = relink_plan(prefix, backend_wheel, system)
    if on_step is not None:
        on_step(len(steps) + 1, len(steps) + 1, relink.description)
    run_step(relink, environment, log)
    if bundle is not None and models_dir is not None:
        copy_bundled_models(bundle, models_dir, log)
    command = venv_program(prefix, "rscovlm", system)
    log(f"installed: {command}")
    return command


def copy_bundled_models(bundle: Path, models_dir: Path, log: Log = print) -> list[Path]:
    """The bundle's model folders into the models folder the backend lists, each copied beside
    it under a temporary name and renamed when whole; one already there is kept as it is."""
    copied = []
    for model in sorted((bundle / "models").iterdir()) if (bundle / "models").is_dir() else []:
        target = models_dir / model.name
        if target.exists():
            log(f"model {model.name}: kept the one in {models_dir}")
            continue
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = models_dir / f".{model.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(model, staging)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"model {model.name}: copied into {models_dir}")
        copied.append(target)
    return copied


def _nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def shipped_backend_wheel() -> Path:
    return Path(__file__).resolve().parent / BACKEND_WHEEL_FOLDER / BACKEND_WHEEL


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m rscovlm_qgis.installer", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=Path, required=True, help="the environment's folder (new, empty, or an earlier one to replace)")
    parser.add_argument("--bundle", type=Path, help="an offline bundle folder (make bundle): installs with no network")
    parser.add_argument("--torch", default="auto", choices=TORCH_CHOICES, help="PyTorch build (default: from the NVIDIA driver)")
    parser.add_argument("--python", type=Path, help="the Python to build from (default: QGIS's own)")
    parser.add_argument("--proxy", help="http://[user:password@]host:port for pip")
    parser.add_argument("--models-dir", type=Path, help="where the bundle's model folders go (the folder `rscovlm serve --models-dir` lists)")
    args = parser.parse_args(argv)
    try:
        command = install(args.prefix, shipped_backend_wheel(), args.torch, args.bundle, args.python, args.proxy,
                          log=lambda line: print(line, file=sys.stderr, flush=True), models_dir=args.models_dir)
    except InstallError as exc:
        print(f"rscovlm installer: error: {exc}", file=sys.stderr)
        return 2
    print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
