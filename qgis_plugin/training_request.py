"""What the training algorithms ask, as the backend's ExportTrainingRequest, FitTrainingRequest and
GrpoTrainingRequest JSON (resources/openapi.json). Pure Python, like task_request.py."""

from __future__ import annotations

from .task_request import RequestProblem

METHODS = ("lora", "qlora", "full")


def _split(text: str) -> list[str]:
    """Items separated by commas, semicolons or new lines, without blanks."""
    return [part.strip() for part in text.replace(";", ",").replace("\n", ",").split(",") if part.strip()]


def build_export_request(
    raster: str,
    labels: str,
    out: str,
    class_field: str = "",
    class_name: str = "",
    layer: str = "",
    text_field: str = "",
    caption_field: str = "",
    extent: tuple[float, float, float, float] | None = None,
    extent_crs: str | None = None,
    options: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """An ExportTrainingRequest body: one class source, the fields that are set, the options given."""
    class_field, class_name = class_field.strip(), class_name.strip()
    if bool(class_field) == bool(class_name):
        raise RequestProblem(
            "Choose the field that holds each object's class, or type one class name for every object (not both)."
            if class_field else "No class given. Choose the field that holds each object's class, or type one class name for every object."
        )
    if not out.strip():
        raise RequestProblem("No output folder given. Choose where the dataset is written.")
    body: dict = {"raster": raster, "labels": labels, "out": out.strip(), "overwrite": bool(overwrite)}
    for key, value in (("class_field", class_field), ("class_name", class_name), ("layer", layer),
                       ("text_field", text_field), ("caption_field", caption_field)):  # fmt: skip
        if value and value.strip():
            body[key] = value.strip()
    if extent is not None:
        body["extent"] = [float(v) for v in extent]
        if extent_crs:
            body["extent_crs"] = extent_crs
    if options:
        body["options"] = dict(options)
    return body


def data_spec(text: str) -> str:
    """'data/boats*3; data/general%20' (one per line, or separated by commas) -> the backend's
    comma-separated data spec."""
    return ",".join(_split(text))


def _run_request(model: str, data: str, out: str, config: str, max_steps: int, merge: bool, overrides: str, overwrite: bool) -> dict:
    """What a fit and a GRPO request share: the base model, the data, the run folder, the config,
    the steps, merge, settings and overwrite, each checked."""
    if not model.strip():
        raise RequestProblem("No base model given. Enter a checkpoint folder on the backend's machine, or a hub id.")
    spec = data_spec(data)
    if not spec:
        raise RequestProblem("No training data given. Enter dataset folders written by Export training data.")
    if not out.strip():
        raise RequestProblem("No run folder given. Choose where checkpoints and the result are written.")
    body: dict = {"model": model.strip(), "data": spec, "out": out.strip(), "config": config, "merge": bool(merge), "overwrite": bool(overwrite)}
    if max_steps:
        body["max_steps"] = int(max_steps)
    settings = _settings(overrides)
    if settings:
        body["overrides"] = settings
    return body


def build_fit_request(
    model: str,
    data: str,
    out: str,
    method: str = "lora",
    config: str = "",
    val_data: str = "",
    max_steps: int = 0,
    merge: bool = False,
    overrides: str = "",
    overwrite: bool = False,
) -> dict:
    """A FitTrainingRequest body. Without a config the shipped one for the method is used (full
    fine-tuning needs full.yaml's learning rate, not LoRA's)."""
    if method not in METHODS:
        raise RequestProblem(f"Unknown method '{method}'. Choose one of: {', '.join(METHODS)}.")
    body = _run_request(model, data, out, config.strip() or ("full" if method == "full" else "lora"), max_steps, merge, overrides, overwrite)
    body["method"] = method
    if data_spec(val_data):
        body["val_data"] = data_spec(val_data)
    return body


def _settings(overrides: str) -> list[str]:
    """'lora_r=8, learning_rate=5e-5' -> ['lora_r=8', 'learning_rate=5e-5'], each checked."""
    settings = _split(overrides)
    malformed = [item for item in settings if "=" not in item or not item.split("=", 1)[0].strip()]
    if malformed:
        raise RequestProblem(f"Setting '{malformed[0]}' is not key=value. Write e.g. lora_r=8, learning_rate=5e-5.")
    return [f"{key.strip()}={value.strip()}" for key, value in (item.split("=", 1) for item in settings)]


def build_grpo_request(
    model: str,
    data: str,
    out: str,
    adapter: str = "",
    config: str = "",
    max_steps: int = 0,
    merge: bool = False,
    overrides: str = "",
    overwrite: bool = False,
) -> dict:
    """A GrpoTrainingRequest body; without a config the shipped grpo.yaml."""
    body = _run_request(model, data, out, config.strip() or "grpo", max_steps, merge, overrides, overwrite)
    if adapter.strip():
        body["adapter"] = adapter.strip()
    return body
