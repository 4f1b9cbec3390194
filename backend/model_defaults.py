"""What a checkpoint says about how it was trained, so that a request is asked the way the model
learned: the view sizes (pixel budget, detection tile) and the detection classes its prompts
listed.

A request leaves an option unset unless the user set it (pydantic's `model_fields_set`);
`with_model_defaults` fills what is unset from the checkpoint's declarations, and TaskOptions'
own defaults (MODEL_IO's) fill the rest. The CLI, the service and `eval run` all go through
it, so the dock, a script and the command line ask a model the same question.

Sources, the later winning: the pixel range of the checkpoint's processor config (RSCoVLM's
training script saves the range it trained with, `preprocessor_config.json`, and its evaluator
reads it back; a hub id's is read from the local download cache), then the checkpoint's
`rscovlm_task_defaults.json` (TaskOptions fields, e.g. the demo's 224 px tiles and 448 px views,
and `classes`, the detection classes it was trained on; under `tasks`, options of one task
only, e.g. `{"detect": {"gsd": 0.15}}` for a checkpoint that learned detection on tiles enlarged
twice and everything else at its imagery's 0.3 m), then an adapter's file of the same name (a fine-tuning
run writes its dataset's classes). Without a declaration the classes are DOTA-v1.0's fifteen,
RSCoVLM's list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backend.contract import TASKS, TaskOptions, TaskRequest
from backend.errors import UserError, validation_problem
from backend.prompts import DOTA_CLASSES

TASK_DEFAULTS_FILE = "rscovlm_task_defaults.json"
CLASSES_KEY = "classes"
TASKS_KEY = "tasks"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # transformers 4 and 5 names


@dataclass(frozen=True)
class ModelDefaults:
    """Task options a checkpoint declares, the classes it was trained to detect, and the files
    that said so."""

    options: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = DOTA_CLASSES
    sources: tuple[str, ...] = ()
    by_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # options declared for one task, over `options`

    def for_task(self, task: str) -> dict[str, Any]:
        """The options declared for a request of this task."""
        return self.options | self.by_task.get(task, {})

    def describe(self) -> dict:
        """For GET /model: every option as a request gets it when it sets none, and which of
        them the checkpoint declared."""
        return {
            "options": TaskOptions(**self.options).model_dump(mode="json"),
            "declared": sorted(self.options),
            "tasks": self.by_task,
            "classes": list(self.classes),
            "sources": list(self.sources),
        }

    @classmethod
    def from_description(cls, described: dict | None) -> ModelDefaults:
        """The defaults another `rscovlm serve` reports under GET /model; general ones when it
        reports none (vLLM, an older server) or something unreadable."""
        if not isinstance(described, dict):
            return cls()
        options = described.get("options") if isinstance(described.get("options"), dict) else {}
        declared = {name: options[name] for name in described.get("declared") or [] if name in options and name in TaskOptions.model_fields}
        classes = [str(c) for c in described.get("classes") or [] if isinstance(c, str) and c.strip()]
        tasks = described.get("tasks") if isinstance(described.get("tasks"), dict) else {}
        by_task = {str(task): {k: v for k, v in given.items() if k in TaskOptions.model_fields} for task, given in tasks.items() if isinstance(given, dict)}
        try:
            for given in by_task.values():
                TaskOptions(**(declared | given))
        except ValidationError:
            by_task = {}
        return cls(declared, tuple(classes) or DOTA_CLASSES, tuple(str(s) for s in described.get("sources") or []),
                   {task: given for task, given in by_task.items() if given})


def read_declaration(folder: Path) -> tuple[dict, tuple[str, ...] | None, dict[str, dict]] | None:
    """(options, classes, options by task) a folder's rscovlm_task_defaults.json declares; None
    without the file. A file that cannot be used is refused with one line."""
    path = folder / TASK_DEFAULTS_FILE
    if not path.is_file():
        return None
    try:
        declared = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as JSON ({exc}).", "Fix or delete the file.") from exc
    if not isinstance(declared, dict):
        raise UserError(f"{path} is not a JSON object.", "Fix or delete the file.")
    classes = declared.pop(CLASSES_KEY, None)
    by_task = declared.pop(TASKS_KEY, {})
    if not isinstance(by_task, dict) or not all(task in TASKS and isinstance(given, dict) for task, given in by_task.items()):
        raise UserError(f"{path}: '{TASKS_KEY}' must map tasks ({', '.join(TASKS)}) to options.", "Fix or delete the file.")
    unknown = sorted((set(declared).union(*by_task.values())) - set(TaskOptions.model_fields))
    if unknown:
        raise UserError(
            f"{path} names unknown task options: {', '.join(unknown)}.",
            f"Use '{CLASSES_KEY}', '{TASKS_KEY}' and fields of TaskOptions: {', '.join(TaskOptions.model_fields)}.",
        )
    if classes is not None and (not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes)):
        raise UserError(f"{path}: '{CLASSES_KEY}' must be a non-empty list of class names.", "Fix or delete the file.")
    try:
        for given in [{}, *by_task.values()]:
            TaskOptions(**(declared | given))
    except ValidationError as exc:
        raise UserError(f"{path}: {validation_problem(exc.errors())}", "Fix or delete the file.") from None
    return declared, tuple(c.strip() for c in classes) if classes else None, by_task


def _processor_file(model: str) -> Path | None:
    """The checkpoint's processor config: in its folder, or for a hub id in the local cache."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return next((folder / name for name in PROCESSOR_FILES if (folder / name).is_file()), None)
    if model.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in PROCESSOR_FILES:
        cached = try_to_load_from_cache(model, name)
        if isinstance(cached, str):
            return Path(cached)
    return None


