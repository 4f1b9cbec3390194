"""Models in QGIS: the plugin starts its local backend with its models folder, the Models dialog
lists it, downloads a model from a hub (the stand-in of tests/hub.py on 127.0.0.1, through the
backend's huggingface_hub) with progress, cancels one, deletes the part left, and Use restarts
the backend with the downloaded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgis_plugin.client import BackendClient
from qgis_plugin.models import ModelManager
from qgis_plugin.models_dialog import ModelsDialog
from qgis_plugin.settings import PluginSettings

from .conftest import backend_tool, wait_for_tasks, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.backend]


@pytest.fixture
def hub(tiny_checkpoint):
    from tests.hub import StandInHub

    with StandInHub({"test-org/tiny-vl": tiny_checkpoint}) as hub:
        yield hub


def rows(dialog: ModelsDialog) -> list[list[str]]:
    return [[dialog.table.item(r, c).text() for c in range(dialog.table.columnCount())] for r in range(dialog.table.rowCount())]


def select(dialog: ModelsDialog, name: str) -> None:
    dialog.table.selectRow(next(r for r, row in enumerate(rows(dialog)) if row[0] == name))


def test_download_cancel_delete_and_use_a_model_from_the_models_dialog(controller, settings, tiny_checkpoint, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    models = tmp_path / "my models"
    settings = PluginSettings.load()
    settings.command, settings.model, settings.models_folder, settings.poll_interval_ms = str(backend_tool("rscovlm")), str(tiny_checkpoint), str(models), 50
    settings.save()
    controller.start_backend()
    wait_until(lambda: controller.backend.state == "running", 240, "the local backend")

    manager = ModelManager(controller)
    dialog = ModelsDialog(manager)
    messages, progress = [], []
    manager.message.connect(lambda text, error: messages.append((text, error)))
    manager.progressed.connect(lambda done, total: progress.append((done, total)))
    wait_until(lambda: str(models) in dialog.folder.text(), 30, "the models list")
    assert rows(dialog) == []

    # a slow link: cancelled part way, the part is listed, and deleted after a yes
    hub.state.seconds_per_file = 4.0
    dialog.hub_id.setText("test-org/tiny-vl")
    dialog.download_button.click()
    assert not dialog.download_button.isEnabled() and dialog.cancel_button.isEnabled()
    wait_until(lambda: any(method == "GET" and "/resolve/" in path for method, path, _ in hub.state.requests), 30, "the download to start")
    dialog.cancel_button.click()
    wait_until(lambda: manager.download_task is None, 60, "the download to stop")
    assert messages[-1] == ("Cancelled: the download was cancelled; the files that arrived are kept for the next download", False)
    assert dialog.download_button.isEnabled()
    manager.refresh()
    wait_until(lambda: rows(dialog) and rows(dialog)[0][1] == "download stopped part way", 30, "the stopped download in the list")
    select(dialog, "test-org--tiny-vl")
    assert not dialog.use_button.isEnabled() and dialog.delete_button.isEnabled()
    asked = []
    monkeypatch.setattr(dialog, "confirm", lambda text: asked.append(text) or True)
    dialog.delete_button.click()
    wait_until(lambda: rows(dialog) == [], 30, "the stopped download to go")
    assert "Delete test-org--tiny-vl" in asked[0] and not (models / ".downloading" / "test-org--tiny-vl").exists()

    # the whole download, with progress, listed with what it is
    hub.state.seconds_per_file = 0.0
    dialog.download_button.click()
    wait_until(lambda: any(text.startswith("Downloaded test-org/tiny-vl") for text, _ in messages), 120, "the download")
    wait_until(lambda: len(rows(dialog)) == 1, 30, "the list")
    total = sum(p.stat().st_size for p in tiny_checkpoint.iterdir())
    assert progress[-1] == (total, total)
    name, kind, size, classes, source = rows(dialog)[0]
    assert (name, kind, source) == ("test-org--tiny-vl", "checkpoint", "test-org/tiny-vl")
    assert size.endswith(" kB") and float(size.split()[0]) == pytest.approx((total + 140) / 1000, abs=0.2)  # + the download's source file
    assert classes == "plane, ship, storage tank, baseball diamond and 11 more"

    # Use: the local backend restarts with it, and it cannot be deleted while it runs
    select(dialog, "test-org--tiny-vl")
    dialog.use_button.click()
    downloaded = str((models / "test-org--tiny-vl").resolve())
    assert PluginSettings.load().model == downloaded and "Restarting" in dialog.status.text()
    wait_until(lambda: controller.backend.state == "running", 240, "the backend to restart")
    assert BackendClient(controller.connection()).get("/model")["model"] == downloaded
    manager.refresh()
    wait_until(lambda: rows(dialog) and rows(dialog)[0][1] == "checkpoint (running)", 30, "the list")
    select(dialog, "test-org--tiny-vl")
    assert not dialog.use_button.isEnabled() and not dialog.delete_button.isEnabled()
    manager.delete("test-org--tiny-vl")
    wait_until(lambda: messages[-1][1], 30, "the refusal")
    assert "is the model the backend is running" in messages[-1][0] and Path(downloaded, "config.json").is_file()
    dialog.close()
    controller.stop_backend()
    wait_for_tasks()
