"""The backend settings: start a local backend (its command or Python, model, adapter,
quantisation, device) or connect to a URL with a token; Install backend... builds that backend's
environment (the controller runs the installer)."""

from __future__ import annotations

from qgis.gui import QgsFileWidget, QgsPasswordLineEdit
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from .installer import TORCH_CHOICES
from .settings import DEVICE_CHOICES, QUANTIZE_CHOICES, PluginSettings


def folder_widget(path: str, placeholder: str = "", tooltip: str = "") -> QgsFileWidget:
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
    widget.setFilePath(path)
    widget.lineEdit().setPlaceholderText(placeholder)
    widget.setToolTip(tooltip)
    return widget


def button(text: str, tooltip: str, on_click) -> QPushButton:
    made = QPushButton(text)
    made.setToolTip(tooltip)
    made.clicked.connect(on_click)
    return made


class SettingsDialog(QDialog):
    def __init__(self, settings: PluginSettings, parent=None, install=None, open_models=None):
        """`install(torch, bundle)`: starts Install backend... (None: no such button);
        `open_models()`: shows the Models dialog, which may pick the model."""
        super().__init__(parent)
        self.setWindowTitle("RSCoVLM settings")
        self.settings = settings
        layout = QVBoxLayout(self)

        self.local = QRadioButton("Start a local backend (or use a running `rscovlm serve`)")
        self.remote = QRadioButton("Connect to a backend at a URL")
        modes = QButtonGroup(self)
        modes.addButton(self.local)
        modes.addButton(self.remote)
        (self.remote if settings.mode == "remote" else self.local).setChecked(True)

        layout.addWidget(self.local)
        local_box = QGroupBox()
        local_form = QFormLayout(local_box)
        self.command = QgsFileWidget()
        self.command.setFilePath(settings.command)
        self.command.setToolTip("The backend's `rscovlm` command, or the Python of its environment (e.g. /path/to/.venv/bin/python).")
        self.model = QLineEdit(settings.model)
        self.model.setPlaceholderText("checkpoint folder or hub id, e.g. Qingyun/RSCoVLM-7B-2512")
        self.adapter = folder_widget(settings.adapter)
        self.quantize = QComboBox()
        self.quantize.addItems(QUANTIZE_CHOICES)
        self.quantize.setCurrentText(settings.quantize)
        self.device = QComboBox()
        self.device.addItems(DEVICE_CHOICES)
        self.device.setCurrentText(settings.device)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 64)
        self.batch_size.setValue(settings.batch_size)
        local_form.addRow("Command or Python", self.command)
        self.backend_folder = folder_widget(settings.backend_folder, placeholder="in the QGIS profile folder")
        self.torch = QComboBox()
        self.torch.addItems(TORCH_CHOICES)
        self.torch.setToolTip("auto: the CUDA build that fits the NVIDIA driver, PyPI's on macOS, else the CPU build")
        self.bundle = folder_widget("", tooltip="An offline bundle folder (make bundle): installs with no network")
        row = QHBoxLayout()
        row.addWidget(self.torch)
        row.addWidget(self.bundle, 1)
        if install is not None:
            row.addWidget(button("Install backend…", "Builds the backend's own environment in the backend folder and sets the command to it",
                                 lambda: self._install(install)))
        local_form.addRow("Backend folder", self.backend_folder)
        local_form.addRow("PyTorch build, offline bundle", row)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        if open_models is not None:
            model_row.addWidget(button("Models…", "The models the backend has: download RSCoVLM-7B or another, delete one, pick one",
                                       lambda: self._models(open_models)))
        self.models_folder = folder_widget(settings.models_folder, str(PluginSettings(models_folder="").models_path()),
                                           "Where the local backend keeps downloaded models (applies when it next starts)")
        local_form.addRow("Model", model_row)
        local_form.addRow("Models folder", self.models_folder)
        local_form.addRow("LoRA adapter", self.adapter)
        local_form.addRow("Quantisation", self.quantize)
        local_form.addRow("Device", self.device)
        local_form.addRow("Batch size", self.batch_size)
        layout.addWidget(local_box)

        layout.addWidget(self.remote)
        remote_box = QGroupBox()
        remote_form = QFormLayout(remote_box)
        self.url = QLineEdit(settings.url)
        self.token = QgsPasswordLineEdit()
        self.token.setText(settings.token)
        remote_form.addRow("URL", self.url)
        remote_form.addRow("Token", self.token)
        layout.addWidget(remote_box)
        self.upload = QCheckBox("Upload rasters even to a backend on this machine (one in a container cannot read local paths)")
        self.upload.setChecked(settings.upload_rasters)
        layout.addWidget(self.upload)

        common = QFormLayout()
        self.timeout = QSpinBox()
        self.timeout.setRange(2, 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(settings.timeout_s)
        common.addRow("Request timeout", self.timeout)
        layout.addLayout(common)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        self.local.toggled.connect(local_box.setEnabled)
        self.remote.toggled.connect(remote_box.setEnabled)
        local_box.setEnabled(self.local.isChecked())
        remote_box.setEnabled(self.remote.isChecked())

    def _install(self, install) -> None:
        """What is typed here is kept; the installer then sets the command when it is done."""
        self.values().save()
        if install(self.torch.currentText(), self.bundle.filePath().strip()):
            self.accept()

    def _models(self, open_models) -> None:
        """What is typed here is kept; a model picked in the Models dialog then shows here."""
        self.values().save()
        open_models()
        picked = PluginSettings.load()
        self.model.setText(picked.model)
        self.adapter.setFilePath(picked.adapter)

    def values(self) -> PluginSettings:
        s = self.settings
        s.mode = "remote" if self.remote.isChecked() else "local"
        s.command = self.command.filePath().strip() or "rscovlm"
        s.model = self.model.text().strip()
        s.adapter = self.adapter.filePath().strip()
        s.quantize = self.quantize.currentText()
        s.device = self.device.currentText()
        s.batch_size = self.batch_size.value()
        s.url = self.url.text().strip()
        s.token = self.token.text().strip()
        s.upload_rasters = self.upload.isChecked()
        s.timeout_s = self.timeout.value()
        s.backend_folder = self.backend_folder.filePath().strip()
        s.models_folder = self.models_folder.filePath().strip()
        return s
