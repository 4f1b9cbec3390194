"""Install backend... (qgis_plugin/installer.py): the platform parts as plans, every platform's;
then the Linux path for real: an offline bundle (`make bundle`'s module), the headless installer
run by QGIS's own Python from it with no index and no pip settings, and a detection through the
plugin against the backend it installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qgis_plugin.bundle import make_bundle
from qgis_plugin.client import BackendClient
from qgis_plugin.installer import (
    BACKEND_WHEEL,
    INSTALL_BYTES,
    INSTALLED_FILE,
    PLUGIN_VERSION,
    WHEELS_BYTES,
    InstallError,
    TorchBuild,
    base_python_candidates,
    check_target,
    choose_torch,
    driver_version,
    install_plan,
    proxy_url,
    read_bundle,
    size_class,
    venv_program,
)

from .conftest import REPO, backend_tool, wait_until

QGIS_PYTHON = Path("/usr/bin/python3")  # Debian's QGIS runs this one


def test_the_torch_build_follows_the_driver():
    assert driver_version("580.82.07\n580.82.07\n") == (580, 82)  # one line per GPU
    assert driver_version("NVIDIA-SMI has failed") is None and driver_version("") is None
    assert choose_torch("Linux", "x86_64", (580, 82)).name == "cu130"
    assert choose_torch("Windows", "AMD64", (572, 16)).name == "cu128"
    assert choose_torch("Linux", "x86_64", (565, 57)).name == "cu126"
    old = choose_torch("Linux", "x86_64", (535, 183))
    assert old.name == "cpu" and "535.183" in old.reason and "older" in old.reason
    assert choose_torch("Linux", "x86_64", None).name == "cpu" and choose_torch("Windows", "AMD64", None).name == "cpu"
    mac = choose_torch("Darwin", "arm64", None)
    assert mac.name == "default" and mac.index_url is None and "Metal" in mac.reason
    assert choose_torch("Linux", "x86_64", (580, 82), "cpu").name == "cpu"  # the user's choice wins
    assert TorchBuild("cu128", "").index_url == "https://download.pytorch.org/whl/cu128"
    with pytest.raises(InstallError, match="cu999"):
        choose_torch("Linux", "x86_64", None, "cu999")


def test_plans_for_windows_and_linux(tmp_path):
    wheel = tmp_path / BACKEND_WHEEL
    windows = install_plan(Path("C:/Users/a/AppData/Roaming/rscovlm/.env.partial"), Path("C:/OSGeo4W/apps/Python312/python.exe"),
                           TorchBuild("cu128", ""), wheel, "Windows")
    assert windows[0].argv[1:3] == ("-m", "venv")
    python = str(Path("C:/Users/a/AppData/Roaming/rscovlm/.env.partial/Scripts/python.exe"))
    assert [s.argv[0] for s in windows[1:]] == [python] * 3
    assert windows[1].argv[-4:] == ("--index-url", "https://download.pytorch.org/whl/cu128", "torch==2.14.1", "torchvision==0.29.1")
    assert windows[2].argv[-1] == str(wheel)
    offline = install_plan(Path("/e"), Path("/usr/bin/python3"), TorchBuild("default", ""), wheel, "Linux", wheels=Path("/b/wheels"))
    for step in offline[1:3]:  # every install from the bundle's wheels alone
        assert step.argv[0] == "/e/bin/python" and "--no-index" in step.argv and "--index-url" not in step.argv
        assert step.argv[step.argv.index("--find-links") + 1] == "/b/wheels"
    assert venv_program(Path("/e"), "rscovlm", "Linux") == Path("/e/bin/rscovlm")
    assert venv_program(Path("C:/e"), "rscovlm", "Windows") == Path("C:/e/Scripts/rscovlm.exe")
    # inside QGIS, sys.executable is QGIS itself on Windows and macOS
    assert base_python_candidates("Windows", "C:/OSGeo4W/bin/qgis-bin.exe", "C:/OSGeo4W/apps/Python312")[0] == Path("C:/OSGeo4W/apps/Python312/python.exe")
    assert base_python_candidates("Darwin", "/Applications/QGIS.app/Contents/MacOS/QGIS", "/Applications/QGIS.app/Contents/Frameworks")[0] == \
        Path("/Applications/QGIS.app/Contents/Frameworks/bin/python3")


def test_proxy_from_qgis_settings():
    assert proxy_url(True, "proxy.example", 3128) == "http://proxy.example:3128"
    assert proxy_url(True, "proxy.example", 8080, "ann", "p@ss:word") == "http://ann:p%40ss%3Aword@proxy.example:8080"
    assert proxy_url(False, "proxy.example", 3128) is None and proxy_url(True, "", 3128) is None
    assert proxy_url(True, "socks.example", 1080, kind="Socks5Proxy") is None  # pip speaks HTTP proxies only


def _bundle(folder: Path, **changes) -> Path:
    (folder / "wheels").mkdir(parents=True, exist_ok=True)
    (folder / "wheels" / BACKEND_WHEEL).write_bytes(b"")
    manifest = {"platform": "linux-x86_64", "python": "3.11", "plugin_version": PLUGIN_VERSION, "torch": "default"} | changes
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


def test_a_bundle_for_another_machine_is_refused(tmp_path):
    assert read_bundle(_bundle(tmp_path / "ok"), (3, 11), "linux-x86_64")["torch"] == "default"
    with pytest.raises(InstallError, match="win-amd64 with Python 3.11, this is linux-x86_64"):
        read_bundle(_bundle(tmp_path / "win", platform="win-amd64"), (3, 11), "linux-x86_64")
    with pytest.raises(InstallError, match="Python 3.12"):
        read_bundle(_bundle(tmp_path / "py", python="3.12"), (3, 11), "linux-x86_64")
    with pytest.raises(InstallError, match="backend 0.0.9"):
        read_bundle(_bundle(tmp_path / "old", plugin_version="0.0.9"), (3, 11), "linux-x86_64")
    with pytest.raises(InstallError, match="not an offline bundle"):
        read_bundle(tmp_path, (3, 11), "linux-x86_64")
    incomplete = _bundle(tmp_path / "incomplete")
    (incomplete / "wheels" / BACKEND_WHEEL).unlink()
    with pytest.raises(InstallError, match="incomplete"):
        read_bundle(incomplete, (3, 11), "linux-x86_64")


def test_the_target_folder_is_checked(tmp_path):
    check_target(tmp_path / "new")
    check_target(tmp_path)  # empty
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InstallError, match="not a backend environment"):
        check_target(tmp_path)  # a folder of the user's is never replaced
    (tmp_path / INSTALLED_FILE).write_text("{}")
    check_target(tmp_path)  # an earlier environment of ours is


def test_a_disk_too_full_is_refused_before_anything_is_written(plugin_zip, tmp_path):
    model = tmp_path / "huge"  # a model folder larger than the disk holds, as a sparse file
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    with open(model / "model.safetensors", "wb") as weights:
        weights.truncate(shutil.disk_usage(tmp_path).free + 2**40)
    with pytest.raises(InstallError, match=r"GiB free in .*, the bundle needs about \d+ GiB: free some space or choose another folder"):
        make_bundle(tmp_path / "bundle", plugin_zip, [model], make_zip=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge"]  # no bundle, no partial folder
    assert size_class("default", "Linux") == "cuda" and size_class("default", "Darwin") == "cpu"


def _plugin_folder(plugin_zip: Path, into: Path) -> Path:
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(into)
    return into


def _run_installer(plugins: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(plugins)}
    return subprocess.run([str(QGIS_PYTHON), "-m", "rscovlm_qgis.installer", *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=plugins)


def test_bad_input_leaves_nothing(plugin_zip, tmp_path):
    plugins = _plugin_folder(plugin_zip, tmp_path / "plugins")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    refused = _run_installer(plugins, "--prefix", str(mine), "--bundle", str(_bundle(tmp_path / "b")))
    assert refused.returncode == 2 and "is not a backend environment" in refused.stderr and refused.stderr.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    other = _run_installer(plugins, "--prefix", str(tmp_path / "env"), "--bundle", str(_bundle(tmp_path / "w", platform="win-amd64")))
    assert other.returncode == 2 and "win-amd64" in other.stderr and not (tmp_path / "env").exists()


@pytest.fixture(scope="module")
def offline_install(plugin_zip, tiny_checkpoint, tmp_path_factory):
    """The bundle (plugin zip, wheels, the tiny checkpoint), then the environment installed from
    it by QGIS's Python; both removed afterwards (several GB)."""
    if not QGIS_PYTHON.is_file():
        pytest.skip(f"{QGIS_PYTHON} is absent")
    work = tmp_path_factory.mktemp("install")
    needed, free = WHEELS_BYTES["cuda"] + INSTALL_BYTES["cuda"], shutil.disk_usage(work).free  # the bundle, then the environment
    if free < needed:  # a machine's disk, not the code: the installers' own refusal is tested apart
        pytest.skip(f"{free / 2**30:.1f} GiB free in {work}, the bundle and the environment installed from it take about {needed / 2**30:.0f} GiB")
    bundle = work / "bundle"
    made = subprocess.run([str(backend_tool("python")), "-m", "qgis_plugin.bundle", "--out", str(bundle), "--plugin-zip", str(plugin_zip),
                           "--model", str(tiny_checkpoint), "--no-zip"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stderr[-3000:]
    plugins = _plugin_folder(bundle / plugin_zip.name, work / "plugins")
    installed = _run_installer(plugins, "--prefix", str(work / "env"), "--bundle", str(bundle), "--models-dir", str(work / "models"))
    try:
        yield bundle, installed, work / "env"
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_offline_install_from_a_bundle_then_detect_through_the_plugin(offline_install, controller, settings, provider, scene_tif, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer

    bundle, installed, prefix = offline_install
    assert installed.returncode == 0, installed.stderr[-3000:]
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["platform"] == "linux-x86_64" and manifest["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert BACKEND_WHEEL in manifest["wheels"] and any(w.startswith("torch-2.14.1") for w in manifest["wheels"])
    command = Path(installed.stdout.strip().splitlines()[-1])  # the last line names the command
    assert command == prefix / "bin" / "rscovlm" and command.is_file()
    assert "--no-index" in installed.stderr  # the log shows every pip call took the bundle alone
    assert json.loads((prefix / INSTALLED_FILE).read_text())["offline"] is True
    assert not [p for p in prefix.parent.iterdir() if ".partial" in p.name]
    models = prefix.parent / "models"  # the bundle's models were copied into the models folder
    assert sorted(p.name for p in models.iterdir()) == ["tiny-random"] and (models / "tiny-random" / "model.safetensors").is_file()
    settings.command = str(command)
    settings.model = str(models / "tiny-random")
    settings.models_folder = str(models)
    settings.save()
    controller.start_backend()
    wait_until(lambda: controller.states[-1][0] in ("running", "error"), 300, "the installed backend to start")
    assert controller.states[-1][0] == "running", controller.states[-1][1]
    out = tmp_path / "found.gpkg"
    result = processing.run("rscovlm:detect", {"INPUT": str(scene_tif), "CLASSES": "plane", "TILE_SIZE": 512, "OUTPUT": str(out)})
    layer = QgsVectorLayer(result["OUTPUT"], "found", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32633" and "label" in layer.fields().names()
    listed = BackendClient(controller.connection()).get("/models")  # the installed backend's Models list
    assert listed["folder"] == str(models) and [(m["name"], m["kind"], m["in_use"]) for m in listed["models"]] == [("tiny-random", "checkpoint", True)]
    controller.stop_backend()


@pytest.mark.slow
@pytest.mark.backend
def test_a_finished_install_sets_the_command_and_starts_the_backend(controller, settings, tiny_checkpoint, tmp_path):
    """What QGIS does when Install backend... ends well (the install itself runs for real above,
    headless): the installed command becomes the local backend's, and it is started."""
    from qgis_plugin.install_task import InstallBackendTask
    from qgis_plugin.settings import PluginSettings

    settings = PluginSettings.load()
    settings.mode, settings.model = "remote", str(tiny_checkpoint)  # connected elsewhere before the install
    settings.save()
    task = InstallBackendTask(tmp_path / "backend", "cpu", None, controller._install_finished)
    task.command = backend_tool("rscovlm")  # as the installer returns it
    controller.install_task = task
    task.finished(True)
    stored = PluginSettings.load()
    assert (stored.mode, stored.command) == ("local", str(task.command)) and controller.install_task is None
    wait_until(lambda: controller.backend.state == "running", 240, "the installed backend to start")
    controller.stop_backend()


def test_install_backend_in_qgis_says_why_it_failed(controller, settings, tmp_path, qgis_iface):
    from qgis_plugin.settings import PluginSettings

    from .conftest import bar_messages

    settings.backend_folder = str(tmp_path / "backend")
    settings.save()
    assert controller.install_backend("auto", str(_bundle(tmp_path / "for-windows", platform="win-amd64")))
    wait_until(lambda: controller.install_task is None, 120, "the installer task to end")
    text, level = bar_messages(qgis_iface)[-1]
    assert "Installing the backend failed" in text and "win-amd64" in text
    assert PluginSettings.load().command == "rscovlm"  # the command is set only by an install that worked
    assert not (tmp_path / "backend").exists()
    assert "error: " in controller.diagnostics() and "win-amd64" in controller.diagnostics().split("installer log")[1]


def test_qgis_proxy_settings_reach_pip(settings):
    from qgis.core import QgsSettings

    from qgis_plugin.install_task import qgis_proxy

    stored = QgsSettings()
    try:
        for key, value in {"proxyEnabled": True, "proxyHost": "proxy.example", "proxyPort": 3128, "proxyUser": "ann", "proxyPassword": "s3cret",
                           "proxyType": "HttpProxy"}.items():
            stored.setValue(f"proxy/{key}", value)
        assert qgis_proxy() == "http://ann:s3cret@proxy.example:3128"
        stored.setValue("proxy/proxyEnabled", False)
        assert qgis_proxy() is None
    finally:
        stored.remove("proxy")
