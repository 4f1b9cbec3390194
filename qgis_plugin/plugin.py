"""The plugin object QGIS loads: the dock, the menu and toolbar actions, the Processing
provider; unload takes all of them away again and stops a backend the plugin started."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDialog

try:  # Qt6 (QGIS 4) moved QAction to QtGui; Qt5's qgis.PyQt.QtGui does not have it
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from .controller import Controller
from .dock import RSCoVLMDock
from .models import ModelManager
from .models_dialog import ModelsDialog
from .provider import RSCoVLMProvider
from .resources import icon
from .settings import PluginSettings
from .settings_dialog import SettingsDialog

MENU = "&RSCoVLM"


class RSCoVLMPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider: RSCoVLMProvider | None = None
        self.controller: Controller | None = None
        self.models: ModelManager | None = None  # kept while QGIS runs: a download outlives its dialog
        self.dock: RSCoVLMDock | None = None
        self.actions: list[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 - QGIS calls it, also without a GUI (qgis_process)
        if self.provider is None:
            self.provider = RSCoVLMProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.controller = Controller(self.iface, self.open_settings)
        self.models = ModelManager(self.controller)
        self.dock = RSCoVLMDock(self.iface, self.controller, self.open_settings, self.iface.mainWindow())
        self.dock.hide()
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.visibilityChanged.connect(self._dock_shown)

        toggle = QAction(icon("rscovlm"), "RSCoVLM", self.iface.mainWindow())
        toggle.setCheckable(True)
        toggle.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(toggle.setChecked)
        settings = QAction("Settings…", self.iface.mainWindow())
        settings.triggered.connect(self.open_settings)
        models = QAction("Models…", self.iface.mainWindow())
        models.triggered.connect(self.open_models)
        diagnostics = QAction("Copy diagnostics", self.iface.mainWindow())
        diagnostics.triggered.connect(self.dock.copy_diagnostics)
        self.actions = [toggle, settings, models, diagnostics]
        for action in self.actions:
            self.iface.addPluginToMenu(MENU, action)
        self.iface.addToolBarIcon(toggle)

    def _dock_shown(self, visible: bool) -> None:
        if visible and self.controller is not None:
            self.controller.refresh_status()

    def open_models(self) -> None:
        if self.models is not None:
            ModelsDialog(self.models, self.iface.mainWindow()).exec()

    def open_settings(self) -> None:
        dialog = SettingsDialog(PluginSettings.load(), self.iface.mainWindow(), self.controller.install_backend if self.controller else None,
                                self.open_models if self.models else None)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            dialog.values().save()
            if self.controller is not None:
                self.controller.refresh_status()

    def unload(self) -> None:
        if self.models is not None:
            self.models.cancel_all()
            self.models = None
        if self.controller is not None:
            self.controller.unload()
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.dock is not None:
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        self.controller = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
