"""One Processing algorithm per task: raster, extent, classes or text, options -> feature sink.
So the tasks run in Batch mode, in the Graphical Modeler, and headless through
`processing.run("rscovlm:detect", {...})`, with progress and cancel through `feedback`.

They use the backend the plugin's settings name (a running local backend is found through
its server file), like the dock.
"""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .client import BackendError, resolve_connection
from .feature_input import feature_box, region_extent
from .jobs import run_job
from .layers import (
    DESCRIPTION_FIELD,
    QT_FIELD_TYPES,
    STYLES,
    TITLES,
    apply_style,
    crs_from_text,
    fields_for,
    qgs_features,
    split_roles,
)
from .raster_input import InputProblem, RasterInput, crs_text, prepare_raster
from .resources import icon
from .settings import ZOOM_CHOICES, PluginSettings
from .task_request import CHANGE_CHOICES, TASKS, RequestProblem, build_request, split_classes


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Styles the output layer QGIS loads when the algorithm finishes (main thread)."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS's name
        apply_style(layer, self.style)


# Post-processors must outlive the algorithm instance that registers them.
_STYLERS = {style: StyleOnLoad(style) for style in set(STYLES.values())}


class TaskAlgorithm(QgsProcessingAlgorithm):
    TASK = ""
    INPUT, EXTENT, CLASSES, TEXT = "INPUT", "EXTENT", "CLASSES", "TEXT"
    TILE_SIZE, GSD, ZOOM, PIXEL_SIZE = "TILE_SIZE", "GSD", "ZOOM", "PIXEL_SIZE"
    CHOICES, BOX_FORM, FEATURES = "CHOICES", "BOX_FORM", "FEATURES"
    INPUT_AFTER, CHANGES, CAPTION = "INPUT_AFTER", "CHANGES", "CAPTION"
    OUTPUT, ANSWER = "OUTPUT", "ANSWER"

    def __init__(self):
        super().__init__()
        self._raster: RasterInput | None = None
        self._raster_after: RasterInput | None = None

    def name(self) -> str:
        return self.TASK

    def displayName(self) -> str:  # noqa: N802
        return TASKS[self.TASK].title

    def icon(self):
        return icon("rscovlm")

    def createInstance(self):  # noqa: N802
        return type(self)()

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP[self.TASK] + (
            "<p>Runs on the RSCoVLM backend set in the plugin's settings (or a running <code>rscovlm serve</code>). "
            "Rasters without a file (WMS, XYZ) are written to a temporary GeoTIFF first.</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        kind = TASKS[self.TASK]
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Earlier raster (first date)" if kind.two_dates else "Raster layer"))
        if kind.two_dates:
            self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT_AFTER, "Later raster of the same place (any CRS or resolution)"))
        if kind.needs == "features":
            self.addParameter(QgsProcessingParameterFeatureSource(self.FEATURES, "Features to describe", [Qgis.ProcessingSourceType.VectorAnyGeometry]))
        else:
            self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the whole raster)", optional=True))
        if self.TASK == "change":  # the objects that changed, or the changes in words
            self.addParameter(QgsProcessingParameterString(self.CLASSES, "Object classes whose changes to find, comma separated", optional=True))
            self.addParameter(QgsProcessingParameterEnum(self.CHANGES, "Look for", [title for title, _ in CHANGE_CHOICES], False, 0))
            self.addParameter(QgsProcessingParameterBoolean(self.CAPTION, "Describe the changes in words instead (no classes needed)", False))
        elif kind.needs == "classes":
            label = "Object classes, comma separated" if self.TASK == "detect" else "Scene classes, comma separated"
            self.addParameter(QgsProcessingParameterString(self.CLASSES, label))
        elif kind.needs == "expression":
            self.addParameter(QgsProcessingParameterString(self.TEXT, "What to find (referring expression)"))
        elif kind.needs == "question":
            self.addParameter(QgsProcessingParameterString(self.TEXT, "Question"))
            self.addParameter(QgsProcessingParameterString(self.CHOICES, "Answer choices, separated by ';' (multiple choice)", optional=True))
        advanced = []
        if self.TASK == "ground":
            advanced.append(QgsProcessingParameterEnum(self.BOX_FORM, "Answer as", [label for label, _ in BOX_FORMS], False, 0))
        if self.TASK in ("detect", "change"):
            advanced.append(
                QgsProcessingParameterNumber(
                    self.TILE_SIZE, "Tile size, pixels (0: the tile the model was trained on)", Qgis.ProcessingNumberParameterType.Integer, 0, False, 0, 4096
                )
            )
        advanced.append(
            QgsProcessingParameterNumber(self.GSD, "Ground sampling distance, m/pixel (0: native)", Qgis.ProcessingNumberParameterType.Double, 0.0, True, 0.0)
        )
        if self.TASK == "ask":  # the Zoom-in Chain was trained on questions only
            advanced.append(QgsProcessingParameterEnum(self.ZOOM, "Zoom-in Chain", list(ZOOM_CHOICES), False, 0))
        advanced.append(
            QgsProcessingParameterNumber(
                self.PIXEL_SIZE, "Pixel size for layers without a file (layer units; 0: automatic)", Qgis.ProcessingNumberParameterType.Double, 0.0, True, 0.0
            )
        )
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | Qgis.ProcessingParameterFlag.Advanced)
            self.addParameter(parameter)
        output_type = Qgis.ProcessingSourceType.VectorAnyGeometry if kind.needs == "features" else Qgis.ProcessingSourceType.VectorPolygon
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, TITLES[self.TASK], output_type))
        if kind.text_answer or kind.two_dates:
            self.addOutput(QgsProcessingOutputString(self.ANSWER, "Description of the changes" if kind.two_dates else "Answer"))

    def checkParameterValues(self, parameters, context: QgsProcessingContext):  # noqa: N802
        """Before anything runs (the dialog shows it): a comparison needs two different rasters."""
        if TASKS[self.TASK].two_dates:
            before = self.parameterAsRasterLayer(parameters, self.INPUT, context)
            after = self.parameterAsRasterLayer(parameters, self.INPUT_AFTER, context)
            if before is not None and after is not None and before.source() == after.source():
                return False, f"'{before.name()}' is given as both dates. Give the raster of the second date as the later raster."
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> bool:  # noqa: N802
        """Layers belong to the main thread: check them and copy what the worker needs here."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        extent = self.parameterAsExtent(parameters, self.EXTENT, context) if parameters.get(self.EXTENT) else None
        extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context) if extent is not None else None
        pixel_size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context) or None
        self._features = None
        try:
            if TASKS[self.TASK].needs == "features":
                source = self.parameterAsSource(parameters, self.FEATURES, context)
                if source is None:
                    raise QgsProcessingException(self.invalidSourceError(parameters, self.FEATURES))
                features = [f for f in source.getFeatures() if f.hasGeometry() and not f.geometry().isEmpty()]
                self._features = (source.fields(), source.wkbType(), source.sourceCrs(), features)
                if features:
                    extent, extent_crs = region_extent([feature_box(f) for f in features], source.sourceExtent()), source.sourceCrs()
            self._raster = prepare_raster(layer, extent, extent_crs, context.transformContext(), pixel_size)
            if TASKS[self.TASK].two_dates:  # the later raster over the earlier one's extent (the backend aligns it)
                after = self.parameterAsRasterLayer(parameters, self.INPUT_AFTER, context)
                self._raster_after = prepare_raster(after, self._raster.extent, self._raster.crs, context.transformContext(), pixel_size)
        except InputProblem as exc:
            raise QgsProcessingException(exc.message) from None
        return True

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        raster = self._raster
        settings = PluginSettings.load()
        task = self.TASK
        if task == "change" and self.parameterAsBoolean(parameters, self.CAPTION, context):
            task = "change_caption"
        kind = TASKS[task]
        try:
            classes = split_classes(self.parameterAsString(parameters, self.CLASSES, context)) if kind.needs == "classes" else None
            text = self.parameterAsString(parameters, self.TEXT, context) if kind.needs in ("expression", "question") else ""
            zoom = ZOOM_CHOICES[self.parameterAsEnum(parameters, self.ZOOM, context)] if self.TASK == "ask" else None
            tile = (self.parameterAsInt(parameters, self.TILE_SIZE, context) or None) if task in ("detect", "change") else None
            gsd = self.parameterAsDouble(parameters, self.GSD, context) or None
            form = BOX_FORMS[self.parameterAsEnum(parameters, self.BOX_FORM, context)][1] if self.TASK == "ground" else None
            choices = split_choices(self.parameterAsString(parameters, self.CHOICES, context)) if kind.needs == "question" else None
            regions = [feature_box(f) for f in self._features[3]] if self._features else None
            regions_crs = crs_text(self._features[2]) if self._features else None
            after = self._raster_after
            kinds = CHANGE_CHOICES[self.parameterAsEnum(parameters, self.CHANGES, context)][1] if task == "change" else None
            body = build_request(task, raster.file or "", raster.extent_tuple(), raster.crs_text, classes, text, tile, gsd, zoom,
                                 form, choices, regions, regions_crs, (after.file or "") if after else None, kinds)
            connection = resolve_connection(settings)
        except (RequestProblem, BackendError) as exc:
            raise QgsProcessingException(str(exc)) from None
        def progress(done: int, total: int) -> None:
            if total:
                feedback.setProgress(100.0 * done / total)
                feedback.setProgressText(f"{done} of {total} views answered")

        feedback.pushInfo(f"{task} on {raster.layer_name}" + (f" and {after.layer_name}" if after else "") + f" via {connection.url} ({connection.source})")
        try:
            status = run_job(connection, raster, body, context.transformContext(), feedback, float(settings.timeout_s), int(settings.poll_interval_ms), progress,
                             raster_after=after)
        except (BackendError, InputProblem) as exc:
            raise QgsProcessingException(str(exc)) from None
        result = status.get("result") or {}
        for warning in result.get("warnings") or []:
            feedback.pushWarning(f"backend: {warning}")
        if self._features is not None:
            return self._write_described(parameters, context, feedback, result)
        answer, zoom_regions = split_roles(result.get("features") or [])
        features = answer + zoom_regions
        fields = fields_for(features)
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, Qgis.WkbType.Polygon, crs_from_text(result.get("crs")))
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        qgs, skipped = qgs_features(features, fields, Qgis.GeometryType.Polygon)
        sink.addFeatures(qgs, QgsFeatureSink.Flag.FastInsert)
        if skipped:
            feedback.pushWarning(f"{skipped} feature(s) had no usable polygon and were left out.")
        if context.willLoadLayerOnCompletion(dest):
            context.layerToLoadOnCompletionDetails(dest).setPostProcessor(_STYLERS[STYLES[task]])
        outputs = {self.OUTPUT: dest}
        if kind.text_answer or kind.two_dates:
            outputs[self.ANSWER] = result.get("text") or ""
            feedback.pushInfo(f"answer: {outputs[self.ANSWER]}")
        else:
            feedback.pushInfo(f"{len(qgs)} feature(s)")
        return outputs

    def _write_described(self, parameters, context, feedback, result: dict) -> dict:
        """The features asked about, as they were, with the model's answer in `description`."""
        source_fields, wkb_type, crs, features = self._features
        texts = {int((f.get("properties") or {}).get("region", -1)): (f.get("properties") or {}).get("text") for f in result.get("features") or []}
        fields = QgsFields(source_fields)
        column = DESCRIPTION_FIELD if fields.indexOf(DESCRIPTION_FIELD) < 0 else f"rscovlm_{DESCRIPTION_FIELD}"
        fields.append(QgsField(column, QT_FIELD_TYPES[str]))
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, wkb_type, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for number, feature in enumerate(features):
            copy = QgsFeature(fields)
            copy.setGeometry(feature.geometry())
            copy.setAttributes(list(feature.attributes()) + [texts.get(number)])
            sink.addFeature(copy, QgsFeatureSink.Flag.FastInsert)
        feedback.pushInfo(f"{len(texts)} of {len(features)} feature(s) described")
        return {self.OUTPUT: dest}


