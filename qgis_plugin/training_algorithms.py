"""The training algorithms of the `rscovlm` provider: "Export training data" (a raster and its
labelled polygons -> a dataset folder), "Fine-tune" (datasets -> an adapter or a checkpoint) and
"Reinforce (GRPO)" (datasets and task rewards -> an adapter). They run as training jobs of the
backend (`POST /training/export`, `/training/fit`, `/training/grpo`), so a training run lives in
the backend's environment, never in QGIS; progress, loss or rewards, and validation come back
through `feedback`, and cancelling stops the job (a fit or a GRPO run keeps a checkpoint: running
the same algorithm again resumes it).

Folders are paths on the backend's machine, which is this one for a local backend. For a backend
elsewhere the raster and the labels are uploaded; dataset and run folders are then its paths.
"""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .client import BackendError, resolve_connection
from .jobs import JobFiles, submit_and_follow
from .raster_input import InputProblem, RasterInput, prepare_raster
from .resources import icon
from .settings import PluginSettings
from .task_request import RequestProblem
from .training_request import METHODS, build_export_request, build_fit_request, build_grpo_request

# How long a cancelled job is followed until it has stopped: an export stops after a tile; a
# fit after its step, and then writes a checkpoint (a minute or two for a 7B model).
EXPORT_SETTLE_S = 60.0
FIT_SETTLE_S = 600.0
LABEL_FORMATS = ["gpkg", "geojson", "shp", "fgb"]
UPLOAD_LABEL_FORMATS = ["gpkg", "geojson"]  # single files (a shapefile is several)


def _advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    parameter.setFlags(parameter.flags() | Qgis.ProcessingParameterFlag.Advanced)
    return parameter


def _integer(name: str, label: str, default: int, minimum: int, maximum: int | None = None) -> QgsProcessingParameterNumber:
    parameter = QgsProcessingParameterNumber(name, label, Qgis.ProcessingNumberParameterType.Integer, default, False, minimum)
    if maximum is not None:
        parameter.setMaximum(maximum)
    return parameter


def _double(name: str, label: str, default: float, minimum: float, maximum: float) -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(name, label, Qgis.ProcessingNumberParameterType.Double, default, False, minimum, maximum)


class TrainingAlgorithm(QgsProcessingAlgorithm):
    """What both share: the provider's look, the backend connection, the job and its progress."""

    ROUTE = ""
    SETTLE_S = 0.0

    def icon(self):
        return icon("rscovlm")

    def group(self) -> str:
        return "Training"

    def groupId(self) -> str:  # noqa: N802 - QGIS's name
        return "training"

    def createInstance(self):  # noqa: N802
        return type(self)()

    def run_on_backend(self, body: dict, feedback: QgsProcessingFeedback, files: JobFiles, settings: PluginSettings) -> dict:
        """Submit, follow with progress and log lines, and return the finished job's status."""

        def show(status: dict) -> None:
            progress = status.get("progress") or {}
            done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
            if status["state"] == "queued":
                feedback.setProgressText("waiting for the backend's training job before this one")
            elif total:
                feedback.setProgress(100.0 * done / total)
                feedback.setProgressText(f"{done} of {total} {progress.get('unit', '')}")
            self.report(status, feedback)

        try:
            return submit_and_follow(files.connection, self.ROUTE, body, feedback, float(settings.timeout_s), int(settings.poll_interval_ms), show, self.SETTLE_S)
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None

    def report(self, status: dict, feedback: QgsProcessingFeedback) -> None:
        """Log lines for what a poll brought; the algorithm's own."""


