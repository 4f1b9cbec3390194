"""The plugin starts and stops a local backend as a child process with a clean environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtWidgets import QPushButton

from qgis_plugin.client import BackendClient, resolve_connection
from qgis_plugin.environment import clean_environment
from qgis_plugin.process import serve_command
from qgis_plugin.settings import PluginSettings

from .conftest import QGIS_ENVIRONMENT, backend_tool, bar_messages, wait_until


def test_clean_environment_strips_what_qgis_set():
    kept = {"HOME": "/home/me", "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0", "HF_HOME": "/data/hf", "XDG_CONFIG_HOME": "/c"}
    assert clean_environment({**kept, **QGIS_ENVIRONMENT}) == kept


def test_serve_command_for_a_command_or_a_python():
    settings = PluginSettings(command="conda run -n rs rscovlm", model="Qingyun/RSCoVLM-7B-2512", adapter="/a b/lora", quantize="4bit", device="cuda",
                              models_folder="/data/models")
    command = serve_command(settings, "/tmp/server.json")
    assert command[:5] == ["conda", "run", "-n", "rs", "rscovlm"]
    assert command[5:] == [
        "serve", "--host", "127.0.0.1", "--port", "0", "--server-file", "/tmp/server.json", "--model", "Qingyun/RSCoVLM-7B-2512",
        "--adapter", "/a b/lora", "--device", "cuda", "--quantize", "4bit", "--batch-size", "4", "--models-dir", "/data/models",
    ]  # fmt: skip
    python = serve_command(PluginSettings(command="/opt/env/bin/python3.11"), "/s.json")
    assert python[:2] == ["/opt/env/bin/python3.11", "-c"] and "from backend.cli import main" in python[2] and python[3] == "serve"
    assert "--model" not in python
    # by default the models live in the QGIS profile folder, beside the backend Install backend... builds
    assert python[python.index("--models-dir") + 1] == str(Path(QgsApplication.qgisSettingsDirPath()) / "rscovlm" / "models")




@pytest.mark.slow
@pytest.mark.backend
@pytest.mark.parametrize("launcher", ["rscovlm", "python"])
def test_start_use_and_stop(controller, settings, tiny_checkpoint, launcher):
    settings.command = str(backend_tool(launcher))
    settings.model = str(tiny_checkpoint)
    settings.save()
    controller.start_backend()
    assert controller.backend.state == "starting" and controller.states[-1][0] == "starting"
    wait_until(lambda: controller.states[-1][0] in ("running", "error"), 180, "the backend to start")
    state, text = controller.states[-1]
    assert state == "running", text
    assert str(tiny_checkpoint) in text and "cpu" in text and "GiB" in text
    # The server file names it, so Processing and scripts reach the same backend.
    connection = resolve_connection(PluginSettings.load())
    assert connection.token == controller.backend.connection.token
    assert BackendClient(connection).get("/health")["status"] == "ok"
    assert json.loads(Path(settings.server_file).read_text())["url"] == controller.backend.connection.url
    pid = controller.backend.process.processId()
    controller.stop_backend()
    assert controller.backend.state == "stopped"
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not Path(settings.server_file).exists()
    wait_until(lambda: controller.states[-1][0] == "stopped", 20, "the status to say stopped")


@pytest.mark.backend
def test_a_backend_that_refuses_its_model(controller, settings, tmp_path):
    settings.command = str(backend_tool("rscovlm"))
    settings.model = str(tmp_path)  # an empty folder is no checkpoint
    settings.save()
    controller.start_backend()
    wait_until(lambda: controller.states[-1][0] == "error", 120, "the backend to give up")
    text = controller.states[-1][1]
    assert text.startswith("The local backend exited before it was ready (exit status 2): rscovlm: error:")
    assert str(tmp_path) in text
    [(message, level)] = bar_messages(controller.iface)
    assert message == text and level == int(Qgis.MessageLevel.Critical)
    assert controller.backend.state == "stopped"
    assert any(line.startswith("rscovlm: error:") for line in controller.backend.lines)
    assert "rscovlm: error:" in controller.diagnostics()


def test_a_command_that_does_not_exist(controller, settings, tmp_path):
    settings.command = str(tmp_path / "no-such-rscovlm")
    settings.save()
    controller.start_backend()
    wait_until(lambda: controller.states and controller.states[-1][0] == "error", 20, "the start to fail")
    assert "could not be started" in controller.states[-1][1]
    assert controller.backend.state == "stopped"
    # the message says to fix the command in the settings, and its button opens them
    [item] = controller.iface.messageBar().items()
    assert [button.text() for button in item.findChildren(QPushButton)] == ["Open settings"]
    assert os.environ["PYTHONPATH"] == QGIS_ENVIRONMENT["PYTHONPATH"]  # QGIS's own environment is untouched
