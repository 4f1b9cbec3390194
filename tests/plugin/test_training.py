"""The training algorithms, "Export training data" and "Fine-tune", headless through
`processing.run` against a real `rscovlm serve` with the tiny checkpoint: the dataset and run
folders they leave, the feedback's progress and log, uploads, cancel (and resuming), bad input;
and their request bodies against resources/openapi.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from qgis.core import (
    QgsFeatureRequest,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

from qgis_plugin.task_request import RequestProblem
from qgis_plugin.training_request import build_export_request, build_fit_request, build_grpo_request, data_spec

from .conftest import backend_tool, run_backend_module
from .test_contract import OPENAPI, validate

# Small tiles keep the export and each fine-tuning step on the tiny checkpoint quick.
TILES = {"TILE_SIZE": 256, "TILE_OVERLAP": 64, "BLOCK_SIZE": 512, "KEEP_EMPTY": 1.0, "VAL_FRACTION": 0.25}
QUICK = ("lora_r=4, num_workers=0, val_samples=2, val_ap_samples=1, val_max_new_tokens=8, rescale=0, warmup_steps=0, "
         "grad_accum=1, log_every=1, gradient_checkpointing=false, min_pixels=50176, max_pixels=65536")


class Recorder(QgsProcessingFeedback):
    """Keeps the log, the progress and the errors; cancels itself once `cancel_when` holds."""

    def __init__(self, cancel_when=None):
        super().__init__()
        self.lines, self.progress, self.errors = [], [], []
        self.cancel_when = cancel_when
        self.progressChanged.connect(self._progressed)

    def _progressed(self, value):
        self.progress.append(value)
        if self.cancel_when is not None and self.cancel_when(self):
            self.cancel()

    def pushInfo(self, info):  # noqa: N802 - QGIS's name
        self.lines.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802
        self.lines.append(warning)
        super().pushWarning(warning)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(error)


def labels_of(scene_tif: Path) -> Path:
    return scene_tif.with_suffix(".truth.gpkg")


@pytest.fixture(scope="session")
def dataset(scene_tif, tmp_path_factory) -> Path:
    """The scene exported by `rscovlm train export`, for the fine-tuning tests."""
    out = tmp_path_factory.mktemp("datasets") / "scene"
    subprocess.run([str(backend_tool("rscovlm")), "train", "export", "--raster", str(scene_tif), "--labels", str(labels_of(scene_tif)),
                    "--class-field", "label", "--out", str(out), "--tile-size", "256", "--tile-overlap", "64", "--block-size", "512",
                    "--val-fraction", "0.25", "--no-progress"], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def large_scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.tif"
    run_backend_module("-m", "training.synthetic", "--out", str(path), "--size", "2048", "--seed", "5")
    return path


def test_the_training_algorithms_register(provider):
    algorithms = {a.name(): a for a in provider.algorithms()}
    export, fit = algorithms["export_training_data"], algorithms["fine_tune"]
    assert (export.displayName(), fit.displayName()) == ("Export training data", "Fine-tune")
    assert export.group() == fit.group() == "Training"
    parameters = {p.name(): p for p in export.parameterDefinitions()}
    assert parameters["CLASS_FIELD"].parentLayerParameterName() == "LABELS"
    assert [p.name() for p in fit.parameterDefinitions()][:5] == ["MODEL", "METHOD", "DATA", "VAL_DATA", "MAX_STEPS"]
    assert {o.name() for o in fit.outputDefinitions()} >= {"OUTPUT", "RESULT", "VAL_LOSS", "VAL_AP_NC"}
    reinforce = algorithms["reinforce"]
    assert (reinforce.displayName(), reinforce.group()) == ("Reinforce (GRPO)", "Training")
    assert [p.name() for p in reinforce.parameterDefinitions()][:4] == ["MODEL", "ADAPTER", "DATA", "MAX_STEPS"]
    assert {o.name() for o in reinforce.outputDefinitions()} == {"OUTPUT", "RESULT", "REWARD"}


@pytest.mark.backend
def test_export_training_data(provider, use_backend, scene_tif, tmp_path):
    import processing

    feedback = Recorder()
    out = tmp_path / "boats"
    result = processing.run(
        "rscovlm:export_training_data",
        {"INPUT": str(scene_tif), "LABELS": str(labels_of(scene_tif)), "CLASS_FIELD": "label", **TILES, "OUTPUT": str(out)},
        feedback=feedback,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert result["OUTPUT"] == str(out) and result["CLASSES"] == ", ".join(manifest["classes"])
    assert (result["TRAIN_TILES"], result["VAL_TILES"]) == (counts["train"]["tiles"], counts["val"]["tiles"]) and result["VAL_TILES"] > 0
    for split in ("train", "val"):
        assert len(list((out / split / "images").glob("*.png"))) == counts[split]["tiles"]
        assert (out / split / "conversations.jsonl").stat().st_size > 0
    # the extent defaulted to the labels' (in the raster's CRS), and the labels were read where they lie
    assert manifest["source"]["labels"] == str(labels_of(scene_tif)) and manifest["source"]["raster_crs"] == "EPSG:32633"
    assert feedback.progress and feedback.progress[-1] == 100.0
    assert f"train: {counts['train']['tiles']} tile(s)" in " ".join(feedback.lines)


@pytest.mark.backend
def test_export_from_selected_features_of_a_memory_layer_uploaded(provider, use_backend, scene_tif, tmp_path, qgis_new_project):
    """A layer with no file is written to a temporary GeoPackage by QGIS, only its selection;
    a backend set to take uploads gets the raster and that file as uploads, deleted afterwards."""
    import processing

    use_backend.upload_rasters = True
    use_backend.save()
    truth = QgsVectorLayer(str(labels_of(scene_tif)), "truth", "ogr")
    memory = truth.materialize(QgsFeatureRequest())
    QgsProject.instance().addMapLayer(memory)
    ships = [f.id() for f in memory.getFeatures() if f["label"] == "ship"]
    memory.selectByIds(ships)
    out = tmp_path / "ships"
    processing.run("rscovlm:export_training_data", {
        "INPUT": str(scene_tif), "LABELS": QgsProcessingFeatureSourceDefinition(memory.id(), True), "CLASS_FIELD": "label",
        **TILES, "OUTPUT": str(out),
    })  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["ship"] and manifest["counts"]["labels"]["features"] == len(ships)
    uploads = Path(manifest["source"]["raster"]).parent
    assert uploads.name.startswith("rscovlm-uploads-") and Path(manifest["source"]["labels"]).parent == uploads
    assert not Path(manifest["source"]["raster"]).exists() and not Path(manifest["source"]["labels"]).exists()


@pytest.mark.backend
def test_cancelling_an_export_leaves_no_dataset(provider, use_backend, large_scene, tmp_path):
    import processing

    feedback = Recorder(cancel_when=lambda f: len(f.progress) >= 1 and 0 < f.progress[-1] < 50)
    out = tmp_path / "cancelled"
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("rscovlm:export_training_data", {
            "INPUT": str(large_scene), "LABELS": str(labels_of(large_scene)), "CLASS_FIELD": "label",
            "TILE_SIZE": 56, "TILE_OVERLAP": 0, "BLOCK_SIZE": 512, "OUTPUT": str(out),
        }, feedback=feedback)  # fmt: skip
    assert any("export stopped after" in e and "nothing was written" in e for e in [str(raised.value), *feedback.errors])
    assert not (out / "manifest.json").exists() and (not out.exists() or not any(out.iterdir()))


@pytest.mark.backend
@pytest.mark.slow
def test_fine_tune_logs_steps_and_validation(provider, use_backend, tiny_checkpoint, dataset, tmp_path):
    import processing

    feedback = Recorder()
    run = tmp_path / "run"
    result = processing.run(
        "rscovlm:fine_tune",
        {"MODEL": str(tiny_checkpoint), "METHOD": 0, "DATA": f"{dataset}*2", "MAX_STEPS": 3, "SETTINGS": QUICK, "OUTPUT": str(run)},
        feedback=feedback,
    )
    assert result["OUTPUT"] == str(run) and result["RESULT"] == str(run / "adapter")
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "checkpoints" / "step-0000003").is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["data"] == f"{dataset}*2" and metrics["method"] == "lora"
    assert result["VAL_LOSS"] == pytest.approx(metrics["val_loss"]) and result["VAL_AP_NC"] == pytest.approx(metrics["val_ap_nc"])
    steps = [line for line in feedback.lines if line.startswith("step ")]
    assert steps and steps[-1].startswith("step 3/3") and all("loss" in line and "learning rate" in line for line in steps)
    assert any(line.startswith("validation: loss") and "AP_nc" in line for line in feedback.lines)
    assert feedback.progress[-1] == 100.0


@pytest.mark.backend
@pytest.mark.slow
def test_cancelled_fine_tune_keeps_a_checkpoint_and_resumes(provider, use_backend, tiny_checkpoint, dataset, tmp_path):
    import processing

    run = tmp_path / "run"
    parameters = {"MODEL": str(tiny_checkpoint), "METHOD": 0, "DATA": str(dataset), "MAX_STEPS": 200,
                  "SETTINGS": QUICK + ", save_every=1000", "OUTPUT": str(run)}
    feedback = Recorder(cancel_when=lambda f: any(line.startswith("step ") for line in f.lines))
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("rscovlm:fine_tune", parameters, feedback=feedback)
    [error] = [e for e in {str(raised.value), *feedback.errors} if "Cancelled: stopped at step" in e]
    step = int(error.split("stopped at step ")[1].split()[0])
    assert (run / "checkpoints" / f"step-{step:07d}").is_dir() and not (run / "adapter").exists()

    resumed = Recorder()
    processing.run("rscovlm:fine_tune", {**parameters, "MAX_STEPS": step + 1}, feedback=resumed)
    assert json.loads((run / "metrics.json").read_text())["steps"] == step + 1
    assert [line.split()[1] for line in resumed.lines if line.startswith("step ")] == [f"{step + 1}/{step + 1}"]


@pytest.mark.backend
@pytest.mark.slow
def test_reinforce_logs_the_reward_per_task_and_writes_an_adapter(provider, use_backend, tiny_checkpoint, dataset, tmp_path):
    import processing

    feedback = Recorder()
    run = tmp_path / "rl"
    settings = "prompts_per_step=1, num_generations=2, max_tokens_detect=16, max_tokens_ground=16, save_every=1"
    result = processing.run("rscovlm:reinforce", {"MODEL": str(tiny_checkpoint), "DATA": str(dataset), "MAX_STEPS": 2, "SETTINGS": settings,
                                                  "OUTPUT": str(run)}, feedback=feedback)
    assert result["RESULT"] == str(run / "adapter") and (run / "adapter" / "adapter_config.json").is_file()
    steps = [line for line in feedback.lines if line.startswith("step ")]
    assert steps and steps[-1].startswith("step 2/2  mean reward") and all("format" in line for line in steps)
    assert json.loads((run / "metrics.json").read_text())["trainer"] == "grpo" and result["REWARD"] is not None


@pytest.mark.backend
def test_bad_input_is_reported(provider, use_backend, scene_tif, tiny_checkpoint, tmp_path):
    import processing

    cases = [
        ("rscovlm:export_training_data", {"INPUT": str(scene_tif), "LABELS": str(labels_of(scene_tif)), "CLASS_FIELD": "label",
                                          "CLASS_NAME": "ship", "OUTPUT": str(tmp_path / "a")}, "not both"),
        ("rscovlm:export_training_data", {"INPUT": str(scene_tif), "LABELS": str(labels_of(scene_tif)), "OUTPUT": str(tmp_path / "b")},
         "No class given"),
        ("rscovlm:export_training_data", {"INPUT": str(scene_tif), "LABELS": str(labels_of(scene_tif)), "CLASS_FIELD": "label",
                                          "EXTENT": "0,10,0,10 [EPSG:32633]", "OUTPUT": str(tmp_path / "c")}, "outside raster layer"),
        ("rscovlm:fine_tune", {"MODEL": str(tiny_checkpoint), "DATA": str(tmp_path / "nothing"), "MAX_STEPS": 1, "OUTPUT": str(tmp_path / "d")},
         "The backend's job failed: the data spec names a missing dataset"),
        ("rscovlm:fine_tune", {"MODEL": str(tiny_checkpoint), "DATA": "x", "SETTINGS": "lora_r", "OUTPUT": str(tmp_path / "e")},
         "Setting 'lora_r' is not key=value"),
        ("rscovlm:reinforce", {"MODEL": str(tiny_checkpoint), "DATA": str(tmp_path / "nothing"), "MAX_STEPS": 1, "OUTPUT": str(tmp_path / "f")},
         "The backend's job failed: the data spec names a missing dataset"),
    ]
    for algorithm, parameters, problem in cases:
        feedback = Recorder()
        with pytest.raises(QgsProcessingException) as raised:
            processing.run(algorithm, parameters, feedback=feedback)
        assert any(problem in error for error in [str(raised.value), *feedback.errors]), (problem, feedback.errors)


def test_request_bodies_fit_the_schema():
    export = build_export_request("/data/scene.tif", "/data/labels.gpkg", "/data/out", class_field="type", layer="boats",
                                  text_field="description", extent=(0.0, 0.0, 10.0, 10.0), extent_crs="EPSG:32633",
                                  options={"tile_size": 504, "tile_overlap": 128, "gsd": 0.3, "val_fraction": 0.2})
    validate(export, "ExportTrainingRequest")
    fit = build_fit_request("Qingyun/RSCoVLM-7B-2512", "data/boats*3\ndata/general%20", "runs/boats", "full", val_data="data/val",
                            max_steps=10, merge=True, overrides="lora_r=8; learning_rate = 5e-5")
    validate(fit, "FitTrainingRequest")
    assert fit["data"] == "data/boats*3,data/general%20" and fit["config"] == "full"
    assert fit["overrides"] == ["lora_r=8", "learning_rate=5e-5"]
    assert build_fit_request("m", "d", "o")["config"] == "lora" and data_spec(" a , ,b ") == "a,b"
    grpo = build_grpo_request("m", "data/boats", "runs/rl", adapter="runs/boats/adapter", max_steps=5, overrides="beta=0.0")
    validate(grpo, "GrpoTrainingRequest")
    assert grpo["config"] == "grpo" and grpo["adapter"] == "runs/boats/adapter" and grpo["overrides"] == ["beta=0.0"]
    with pytest.raises(RequestProblem, match="No class given"):
        build_export_request("r", "l", "o")


def test_the_training_fields_the_plugin_reads_exist():
    schemas = OPENAPI["components"]["schemas"]
    assert {"done", "total", "unit", "epoch", "loss", "learning_rate", "val_loss", "val_ap_nc", "reward", "rewards"} <= set(schemas["TrainingProgress"]["properties"])
    assert {"dataset", "run", "adapter", "model", "merged"} <= set(schemas["TrainingOutputs"]["properties"])
    assert {"state", "progress", "outputs", "result", "error"} <= set(schemas["TrainingJobStatus"]["properties"])
    assert {"id", "labels"} <= set(schemas["VectorUpload"]["properties"])
    routes = {(path, method) for path, item in OPENAPI["paths"].items() for method in item}
    assert {("/training/export", "post"), ("/training/fit", "post"), ("/training/grpo", "post"), ("/training/{job_id}", "get"), ("/training/{job_id}", "delete"),
            ("/vectors", "post"), ("/vectors/{upload_id}", "delete")} <= routes