class ExportTrainingDataAlgorithm(TrainingAlgorithm):
    INPUT, LABELS, EXTENT = "INPUT", "LABELS", "EXTENT"
    CLASS_FIELD, CLASS_NAME, TEXT_FIELD, CAPTION_FIELD = "CLASS_FIELD", "CLASS_NAME", "TEXT_FIELD", "CAPTION_FIELD"
    TILE_SIZE, TILE_OVERLAP, GSD, VAL_FRACTION = "TILE_SIZE", "TILE_OVERLAP", "GSD", "VAL_FRACTION"
    KEEP_EMPTY, MIN_VISIBLE, BLOCK_SIZE, SEED, PIXEL_SIZE, OVERWRITE = "KEEP_EMPTY", "MIN_VISIBLE", "BLOCK_SIZE", "SEED", "PIXEL_SIZE", "OVERWRITE"
    OUTPUT, TRAIN_TILES, VAL_TILES, CLASSES = "OUTPUT", "TRAIN_TILES", "VAL_TILES", "CLASSES"
    ROUTE = "/training/export"
    SETTLE_S = EXPORT_SETTLE_S

    def __init__(self):
        super().__init__()
        self._raster: RasterInput | None = None

    def name(self) -> str:
        return "export_training_data"

    def displayName(self) -> str:  # noqa: N802
        return "Export training data"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "<p>Cuts the raster and its labelled polygons into tiles as detection sees them, with RSCoVLM conversations "
            "(detection; grounding from a text field; region captions from a caption field) and DOTA labels, split into "
            "train and val by spatial blocks: a dataset folder for <i>Fine-tune</i> (<code>rscovlm train export</code>).</p>"
            "<p>The extent defaults to the labelled layer's: areas nobody labelled would teach the model that nothing is there. "
            "Runs as a job of the RSCoVLM backend; the folder is on the backend's machine.</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster layer"))
        self.addParameter(QgsProcessingParameterFeatureSource(self.LABELS, "Labelled polygons", [Qgis.ProcessingSourceType.VectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, "Class field", None, self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterString(self.CLASS_NAME, "Or one class for every object", optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.TEXT_FIELD, "Referring expression field (adds grounding samples)", None, self.LABELS,
            Qgis.ProcessingFieldParameterDataType.String, optional=True,
        ))  # fmt: skip
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the labelled layer's)", optional=True))
        self.addParameter(_integer(self.TILE_SIZE, "Tile size (pixels)", 512, 56, 4096))
        self.addParameter(_integer(self.TILE_OVERLAP, "Tile overlap (pixels)", 128, 0, 4095))
        self.addParameter(_double(self.GSD, "Ground sampling distance, m/pixel (0: native)", 0.0, 0.0, 1e6))
        self.addParameter(_double(self.VAL_FRACTION, "Share of spatial blocks held out for validation", 0.2, 0.0, 0.95))
        for parameter in (
            QgsProcessingParameterField(self.CAPTION_FIELD, "Caption field (adds region-caption samples)", None, self.LABELS,
                                        Qgis.ProcessingFieldParameterDataType.String, optional=True),
            _double(self.KEEP_EMPTY, "Share of tiles without objects to keep", 0.25, 0.0, 1.0),
            _double(self.MIN_VISIBLE, "Keep an object cut by a tile edge when this share of it is inside", 0.5, 0.01, 1.0),
            _integer(self.BLOCK_SIZE, "Side of a train/val split block (pixels)", 2048, 56),
            _integer(self.SEED, "Random seed", 0, 0),
            QgsProcessingParameterNumber(self.PIXEL_SIZE, "Pixel size for layers without a file (layer units; 0: automatic)",
                                         Qgis.ProcessingNumberParameterType.Double, 0.0, True, 0.0),
            QgsProcessingParameterBoolean(self.OVERWRITE, "Replace an earlier export in the folder", False),
        ):  # fmt: skip
            self.addParameter(_advanced(parameter))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Dataset folder"))
        self.addOutput(QgsProcessingOutputNumber(self.TRAIN_TILES, "Training tiles"))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_TILES, "Validation tiles"))
        self.addOutput(QgsProcessingOutputString(self.CLASSES, "Classes"))

    def prepareAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> bool:  # noqa: N802
        """Layers belong to the main thread: check the raster and the extent here."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context)
            extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        else:
            labels = self.parameterAsSource(parameters, self.LABELS, context)
            if labels is None:
                raise QgsProcessingException("No labelled layer is chosen. Pick the polygon layer with the objects.")
            extent, extent_crs = labels.sourceExtent(), labels.sourceCrs()
        pixel_size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context) or None
        try:
            self._raster = prepare_raster(layer, extent, extent_crs, context.transformContext(), pixel_size)
        except InputProblem as exc:
            if exc.kind == "extent" and not parameters.get(self.EXTENT):
                raise QgsProcessingException("The labelled polygons lie outside the raster layer. Check that they belong to this raster and that both have the right CRS.") from None
            raise QgsProcessingException(exc.message) from None
        return True

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        settings = PluginSettings.load()
        try:
            connection = resolve_connection(settings)
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        formats = UPLOAD_LABEL_FORMATS if connection.uploads else LABEL_FORMATS
        labels, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(parameters, self.LABELS, context, formats, "gpkg", feedback)
        options = {
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context),
            "tile_overlap": self.parameterAsInt(parameters, self.TILE_OVERLAP, context),
            "val_fraction": self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
            "keep_empty": self.parameterAsDouble(parameters, self.KEEP_EMPTY, context),
            "min_visible": self.parameterAsDouble(parameters, self.MIN_VISIBLE, context),
            "block_size": self.parameterAsInt(parameters, self.BLOCK_SIZE, context),
            "seed": self.parameterAsInt(parameters, self.SEED, context),
        }
        gsd = self.parameterAsDouble(parameters, self.GSD, context)
        if gsd:
            options["gsd"] = gsd
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        raster = self._raster
        feedback.pushInfo(f"exporting {raster.layer_name} with {labels} via {connection.url} ({connection.source})")
        with JobFiles(connection, float(settings.timeout_s), feedback) as files:
            try:
                body = build_export_request(
                    files.raster(raster, context.transformContext()),
                    files.upload(labels, "/vectors")["labels"] if connection.uploads else labels,
                    out,
                    self.parameterAsString(parameters, self.CLASS_FIELD, context),
                    self.parameterAsString(parameters, self.CLASS_NAME, context),
                    layer_name,
                    self.parameterAsString(parameters, self.TEXT_FIELD, context),
                    self.parameterAsString(parameters, self.CAPTION_FIELD, context),
                    raster.extent_tuple(),
                    raster.crs_text,
                    options,
                    self.parameterAsBoolean(parameters, self.OVERWRITE, context),
                )  # fmt: skip
            except (RequestProblem, InputProblem, BackendError) as exc:
                raise QgsProcessingException(str(exc)) from None
            status = self.run_on_backend(body, feedback, files, settings)
        manifest = status.get("result") or {}
        counts = manifest.get("counts") or {}
        for split in ("train", "val"):
            c = counts.get(split) or {}
            objects = ", ".join(f"{n} {label}" for label, n in (c.get("objects") or {}).items()) or "no objects"
            feedback.pushInfo(f"{split}: {c.get('tiles', 0)} tile(s), {objects}")
        skipped = (counts.get("labels") or {}).get("skipped") or {}
        if skipped:
            feedback.pushWarning("skipped features: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
        for warning in manifest.get("warnings") or []:
            feedback.pushWarning(f"backend: {warning}")
        dataset = (status.get("outputs") or {}).get("dataset") or out
        feedback.pushInfo(f"wrote {dataset}")
        return {
            self.OUTPUT: dataset,
            self.TRAIN_TILES: (counts.get("train") or {}).get("tiles", 0),
            self.VAL_TILES: (counts.get("val") or {}).get("tiles", 0),
            self.CLASSES: ", ".join(manifest.get("classes") or []),
        }


class ModelTrainingAlgorithm(TrainingAlgorithm):
    """Fine-tune and Reinforce: a base model, datasets, a run folder, a config and settings."""

    MODEL, CONFIG, DATA, MAX_STEPS = "MODEL", "CONFIG", "DATA", "MAX_STEPS"
    MERGE, SETTINGS, OVERWRITE, OUTPUT, RESULT = "MERGE", "SETTINGS", "OVERWRITE", "OUTPUT", "RESULT"

    def add_model_parameter(self) -> None:
        model = PluginSettings.load().model or None
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Base model: checkpoint folder on the backend's machine, or a hub id", model))

    def add_data_parameter(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.DATA, "Training data: dataset folders (folder*K repeats, folder%P keeps P percent)"))

    def add_run_parameters(self, max_steps_label: str, config_label: str, settings_example: str, merge_label: str) -> None:
        """The steps, the advanced settings and the run folder, in the dialog's order."""
        self.addParameter(_integer(self.MAX_STEPS, max_steps_label, 0, 0))
        for parameter in (
            QgsProcessingParameterString(self.CONFIG, config_label, optional=True),
            QgsProcessingParameterString(self.SETTINGS, f"Other settings as key=value, comma separated (e.g. {settings_example})", optional=True),
            QgsProcessingParameterBoolean(self.MERGE, merge_label, False),
            QgsProcessingParameterBoolean(self.OVERWRITE, "Start over if the run folder holds another run", False),
        ):
            self.addParameter(_advanced(parameter))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Run folder"))

    def run_request(self, build, describe, feedback: QgsProcessingFeedback) -> tuple[dict, dict]:
        """`build()` the request body (its problems as the algorithm's error), log `describe(body,
        connection)`, run it as a backend job; the body and the finished job's status."""
        settings = PluginSettings.load()
        try:
            body = build()
            connection = resolve_connection(settings)
        except (RequestProblem, BackendError) as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(describe(body, connection))
        with JobFiles(connection, float(settings.timeout_s), feedback) as files:
            return body, self.run_on_backend(body, feedback, files, settings)


