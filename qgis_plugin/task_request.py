"""What the user asks, as the backend's TaskRequest JSON (resources/openapi.json), and the short
names its answers get. Pure Python: the dock and the Processing algorithms both build their
requests here.

A request carries only the options the user set: the backend fills the others from the model
it runs (the tile and view sizes that model was trained on), so the dock, Processing and the
command line ask the model the same question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# DOTA-v1.0's fifteen categories: the list RSCoVLM-7B was trained and evaluated with, offered
# until the backend says what its own model was trained on (GET /model: defaults.classes).
DOTA_CLASSES = (
    "plane",
    "ship",
    "storage tank",
    "baseball diamond",
    "tennis court",
    "basketball court",
    "ground track field",
    "harbor",
    "bridge",
    "large vehicle",
    "small vehicle",
    "helicopter",
    "roundabout",
    "soccer ball field",
    "swimming pool",
)
# What a layer's name says the answer is; the full request goes into the layer's metadata.
NAME_TITLES = {"detect": "Detect", "ground": "Find", "caption": "Caption", "classify": "Class", "ask": "Ask", "describe": "Described",
               "zoom": "Zoom", "change": "Changes", "change_caption": "Changes"}
NAME_TEXT_CHARS = 24  # of an expression or a question, before '…'
NAME_CLASSES = 2  # classes named before '+N'



@dataclass(frozen=True)
class TaskKind:
    name: str  # the backend's task
    title: str  # what the user sees
    needs: str | None  # "classes", "expression", "question", "features" or None
    text_answer: bool  # answered in words (shown in the dock and history)
    two_dates: bool = False  # asked of an earlier raster and a later one of the same place


TASK_KINDS = (
    TaskKind("detect", "Detect objects", "classes", False),
    TaskKind("ground", "Find (grounding)", "expression", False),
    TaskKind("caption", "Describe", None, True),
    TaskKind("classify", "Classify", "classes", True),
    TaskKind("ask", "Ask", "question", True),
    TaskKind("describe", "Describe features", "features", False),
    TaskKind("change", "Compare two dates", "classes", False, True),
    TaskKind("change_caption", "Describe the changes", None, True, True),
)
# What `change` looks for per class (the backend's options.change_kinds), as the user picks it.
CHANGE_CHOICES = (
    ("changed (either way)", ["changed"]),
    ("appeared", ["appeared"]),
    ("disappeared", ["disappeared"]),
    ("appeared and disappeared, apart", ["appeared", "disappeared"]),
)
MAX_REGIONS = 1000  # the backend's limit (backend.contract.MAX_REGIONS)
TASKS = {kind.name: kind for kind in TASK_KINDS}


class RequestProblem(ValueError):
    """The request cannot be sent as it is; the message names the fix."""


def split_classes(text: str) -> list[str]:
    """'plane, ship;small vehicle' -> ['plane', 'ship', 'small vehicle'], without repeats."""
    parts = (part.strip() for part in text.replace(";", ",").replace("\n", ",").split(","))
    return list(dict.fromkeys(part for part in parts if part))


def build_request(
    task: str,
    raster: str,
    extent: tuple[float, float, float, float] | None = None,
    extent_crs: str | None = None,
    classes: list[str] | None = None,
    text: str = "",
    tile_size: int | None = None,
    gsd: float | None = None,
    zoom: str | None = None,
    box_form: str | None = None,
    choices: list[str] | None = None,
    regions: list[tuple[float, float, float, float]] | None = None,
    regions_crs: str | None = None,
    raster_after: str | None = None,
    change_kinds: list[str] | None = None,
) -> dict:
    """A TaskRequest body. `text` is the expression (ground) or the question (ask); `choices`
    make the question multiple choice; `regions` are the boxes of the features to describe, in
    `regions_crs`; `box_form` 'polygon' asks grounding for a rotated polygon; `raster_after` is
    the later raster of a comparison of two dates, `change_kinds` what changes it looks for."""
    kind = TASKS.get(task)
    if kind is None:
        raise RequestProblem(f"Unknown task '{task}'. Choose one of: {', '.join(TASKS)}.")
    body: dict = {"task": task, "raster": raster}
    if kind.two_dates:
        if raster_after is None:
            raise RequestProblem("No later raster given. Choose the raster of the second date beside 'Compared with'.")
        body["raster_after"] = raster_after
    if extent is not None and kind.needs != "features":  # features are described where they are, with context
        body["extent"] = [float(v) for v in extent]
        if extent_crs:
            body["extent_crs"] = extent_crs
    if kind.needs == "classes":
        cleaned = list(dict.fromkeys(c.strip() for c in classes or [] if c and c.strip()))
        if not cleaned:
            what = {"detect": "object classes to detect (e.g. plane, ship)", "change": "object classes whose changes to find (e.g. building, small vehicle)"}.get(
                task, "scene classes to choose from (e.g. airport, harbor, farmland)")
            raise RequestProblem(f"No classes given. Enter the {what}.")
        body["classes"] = cleaned
    elif kind.needs == "expression":
        if not text.strip():
            raise RequestProblem("No expression given. Describe what to find (e.g. the white ship next to the pier).")
        body["expression"] = text.strip()
    elif kind.needs == "question":
        if not text.strip():
            raise RequestProblem("No question given. Type the question to ask about the extent.")
        body["question"] = text.strip()
        answers = [c.strip() for c in choices or [] if c.strip()]
        if answers and not 2 <= len(answers) <= 5:
            raise RequestProblem(f"{len(answers)} answer choice(s) given. Give two to five, separated by ';', or none.")
        if answers:
            body["choices"] = answers
    elif kind.needs == "features":
        if not regions:
            raise RequestProblem("No features to describe. Select features of a vector layer (or choose a layer with features).")
        if len(regions) > MAX_REGIONS:
            raise RequestProblem(f"{len(regions)} features are selected; describe at most {MAX_REGIONS} at once.")
        body["regions"] = [[float(v) for v in region] for region in regions]
        if regions_crs:
            body["extent_crs"] = regions_crs
    options: dict = {}
    if tile_size and task in ("detect", "change"):  # the overlap that goes with it is the backend's: a quarter of the tile
        options["tile_size"] = int(tile_size)
    if gsd:
        options["gsd"] = float(gsd)
    if zoom and zoom != "auto" and task == "ask":  # the Zoom-in Chain was trained on questions only
        options["zoom"] = zoom
    if box_form and task == "ground" and box_form != "hbox":
        options["box_form"] = box_form
    if change_kinds and task == "change" and list(change_kinds) != ["changed"]:
        options["change_kinds"] = list(change_kinds)
    if options:
        body["options"] = options
    return body


def describe_request(body: dict) -> str:
    """The question as the history shows it."""
    kind = TASKS[body["task"]]
    if kind.needs == "classes":
        return f"{kind.title}: {', '.join(body['classes'])}"
    if kind.needs == "expression":
        return f"{kind.title}: {body['expression']}"
    if kind.needs == "question":
        return f"{kind.title}: {body['question']}" + (f" ({' / '.join(body['choices'])})" if body.get("choices") else "")
    if kind.needs == "features":
        return f"{kind.title}: {len(body['regions'])} feature(s)"
    return kind.title


def short_name(body: dict, number: int, task: str | None = None) -> str:
    """A layer name that fits the Layers panel: what was asked in a few words, and the job's
    number, so two answers never look alike ('Detect plane, ship +4 #3', 'Ask How many… #5').
    `task` names another layer of the same job (its zoom regions)."""
    kind = TASKS[body["task"]]
    title = NAME_TITLES[task or body["task"]]
    if kind.needs == "classes":
        classes = body["classes"]
        words = ", ".join(classes[:NAME_CLASSES]) + (f" +{len(classes) - NAME_CLASSES}" if len(classes) > NAME_CLASSES else "")
    elif kind.needs in ("expression", "question"):
        text = " ".join(str(body[kind.needs]).split())
        words = text if len(text) <= NAME_TEXT_CHARS else text[: NAME_TEXT_CHARS - 1].rstrip() + "…"
    elif kind.needs == "features":
        words = f"{len(body['regions'])} feature(s)"
    else:
        words = ""
    return f"{title} {words} #{number}" if words else f"{title} #{number}"


def request_abstract(body: dict, raster_name: str, model: str | None) -> str:
    """The whole request, for the layer's metadata: what was asked, of which layer and model."""
    lines = [describe_request(body), f"Raster layer: {raster_name}", f"Model: {model or 'unknown'}", "Request:"]
    return "\n".join(lines) + "\n" + json.dumps(body, indent=2, ensure_ascii=False)
