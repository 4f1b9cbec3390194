"""The RSCoVLM dock: backend status and control, the question (raster, task, classes or text,
extent, options), Run/Cancel with progress, the answer, the history, saving and diagnostics.
Widgets only: what happens is the controller's."""

from __future__ import annotations

from qgis.core import Qgis, QgsGeometry, QgsRectangle
from qgis.gui import QgsCheckableComboBox, QgsDoubleSpinBox, QgsMapLayerComboBox, QgsMapToolExtent, QgsRubberBand
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .controller import Controller, RunInput, canvas_pixel_size
from .resources import icon
from .settings import ZOOM_CHOICES
from .task_request import CHANGE_CHOICES, DOTA_CLASSES, TASK_KINDS, TASKS, split_classes

EXTENT_CANVAS, EXTENT_LAYER, EXTENT_DRAWN = "canvas", "layer", "drawn"
MODEL_DEFAULT = "model default"
OBJECT_TASKS = ("detect", "change")  # asked per object class, tile by tile
STATUS_COLORS = {"running": "#2e7d32", "starting": "#f9a825", "stopped": "#757575", "error": "#c62828"}


class RSCoVLMDock(QDockWidget):
    def __init__(self, iface, controller: Controller, open_settings, parent=None):
        super().__init__("RSCoVLM", parent)
        self.setObjectName("RSCoVLMDock")
        self.iface = iface
        self.controller = controller
        self.canvas = iface.mapCanvas()
        self.drawn_extent: QgsRectangle | None = None
        self.drawn_crs = None
        self.previous_tool = None
        self.extent_tool = QgsMapToolExtent(self.canvas)
        self.extent_tool.extentChanged.connect(self._extent_drawn)
        self.rubber_band = QgsRubberBand(self.canvas, Qgis.GeometryType.Polygon)
        self.rubber_band.setColor(QColor(255, 140, 0, 200))
        self.rubber_band.setFillColor(QColor(255, 140, 0, 30))
        self.rubber_band.setWidth(2)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self._backend_box(open_settings))
        layout.addWidget(self._question_box())
        layout.addWidget(self._run_box())
        layout.addWidget(self._answer_box())
        layout.addStretch(1)
        self.setWidget(body)

        self.checked_order: list[str] = []  # classes in the order the user ticked them
        # the model's signal: the combo's own checkedItemsChanged misses ticks made through setItemCheckState
        self.dota_classes.model().itemCheckStateChanged.connect(self._classes_ticked)
        controller.status_changed.connect(self._show_status)
        controller.running_changed.connect(self._show_running)
        controller.progressed.connect(self._show_progress)
        controller.answered.connect(self._show_answer)
        controller.history_changed.connect(self._show_history)
        controller.layers_changed.connect(self._show_result_layers)
        self._task_changed()
        self._show_running(False)

    # --- building ---

    def _backend_box(self, open_settings) -> QGroupBox:
        box = QGroupBox("Backend")
        layout = QVBoxLayout(box)
        self.status_label = QLabel("Not checked yet")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start backend")
        self.stop_button = QPushButton("Stop")
        settings_button = QPushButton("Settings…")
        refresh_button = QPushButton("Refresh")
        self.start_button.clicked.connect(self.controller.start_backend)
        self.stop_button.clicked.connect(self.controller.stop_backend)
        settings_button.clicked.connect(open_settings)
        refresh_button.clicked.connect(self.controller.refresh_status)
        for button in (self.start_button, self.stop_button, settings_button, refresh_button):
            buttons.addWidget(button)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        return box

    def _question_box(self) -> QGroupBox:
        box = QGroupBox("Question")
        form = QFormLayout(box)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(Qgis.LayerFilter.RasterLayer)
        self.after_combo = QgsMapLayerComboBox()  # the second date of a comparison
        self.after_combo.setFilters(Qgis.LayerFilter.RasterLayer)
        self.after_combo.setToolTip("The later raster of the same place: any CRS, resolution or extent (it is read on the earlier raster's grid).")
        self.layer_combo.layerChanged.connect(self._earlier_chosen)
        self._earlier_chosen(self.layer_combo.currentLayer())
        self.change_kinds = QComboBox()
        for title, kinds in CHANGE_CHOICES:
            self.change_kinds.addItem(title, kinds)
        self.task_combo = QComboBox()
        for kind in TASK_KINDS:
            self.task_combo.addItem(kind.title, kind.name)
        self.task_combo.currentIndexChanged.connect(self._task_changed)
        self.dota_classes = QgsCheckableComboBox()
        self.dota_classes.addItems(list(DOTA_CLASSES))
        self.dota_classes.setDefaultText("classes the model knows…")
        self.classes_edit = QLineEdit()
        self.classes_edit.setPlaceholderText("more classes, comma separated")
        self.text_edit = QLineEdit()
        self.text_edit.returnPressed.connect(self.run)
        self.choices_edit = QLineEdit()
        self.choices_edit.setPlaceholderText("optional answers to choose from, separated by ';'")
        self.box_form = QComboBox()
        self.box_form.addItem("Box", "hbox")
        self.box_form.addItem("Rotated polygon", "polygon")
        self.features_combo = QgsMapLayerComboBox()
        self.features_combo.setFilters(Qgis.LayerFilter.VectorLayer)
        self.features_combo.setToolTip("The selected features of this layer are described (all of them when none is selected).")
        self.extent_combo = QComboBox()
        self.extent_combo.addItem("Map canvas", EXTENT_CANVAS)
        self.extent_combo.addItem("Whole layer", EXTENT_LAYER)
        self.extent_combo.addItem("Drawn rectangle", EXTENT_DRAWN)
        self.extent_combo.currentIndexChanged.connect(self._extent_mode_changed)
        draw = QToolButton()
        draw.setIcon(icon("draw_extent"))
        draw.setToolTip("Draw a rectangle on the map")
        draw.clicked.connect(self.draw_extent)
        extent_row = QHBoxLayout()
        extent_row.addWidget(self.extent_combo, 1)
        extent_row.addWidget(draw)
        settings = self.controller.settings()
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 4096)  # 0 (the minimum) shows as the model's own tile
        self.tile_size.setSingleStep(56)
        self.tile_size.setSpecialValueText(MODEL_DEFAULT)
        self.tile_size.setValue(settings.tile_size)
        self.tile_size.setSuffix(" px")
        self.gsd = QgsDoubleSpinBox()
        self.gsd.setRange(0.0, 1000.0)
        self.gsd.setDecimals(2)
        self.gsd.setSpecialValueText("native")
        self.gsd.setClearValue(0.0)
        self.gsd.setValue(settings.gsd)
        self.gsd.setSuffix(" m/px")
        self.zoom = QComboBox()
        self.zoom.addItems(list(ZOOM_CHOICES))
        self.zoom.setCurrentText(settings.zoom)
        self.raster_label = QLabel("Raster")
        form.addRow(self.raster_label, self.layer_combo)
        form.addRow("Task", self.task_combo)
        self.after_label = QLabel("Compared with")
        form.addRow(self.after_label, self.after_combo)
        self.change_kinds_label = QLabel("Look for")
        form.addRow(self.change_kinds_label, self.change_kinds)
        self.classes_label = QLabel("Classes")
        form.addRow(self.classes_label, self.dota_classes)
        form.addRow("", self.classes_edit)
        self.text_label = QLabel("Question")
        form.addRow(self.text_label, self.text_edit)
        self.choices_label = QLabel("Choices")
        form.addRow(self.choices_label, self.choices_edit)
        self.box_form_label = QLabel("Answer as")
        form.addRow(self.box_form_label, self.box_form)
        self.features_label = QLabel("Features")
        form.addRow(self.features_label, self.features_combo)
        form.addRow("Extent", extent_row)
        self.tile_label = QLabel("Tile size")
        form.addRow(self.tile_label, self.tile_size)
        form.addRow("GSD", self.gsd)
        self.zoom_label = QLabel("Zoom-in")
        form.addRow(self.zoom_label, self.zoom)
        return box

    def _run_box(self) -> QWidget:
        box = QWidget()
        layout = QHBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        self.run_button = QPushButton("Run")
        self.run_button.setIcon(icon("rscovlm"))
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.controller.cancel)
        layout.addWidget(self.run_button)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.progress, 1)
        return box

    def _answer_box(self) -> QGroupBox:
        box = QGroupBox("Answers")
        layout = QVBoxLayout(box)
        self.answer_view = QTextBrowser()
        self.answer_view.setMaximumHeight(90)
        self.history_list = QListWidget()
        self.history_list.setMaximumHeight(120)
        results_row = QHBoxLayout()
        self.result_combo = QComboBox()
        save = QPushButton("Save as GeoPackage…")
        save.clicked.connect(self.save_result)
        results_row.addWidget(self.result_combo, 1)
        results_row.addWidget(save)
        diagnostics = QPushButton("Copy diagnostics")
        diagnostics.clicked.connect(self.copy_diagnostics)
        layout.addWidget(self.answer_view)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history_list)
        layout.addLayout(results_row)
        layout.addWidget(diagnostics)
        return box

    # --- input ---

    def current_task(self) -> str:
        return self.task_combo.currentData()

    def _task_changed(self) -> None:
        kind = TASKS[self.current_task()]
        objects = kind.name in OBJECT_TASKS
        self.dota_classes.setVisible(objects)
        self.classes_label.setVisible(kind.needs == "classes")
        self.classes_label.setText("Classes" if objects else "Scene classes")
        self.classes_edit.setVisible(kind.needs == "classes")
        self.classes_edit.setPlaceholderText("more classes, comma separated" if objects else "e.g. airport, harbor, farmland, residential")
        self.raster_label.setText("Earlier raster" if kind.two_dates else "Raster")
        for widget in (self.after_combo, self.after_label):
            widget.setVisible(kind.two_dates)
        for widget in (self.change_kinds, self.change_kinds_label):
            widget.setVisible(kind.name == "change")
        self.text_edit.setVisible(kind.needs in ("expression", "question"))
        self.text_label.setVisible(kind.needs in ("expression", "question"))
        self.text_label.setText("Find" if kind.needs == "expression" else "Question")
        self.text_edit.setPlaceholderText("e.g. the white ship next to the pier" if kind.needs == "expression" else "e.g. How many planes are parked?")
        self.tile_size.setVisible(objects)
        self.tile_label.setVisible(objects)
        for widget in (self.zoom, self.zoom_label, self.choices_edit, self.choices_label):  # the Zoom-in Chain: questions only
            widget.setVisible(kind.name == "ask")
        for widget in (self.box_form, self.box_form_label):
            widget.setVisible(kind.name == "ground")
        for widget in (self.features_combo, self.features_label):
            widget.setVisible(kind.name == "describe")

    def _earlier_chosen(self, layer) -> None:
        """The later date is another raster: the earlier one is not offered again."""
        self.after_combo.setExceptedLayerList([layer] if layer is not None else [])

    def _classes_ticked(self, *_) -> None:
        checked = list(self.dota_classes.checkedItems())
        self.checked_order = [c for c in self.checked_order if c in checked] + [c for c in checked if c not in self.checked_order]

    def classes(self) -> list[str]:
        """The ticked classes in the order they were ticked, then the typed ones."""
        chosen = list(self.checked_order) if self.current_task() in OBJECT_TASKS else []
        return list(dict.fromkeys(chosen + split_classes(self.classes_edit.text())))

    def run_input(self) -> RunInput:
        layer = self.layer_combo.currentLayer()
        mode = self.extent_combo.currentData()
        extent, crs = None, None
        if mode == EXTENT_CANVAS:
            extent, crs = self.canvas.extent(), self.canvas.mapSettings().destinationCrs()
        elif mode == EXTENT_DRAWN and self.drawn_extent is not None:
            extent, crs = self.drawn_extent, self.drawn_crs
        pixel_size = canvas_pixel_size(self.canvas, layer, self.controller.project) if layer is not None and layer.crs().isValid() else None
        return RunInput(
            layer=layer,
            task=self.current_task(),
            classes=self.classes(),
            text=self.text_edit.text(),
            extent=extent,
            extent_crs=crs,
            pixel_size=pixel_size,
            tile_size=(self.tile_size.value() or None) if self.current_task() in OBJECT_TASKS else None,
            gsd=self.gsd.value() or None,
            zoom=self.zoom.currentText() if self.current_task() == "ask" else None,
            box_form=self.box_form.currentData() if self.current_task() == "ground" else None,
            choices=[c for c in self.choices_edit.text().split(";") if c.strip()] if self.current_task() == "ask" else [],
            features=self.features_combo.currentLayer() if self.current_task() == "describe" else None,
            layer_after=self.after_combo.currentLayer() if TASKS[self.current_task()].two_dates else None,
            change_kinds=list(self.change_kinds.currentData()) if self.current_task() == "change" else [],
        )

    def run(self) -> bool:
        settings = self.controller.settings()
        settings.tile_size, settings.gsd, settings.zoom = self.tile_size.value(), self.gsd.value(), self.zoom.currentText()
        settings.save()
        if self.extent_combo.currentData() == EXTENT_DRAWN and self.drawn_extent is None:
            self.controller.notifier.error("No rectangle is drawn yet. Click the draw button beside Extent and drag a rectangle on the map.")
            return False
        return self.controller.run(self.run_input())

    # --- extent drawing ---

    def draw_extent(self) -> None:
        self.previous_tool = self.canvas.mapTool()
        self.canvas.setMapTool(self.extent_tool)

    def _extent_drawn(self, extent: QgsRectangle) -> None:
        if extent.isEmpty():
            return
        self.drawn_extent = QgsRectangle(extent)
        self.drawn_crs = self.canvas.mapSettings().destinationCrs()
        self.rubber_band.setToGeometry(QgsGeometry.fromRect(self.drawn_extent), None)
        self.extent_tool.clearRubberBand()
        self.extent_combo.setCurrentIndex(self.extent_combo.findData(EXTENT_DRAWN))
        if self.previous_tool is not None:
            self.canvas.setMapTool(self.previous_tool)
        else:
            self.canvas.unsetMapTool(self.extent_tool)

    def _extent_mode_changed(self) -> None:
        if self.extent_combo.currentData() != EXTENT_DRAWN:
            self.rubber_band.reset(Qgis.GeometryType.Polygon)
        elif self.drawn_extent is not None:
            self.rubber_band.setToGeometry(QgsGeometry.fromRect(self.drawn_extent), None)

    # --- showing ---

    def _show_status(self, state: str, text: str) -> None:
        color = STATUS_COLORS.get(state, "#757575")
        self.status_label.setText(f'<span style="color:{color}">●</span> <b>{state}</b> — {_escape(text)}')
        self.start_button.setEnabled(state in ("stopped", "error"))
        self.stop_button.setEnabled(self.controller.backend.state != "stopped")
        if state == "running":
            self._show_model_defaults(self.controller.model_defaults())

    def _show_model_defaults(self, defaults: dict) -> None:
        """The tile and detection GSD the model was trained on as their fields' defaults, and its
        classes in the picker."""
        options = defaults.get("options") or {}
        tile = options.get("tile_size")
        self.tile_size.setSpecialValueText(f"{MODEL_DEFAULT} ({tile} px)" if tile else MODEL_DEFAULT)
        gsd = ((defaults.get("tasks") or {}).get("detect") or {}).get("gsd") or options.get("gsd")
        self.gsd.setSpecialValueText(f"{MODEL_DEFAULT} (detection at {gsd:g} m/px)" if isinstance(gsd, (int, float)) else "native")
        classes = [str(c) for c in defaults.get("classes") or []]
        current = [self.dota_classes.itemText(i) for i in range(self.dota_classes.count())]
        if classes and classes != current:
            kept = [c for c in self.checked_order if c in classes]
            self.dota_classes.clear()
            self.dota_classes.addItems(classes)
            self.dota_classes.setCheckedItems(kept)
            self.checked_order = kept

    def _show_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress.setRange(0, 0)  # busy until the first progress arrives
            self.progress.setFormat("%p%")
            self.answer_view.setPlainText(f"{self.controller.question()}\n→ running…")
        else:  # the answer box says how it ended; the bar is empty again
            self.progress.setRange(0, 100)
            self.progress.setValue(0)
            self.progress.setFormat("")

    def _show_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{done} / {total} views")

    def _show_answer(self, question: str, answer: str) -> None:
        self.answer_view.setPlainText(f"{question}\n→ {answer}")

    def _show_history(self) -> None:
        self.history_list.clear()
        for entry in reversed(self.controller.history):
            self.history_list.addItem(f"{entry.question} → {entry.answer}")

    def _show_result_layers(self) -> None:
        self.result_combo.clear()
        for layer in reversed(self.controller.result_layers):
            if self.controller.project.mapLayer(layer.id()) is not None:
                self.result_combo.addItem(layer.name(), layer.id())

    def save_result(self) -> None:
        layer = self.controller.project.mapLayer(self.result_combo.currentData() or "")
        if layer is None:
            self.controller.notifier.error("No result to save yet. Run a question first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save as GeoPackage", f"{layer.name()}.gpkg", "GeoPackage (*.gpkg)")
        if path:
            self.controller.save_geopackage(layer, path)

    def copy_diagnostics(self) -> None:
        QApplication.clipboard().setText(self.controller.diagnostics())
        self.controller.notifier.info("Diagnostics copied to the clipboard: paste them into your bug report.")

    def cleanup(self) -> None:
        """Before the plugin unloads: no map tool or rubber band of ours is left on the canvas."""
        if self.canvas.mapTool() is self.extent_tool:
            self.canvas.unsetMapTool(self.extent_tool)
        self.rubber_band.reset(Qgis.GeometryType.Polygon)
        self.canvas.scene().removeItem(self.rubber_band)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