class FineTuneAlgorithm(ModelTrainingAlgorithm):
    METHOD, VAL_DATA, VAL_LOSS, VAL_AP_NC = "METHOD", "VAL_DATA", "VAL_LOSS", "VAL_AP_NC"
    ROUTE = "/training/fit"
    SETTLE_S = FIT_SETTLE_S

    def __init__(self):
        super().__init__()
        self._logged = (0, None)  # (step, validation) last written to the log

    def name(self) -> str:
        return "fine_tune"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "<p>Fine-tunes RSCoVLM on dataset folders from <i>Export training data</i> (<code>rscovlm train fit</code>): "
            "LoRA (an adapter for the backend's <code>--adapter</code>), QLoRA (4-bit base, CUDA) or every weight "
            "(a checkpoint for <code>--model</code>). Data: folders separated by commas; <code>folder*3</code> repeats one "
            "three times, <code>folder%20</code> keeps 20 percent of it.</p>"
            "<p>Runs as a job of the RSCoVLM backend, in its own process; loss, learning rate and validation loss and AP_nc are "
            "logged here. Cancelling writes a checkpoint: run the algorithm again with the same settings to resume.</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, "Method", list(METHODS), False, 0))
        self.add_data_parameter()
        self.addParameter(QgsProcessingParameterString(self.VAL_DATA, "Validation data (default: the val split of the training data)", optional=True))
        self.add_run_parameters("Optimizer steps (0: the config's epochs)", "Config: lora, full or a YAML file on the backend's machine (default: the method's)",
                                "lora_r=8, learning_rate=5e-5", "LoRA: also write the adapter merged into a full checkpoint")
        self.addOutput(QgsProcessingOutputFolder(self.RESULT, "Adapter or checkpoint folder"))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_LOSS, "Validation loss"))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_AP_NC, "Validation AP_nc"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        body, status = self.run_request(
            lambda: build_fit_request(
                self.parameterAsString(parameters, self.MODEL, context),
                self.parameterAsString(parameters, self.DATA, context),
                self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                METHODS[self.parameterAsEnum(parameters, self.METHOD, context)],
                self.parameterAsString(parameters, self.CONFIG, context),
                self.parameterAsString(parameters, self.VAL_DATA, context),
                self.parameterAsInt(parameters, self.MAX_STEPS, context),
                self.parameterAsBoolean(parameters, self.MERGE, context),
                self.parameterAsString(parameters, self.SETTINGS, context),
                self.parameterAsBoolean(parameters, self.OVERWRITE, context),
            ),
            lambda body, connection: f"fine-tuning {body['model']} ({body['method']}, config {body['config']}) on {body['data']} via {connection.url}",
            feedback,
        )  # fmt: skip
        outputs, summary = status.get("outputs") or {}, status.get("result") or {}
        result = outputs.get("adapter") or outputs.get("model")
        feedback.pushInfo(f"trained {summary.get('steps')} step(s); wrote {result}")
        if outputs.get("merged"):
            feedback.pushInfo(f"merged checkpoint: {outputs['merged']}")
        return {
            self.OUTPUT: outputs.get("run") or body["out"],
            self.RESULT: result,
            self.VAL_LOSS: summary.get("val_loss"),
            self.VAL_AP_NC: summary.get("val_ap_nc"),
        }

    def report(self, status: dict, feedback: QgsProcessingFeedback) -> None:
        progress = status.get("progress") or {}
        step = int(progress.get("done") or 0)
        if step > self._logged[0] and progress.get("loss") is not None:
            feedback.pushInfo(f"step {step}/{progress.get('total')}  epoch {progress.get('epoch')}  loss {progress['loss']:.4f}  "
                              f"learning rate {progress.get('learning_rate') or 0:.3g}")
        validation = (progress.get("val_loss"), progress.get("val_ap_nc"))
        if validation != (None, None) and validation != self._logged[1]:
            loss, ap = validation
            shown = [f"loss {loss:.4f}" if loss is not None else "", f"AP_nc {ap:.3f}" if ap is not None else ""]
            feedback.pushInfo("validation: " + ", ".join(text for text in shown if text))
        self._logged = (max(step, self._logged[0]), validation)


