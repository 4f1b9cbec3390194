"""Fixtures for the plugin tests: the repository on the path (the plugin is imported as
`qgis_plugin`), settings and the backend's server file kept away from the user's own, and a real
`rscovlm serve` with the tiny random checkpoint, started from the backend's .venv."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKEND_BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(REPO))
# Nothing here may read or replace the user's ~/.config/rscovlm/server.json.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="rscovlm-plugin-tests-config-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test backends list and download models in a folder of their own, never the user's.
os.environ["RSCOVLM_MODELS_DIR"] = tempfile.mkdtemp(prefix="rscovlm-plugin-tests-models-")
# The test backends' training children at their own priority: on a busy test machine a niced fit
# waits for everyone else's work (tests/backend/server/test_training.py checks the niceness).
os.environ.setdefault("RSCOVLM_TRAINING_NICENESS", "0")

from qgis.core import QgsApplication, QgsSettings  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication  # noqa: E402

from qgis_plugin.client import Connection  # noqa: E402
from qgis_plugin.settings import PREFIX, PluginSettings  # noqa: E402

QGIS_ENVIRONMENT = {
    "PYTHONPATH": "/usr/share/qgis/python:/usr/lib/python3/dist-packages",
    "PYTHONHOME": "/usr",
    "LD_LIBRARY_PATH": "/usr/lib/qgis",
    "GDAL_DATA": "/usr/share/gdal",
    "GDAL_DRIVER_PATH": "/usr/lib/gdalplugins",
    "PROJ_LIB": "/usr/share/proj",
    "QGIS_PREFIX_PATH": "/usr",
    "CPL_DEBUG": "ON",
}  # as inside QGIS: must not reach the backend


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Let Qt run (tasks finish, queued signals arrive) until `predicate()` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def wait_for_tasks(timeout_s: float = 60.0) -> None:
    wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, timeout_s, "QGIS tasks to finish")


def bar_messages(iface) -> list[tuple[str, int]]:
    """(text, level) of every entry in the message bar."""
    return [(item.text(), int(item.level())) for item in iface.messageBar().items()]


def backend_tool(name: str) -> Path:
    path = BACKEND_BIN / name
    if not path.exists():
        pytest.skip(f"{path} is absent: run `make install` to create the backend's .venv")
    return path


def run_backend_module(*args: str) -> None:
    subprocess.run([str(backend_tool("python")), *args], cwd=REPO, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory) -> Path:
    """The zip `make package` builds, with the backend wheel in it."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-s", "package", f"PACKAGE_DIR={out}"], cwd=REPO, check=True, capture_output=True, timeout=300)
    return out / "rscovlm_qgis.zip"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-random"
    run_backend_module("-m", "training.scratch", "--out", str(path))
    # random weights never end an answer: the test model declares a short answer limit, or every
    # detection tile would run to the 4096-token default
    (path / "rscovlm_task_defaults.json").write_text(json.dumps({"max_new_tokens": 24}))
    return path


@pytest.fixture(scope="session")
def scene_tif(tmp_path_factory) -> Path:
    """A synthetic 1024 px scene in EPSG:32633 at 0.5 m."""
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    run_backend_module("-m", "training.synthetic", "--out", str(path), "--size", "1024")
    return path


@pytest.fixture(scope="session")
def later_scene_tif(scene_tif) -> Path:
    """The scene as another provider delivers it: reprojected to Web Mercator at about 0.8 m."""
    from osgeo import gdal

    path = scene_tif.with_name("scene-later-3857.tif")
    gdal.Warp(str(path), str(scene_tif), dstSRS="EPSG:3857", xRes=0.8, yRes=0.8, resampleAlg="bilinear")
    return path


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so a crashed run leaves no backend behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_serve(command: list[str], server_file: Path, timeout_s: float = 180.0) -> subprocess.Popen:
    server_file.unlink(missing_ok=True)
    log = server_file.with_suffix(".log")
    with log.open("w") as output:  # a file, not a pipe nobody reads: a full pipe would stall the backend
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not server_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"backend exited early: {log.read_text()}")
        time.sleep(0.1)
    if not server_file.exists():
        process.kill()
        raise RuntimeError(f"backend did not start within {timeout_s} s")
    return process