def trained_pixel_range(path: Path) -> dict:
    """min_pixels / max_pixels a processor config holds (as keys, or as the image processor's
    size shortest_edge / longest_edge); {} when it holds none that TaskOptions accepts."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    config = config.get("image_processor", config) if isinstance(config, dict) else {}
    if not isinstance(config, dict):
        return {}
    size = config.get("size") if isinstance(config.get("size"), dict) else {}
    found = {"min_pixels": config.get("min_pixels", size.get("shortest_edge")), "max_pixels": config.get("max_pixels", size.get("longest_edge"))}
    found = {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}
    try:
        TaskOptions(**found)
    except ValidationError:
        return {}
    return found


def model_defaults(model: str | None, adapter: str | None = None) -> ModelDefaults:
    """The defaults of a checkpoint folder or hub id (and an adapter on it); the general ones
    for what declares nothing."""
    options: dict = {}
    by_task: dict[str, dict] = {}
    classes: tuple[str, ...] | None = None
    sources: list[str] = []
    processor = _processor_file(model) if model else None
    if processor is not None and trained_pixel_range(processor):
        options.update(trained_pixel_range(processor))
        sources.append(str(processor))
    for folder in (Path(model).expanduser() if model else None, Path(adapter).expanduser() if adapter else None):
        declaration = read_declaration(folder) if folder is not None and folder.is_dir() else None
        if declaration is None:
            continue
        options.update(declaration[0])
        classes = declaration[1] or classes
        for task, given in declaration[2].items():
            by_task[task] = by_task.get(task, {}) | given
        sources.append(str(folder / TASK_DEFAULTS_FILE))
    return ModelDefaults(options, classes or DOTA_CLASSES, tuple(sources), by_task)


def with_model_defaults(request: TaskRequest, defaults: ModelDefaults) -> TaskRequest:
    """The request with every option it leaves unset taken from the checkpoint's declarations.
    A declared tile overlap belongs to the declared tile: a request that sets its own tile size
    gets the overlap that goes with it."""
    given = request.options.model_dump(exclude_unset=True)
    declared = defaults.for_task(request.task)
    if "tile_size" in given:
        declared.pop("tile_overlap", None)
    try:
        options = TaskOptions(**(declared | given))
    except ValidationError as exc:
        raise UserError(
            f"{validation_problem(exc.errors())[:-1]} (with the model's defaults {declared}).",
            "Set the options that clash yourself.",
        ) from None
    return request.model_copy(update={"options": options})
