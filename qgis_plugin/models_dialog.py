"""The Models dialog: the backend's model folders (name, kind, size, trained classes, where from,
which one runs), Download from the hub with a progress bar and Cancel, Delete…, and Use. The
work is ModelManager's (models.py); this only shows it."""

from __future__ import annotations

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .models import ModelManager

RELEASED_MODEL = "Qingyun/RSCoVLM-7B-2512"
COLUMNS = ("Name", "Kind", "Size", "Trained classes", "From")


def size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def classes_text(classes: list[str]) -> str:
    return ", ".join(classes[:4]) + (f" and {len(classes) - 4} more" if len(classes) > 4 else "") if classes else "—"


class ModelsDialog(QDialog):
    def __init__(self, manager: ModelManager, parent=None):
        super().__init__(parent)
        self.setWindowTitle("RSCoVLM models")
        self.resize(760, 420)
        self.manager = manager
        self.models: list[dict] = []
        layout = QVBoxLayout(self)
        self.folder = QLabel("Asking the backend…")
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.folder)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.table)

        actions = QHBoxLayout()
        self.use_button = QPushButton("Use")
        self.use_button.setToolTip("The model the local backend runs (it restarts with it)")
        self.use_button.clicked.connect(self.use_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(manager.refresh)
        for button in (self.use_button, self.delete_button, refresh):
            actions.addWidget(button)
        actions.addStretch(1)
        layout.addLayout(actions)

        download = QHBoxLayout()
        self.hub_id = QLineEdit(RELEASED_MODEL)
        self.hub_id.setToolTip("A hub id: RSCoVLM-7B, or any Qwen2.5-VL checkpoint or LoRA adapter")
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(lambda: manager.download(self.hub_id.text()))
        self.progress = QProgressBar()
        self.progress.setFormat("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(manager.cancel_download)
        download.addWidget(QLabel("From the hub"))
        download.addWidget(self.hub_id, 1)
        download.addWidget(self.download_button)
        download.addWidget(self.progress, 1)
        download.addWidget(self.cancel_button)
        layout.addLayout(download)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        manager.listed.connect(self.show_models)
        manager.progressed.connect(self.show_progress)
        manager.message.connect(self.show_message)
        manager.downloading_changed.connect(self._downloading)
        self._downloading(manager.download_task is not None)
        self._selection_changed()
        manager.refresh()

    def show_models(self, listed: dict) -> None:
        self.folder.setText(f"Models folder on the backend: {listed.get('folder', '?')} (set it in RSCoVLM settings)")
        self.models = list(listed.get("models") or [])
        self.table.setRowCount(len(self.models))
        for row, model in enumerate(self.models):
            kind = {"checkpoint": "checkpoint", "adapter": "LoRA adapter", "partial": "download stopped part way"}.get(model["kind"], model["kind"])
            cells = (model["name"], kind + (" (running)" if model.get("in_use") else ""), size_text(int(model["size_bytes"])),
                     classes_text(model.get("classes") or []), (model.get("source") or "—").split("@")[0])
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(model["path"] if column == 0 else ", ".join(model.get("classes") or []) if column == 3 else text)
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        self._selection_changed()

    def show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, 1000 if total else 0)
        if total:
            self.progress.setValue(int(1000 * done / total))
            self.progress.setFormat(f"{size_text(done)} of {size_text(total)}")

    def show_message(self, text: str, is_error: bool) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b00020" if is_error else "")

    def selected(self) -> dict | None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        return self.models[rows.pop()] if len(rows) == 1 and max(rows) < len(self.models) else None

    def _selection_changed(self) -> None:
        model = self.selected()
        self.use_button.setEnabled(model is not None and model["kind"] != "partial" and not model.get("in_use"))
        self.delete_button.setEnabled(model is not None and not model.get("in_use"))

    def _downloading(self, downloading: bool) -> None:
        self.download_button.setEnabled(not downloading)
        self.cancel_button.setEnabled(downloading)
        if not downloading:
            self.progress.setRange(0, 1000)
            self.progress.setValue(0)
            self.progress.setFormat("")

    def use_selected(self) -> None:
        model = self.selected()
        if model is not None:
            self.show_message(self.manager.use(model), False)

    def confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Delete model", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        model = self.selected()
        if model is not None and self.confirm(f"Delete {model['name']} ({size_text(int(model['size_bytes']))}) from {model['path']}?"):
            self.manager.delete(model["name"])