def stop_serve(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def backend(tiny_checkpoint, tmp_path_factory) -> Connection:
    """A real `rscovlm serve` with the tiny checkpoint on a free 127.0.0.1 port."""
    server_file = tmp_path_factory.mktemp("serve") / "server.json"
    command = [str(backend_tool("rscovlm")), "serve", "--model", str(tiny_checkpoint), "--port", "0", "--device", "cpu"]
    process = start_serve(command + ["--server-file", str(server_file)], server_file)
    data = json.loads(server_file.read_text())
    yield Connection(data["url"], data["token"], f"server file {server_file}")
    stop_serve(process)


@pytest.fixture(scope="session")
def demo_like_backend(tiny_checkpoint, tmp_path_factory) -> Connection:
    """`rscovlm serve` with a checkpoint that declares its training, as the bundled demo does
    (224 px tiles, a 448 px view budget, its own classes), with the tiny model's weights."""
    import shutil

    folder = tmp_path_factory.mktemp("models") / "declaring"
    shutil.copytree(tiny_checkpoint, folder)
    declared = {"max_pixels": 200704, "tile_size": 224, "tile_overlap": 64, "max_new_tokens": 24, "classes": ["building", "plane", "ship"]}
    (folder / "rscovlm_task_defaults.json").write_text(json.dumps(declared))
    server_file = tmp_path_factory.mktemp("serve-declaring") / "server.json"
    command = [str(backend_tool("rscovlm")), "serve", "--model", str(folder), "--port", "0", "--device", "cpu", "--batch-size", "8"]
    process = start_serve(command + ["--server-file", str(server_file)], server_file)
    data = json.loads(server_file.read_text())
    yield Connection(data["url"], data["token"], f"server file {server_file}")
    stop_serve(process)


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The `rscovlm` Processing provider, registered for a module's tests."""
    from qgis_plugin.provider import RSCoVLMProvider

    registry = QgsApplication.processingRegistry()
    provider = RSCoVLMProvider()
    assert registry.addProvider(provider)
    yield registry.providerById("rscovlm")
    registry.removeProvider(provider)


@pytest.fixture
def settings():
    """Plugin settings reset to their defaults for each test, and cleared after it."""
    stored = QgsSettings()
    stored.remove(PREFIX.rstrip("/"))
    yield PluginSettings()
    stored.remove(PREFIX.rstrip("/"))


@pytest.fixture
def use_backend(settings, backend) -> PluginSettings:
    """Settings that point the plugin at the test backend by URL and token."""
    settings.mode = "remote"
    settings.url = backend.url
    settings.token = backend.token
    settings.poll_interval_ms = 50
    settings.save()
    return settings


@pytest.fixture
def clean_bar(qgis_iface):
    qgis_iface.messageBar().clearWidgets()
    yield qgis_iface
    qgis_iface.messageBar().clearWidgets()


@pytest.fixture(scope="session")
def scripted_backend(tmp_path_factory) -> Connection:
    """The real service with a model that answers two boxes per view, slowly (see scripted_backend.py)."""
    server_file = tmp_path_factory.mktemp("scripted") / "server.json"
    process = start_serve([str(backend_tool("python")), "-m", "tests.plugin.scripted_backend", str(server_file)], server_file)
    data = json.loads(server_file.read_text())
    yield Connection(data["url"], data["token"], f"server file {server_file}")
    stop_serve(process)


@pytest.fixture(scope="session")
def realdata() -> Path:
    folder = Path(os.environ.get("RSCOVLM_REALDATA", REPO.parent / "shared" / "realdata"))
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set RSCOVLM_REALDATA or check out ../shared)")
    return folder


@pytest.fixture
def controller(qgis_iface, qgis_new_project, clean_bar, settings, tmp_path, monkeypatch):
    """The plugin's controller, in an environment like QGIS's own."""
    from qgis_plugin.controller import Controller

    for name, value in QGIS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    settings.server_file = str(tmp_path / "server.json")
    settings.device = "cpu"
    settings.save()
    controller = Controller(qgis_iface)
    states = []
    controller.status_changed.connect(lambda state, text: states.append((state, text)))
    controller.states = states
    yield controller
    controller.unload()