class ReinforceAlgorithm(ModelTrainingAlgorithm):
    ADAPTER, REWARD = "ADAPTER", "REWARD"
    ROUTE = "/training/grpo"
    SETTLE_S = FIT_SETTLE_S

    def __init__(self):
        super().__init__()
        self._logged = 0  # the step last written to the log

    def name(self) -> str:
        return "reinforce"

    def displayName(self) -> str:  # noqa: N802
        return "Reinforce (GRPO)"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "<p>Reinforcement fine-tuning with task rewards (<code>rscovlm train grpo</code>, GRPO on TRL): for each "
            "detection, grounding, classification, question or caption sample of the datasets the model answers several "
            "times, every answer is scored against the sample's answer (boxes by IoU, classes and answers by match, "
            "captions by ROUGE-L, nothing for an answer out of form) and a LoRA adapter learns from the better ones. "
            "Start from the base model, or from a Fine-tune adapter (merged in first).</p>"
            "<p>Runs as a job of the RSCoVLM backend; the mean reward per task is logged here. Cancelling writes a "
            "checkpoint: run the algorithm again with the same settings to resume.</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterString(self.ADAPTER, "Fine-tune adapter to start from (optional)", optional=True))
        self.add_data_parameter()
        self.add_run_parameters("Optimizer steps (0: the config's)", "Config: grpo or a YAML file on the backend's machine", "beta=0.0, num_generations=8",
                                "Also write the adapter merged into a full checkpoint")
        self.addOutput(QgsProcessingOutputFolder(self.RESULT, "Adapter folder"))
        self.addOutput(QgsProcessingOutputNumber(self.REWARD, "Mean reward of the last step"))

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        def describe(body: dict, connection) -> str:
            start = f" from {body['adapter']}" if body.get("adapter") else ""
            return f"GRPO on {body['model']}{start} (config {body['config']}) with {body['data']} via {connection.url}"

        body, status = self.run_request(
            lambda: build_grpo_request(
                self.parameterAsString(parameters, self.MODEL, context),
                self.parameterAsString(parameters, self.DATA, context),
                self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                self.parameterAsString(parameters, self.ADAPTER, context),
                self.parameterAsString(parameters, self.CONFIG, context),
                self.parameterAsInt(parameters, self.MAX_STEPS, context),
                self.parameterAsBoolean(parameters, self.MERGE, context),
                self.parameterAsString(parameters, self.SETTINGS, context),
                self.parameterAsBoolean(parameters, self.OVERWRITE, context),
            ),
            describe,
            feedback,
        )  # fmt: skip
        outputs, summary = status.get("outputs") or {}, status.get("result") or {}
        feedback.pushInfo(f"trained {summary.get('steps')} step(s) on {summary.get('prompts')} prompt(s); wrote {outputs.get('adapter')}")
        for reason, count in (summary.get("left_out") or {}).items():
            feedback.pushWarning(f"left out {count} sample(s): {reason}")
        return {self.OUTPUT: outputs.get("run") or body["out"], self.RESULT: outputs.get("adapter"),
                self.REWARD: (status.get("progress") or {}).get("reward")}

    def report(self, status: dict, feedback: QgsProcessingFeedback) -> None:
        progress = status.get("progress") or {}
        step = int(progress.get("done") or 0)
        if step > self._logged and progress.get("rewards"):
            rewards = ", ".join(f"{task} {value:.3f}" for task, value in progress["rewards"].items())
            feedback.pushInfo(f"step {step}/{progress.get('total')}  mean reward {progress.get('reward') or 0:.3f}  ({rewards})")
            self._logged = step


TRAINING_ALGORITHMS = (ExportTrainingDataAlgorithm, FineTuneAlgorithm, ReinforceAlgorithm)