HELP = {
    "detect": "<p>Finds objects of the given classes as rotated boxes (one feature per object, class in <i>label</i>). "
    "Large extents are cut into tiles at the raster's resolution and merged.</p>",
    "ground": "<p>Finds the one object a phrase describes (e.g. <i>the white ship next to the pier</i>) as a box, or "
    "a rotated polygon. It looks at the whole extent: narrow the extent when the object is small in it.</p>",
    "caption": "<p>Describes the extent in a sentence: one feature, the extent, with the caption in <i>text</i>.</p>",
    "classify": "<p>Names the scene class of the extent among the given classes (in <i>label</i>).</p>",
    "ask": "<p>Answers a question about the extent in a word or a short phrase (in <i>text</i>); with answer choices, "
    "picks one of them. On large extents the Zoom-in Chain shows where the model looked (role = zoom).</p>",
    "change": "<p>Compares two rasters of the same place at two dates (any CRS, resolution or extent: the later one "
    "is read on the earlier one's grid, in the part both cover). For each class it finds the objects that changed, "
    "appeared or disappeared, as boxes with <i>label</i>, <i>change</i>, <i>date_before</i> and <i>date_after</i> "
    "(from the rasters' metadata, else their file names); or, ticked, describes the changes in words.</p>",
    "describe": "<p>Describes each feature of a vector layer (tick <i>Selected features only</i> to describe a selection): "
    "the model is shown the raster around it and asked what the object is; the output is the features as they were, "
    "with the answer in <i>description</i>.</p>",
}
BOX_FORMS = (("Box", "hbox"), ("Rotated polygon", "polygon"))


def split_choices(text: str) -> list[str]:
    return [c.strip() for c in (text or "").split(";") if c.strip()]


def _algorithm(task: str) -> type:
    return type(f"{task.capitalize()}Algorithm", (TaskAlgorithm,), {"TASK": task})


# change_caption is the change algorithm's 'describe the changes' choice, not an algorithm of its own.
ALGORITHMS = tuple(_algorithm(task) for task in TASKS if task != "change_caption")
