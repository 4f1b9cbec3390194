"""What the user asks, as the backend's TaskRequest JSON (resources/openapi.json). Pure Python:
the dock and the Processing algorithms both build their requests here."""

from __future__ import annotations

from dataclasses import dataclass

# The DOTA v2.0 categories (v1.0's fifteen, container crane, airport, helipad): what RSCoVLM's
# detection data names, so the dock offers them.
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
    "container crane",
    "airport",
    "helipad",
)


@dataclass(frozen=True)
class TaskKind:
    name: str  # the backend's task
    title: str  # what the user sees
    needs: str | None  # "classes", "expression", "question" or None
    text_answer: bool  # answered in words (shown in the dock and history)


TASK_KINDS = (
    TaskKind("detect", "Detect objects", "classes", False),
    TaskKind("ground", "Find (grounding)", "expression", False),
    TaskKind("caption", "Describe", None, True),
    TaskKind("classify", "Classify", "classes", True),
    TaskKind("ask", "Ask", "question", True),
)
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
) -> dict:
    """A TaskRequest body. `text` is the expression (ground) or the question (ask)."""
    kind = TASKS.get(task)
    if kind is None:
        raise RequestProblem(f"Unknown task '{task}'. Choose one of: {', '.join(TASKS)}.")
    body: dict = {"task": task, "raster": raster}
    if extent is not None:
        body["extent"] = [float(v) for v in extent]
        if extent_crs:
            body["extent_crs"] = extent_crs
    if kind.needs == "classes":
        cleaned = list(dict.fromkeys(c.strip() for c in classes or [] if c and c.strip()))
        if not cleaned:
            what = "object classes to detect (e.g. plane, ship)" if task == "detect" else "scene classes to choose from (e.g. airport, harbor, farmland)"
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
    options: dict = {}
    if tile_size:
        options["tile_size"] = int(tile_size)
        # The backend's default overlap (128 px) must stay below the tile: keep a quarter of it.
        options["tile_overlap"] = min(128, int(tile_size) // 4)
    if gsd:
        options["gsd"] = float(gsd)
    if zoom:
        options["zoom"] = zoom
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
        return f"{kind.title}: {body['question']}"
    return kind.title
