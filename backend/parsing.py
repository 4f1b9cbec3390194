"""Reading model answers. The text is untrusted: nothing here raises on any input.

Every answer form of MODEL_IO is understood: polygon lines (`x1,y1,...,x4,y4 label`),
rotated-box lines (`cx,cy,w,h,angle label`), horizontal-box lines (`x1,y1,x2,y2 label`), the
JSON variants (`bbox_2d`, `oriented bbox`, `quadrant bbox`, fenced or bare) and
`There are none.`. Coordinates come back as corner points in view pixels; lines that cannot
be used are returned with the reason, so callers can count and report them.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from backend.geometry import hbox_to_points, rbox_to_points, rectify_many
from backend.prompts import NO_OBJECTS, ZOOM_TOOL, normalise_category

_NUMBER = r"-?\d+(?:\.\d+)?"
_COORDS_LINE = re.compile(rf"^\s*[\[(]?\s*((?:{_NUMBER}\s*,\s*)*{_NUMBER})\s*[\])]?\s*(.*?)\s*$")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_MAX_COORD = 1e6  # beyond any image; a runaway number, not a coordinate
_MAX_LINE = 2000  # a longer "line" is a runaway generation; regexes stay linear below this
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ParsedBox:
    points: np.ndarray  # (4, 2) corners in view pixels, clockwise from the top-most
    label: str  # as the model wrote it, or the matched class when classes were given
    line: int  # index of the answer line (or JSON item) it came from
    raw: str
    form: str  # "polygon", "rbox" or "hbox"


@dataclass
class ParsedAnswer:
    boxes: list[ParsedBox] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (raw line, reason)
    none: bool = False  # the model said there is nothing


@lru_cache(maxsize=64)
def _class_names(classes: tuple[str, ...]) -> dict[str, str]:
    return {normalise_category(c): c for c in classes}


def match_label(label: str, classes: Sequence[str], cutoff: float = 0.75) -> str | None:
    """The requested class a label stands for: exact, plural, or a close misspelling."""
    return _match_label(label, tuple(classes), cutoff)


@lru_cache(maxsize=4096)  # an answer repeats a handful of labels many times
def _match_label(label: str, classes: tuple[str, ...], cutoff: float) -> str | None:
    want = _class_names(classes)
    name = normalise_category(label).strip(" .:;")
    if name in want:
        return want[name]
    for candidate in (name[:-1] if name.endswith("s") else None, name[:-2] if name.endswith("es") else None):
        if candidate and candidate in want:
            return want[candidate]
    close = difflib.get_close_matches(name, list(want), n=1, cutoff=cutoff)
    return want[close[0]] if close else None


def _is_none_answer(text: str) -> bool:
    t = text.strip().lower().rstrip(".")
    return t in {NO_OBJECTS.lower().rstrip("."), "none", "there is none", "no objects"}


def _points_from_numbers(values: list[float], size: tuple[int, int]) -> tuple[np.ndarray | None, str, str]:
    """Corner points for 4 (hbox), 5 (rbox) or 8 (polygon) numbers; (None, form, reason) if unusable."""
    width, height = size
    if not all(math.isfinite(v) for v in values):
        return None, "", "a number that is not finite (NaN or Infinity)"
    if any(abs(v) > _MAX_COORD for v in values):
        return None, "", "coordinate out of range"
    n = len(values)
    if n == 8:
        form = "polygon"
    elif n == 5:
        form = "rbox"
    elif n == 4:
        form = "hbox"
    else:
        return None, "", f"{n} number(s), expected 4, 5 or 8"
    coords = list(values)
    position = coords if form != "rbox" else coords[:4]
    # MODEL_IO: answers with every value <= 1 are the one place normalised coordinates appear.
    if all(0 <= v <= 1 for v in position) and any(v > 0 for v in position):
        if form == "rbox":
            coords[0] *= width
            coords[1] *= height
            coords[2] *= width
            coords[3] *= height
        else:
            coords = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
    if form == "polygon":
        points = np.asarray(coords, dtype=float).reshape(4, 2)  # rectified with the others in `_rectify`
    elif form == "rbox":
        cx, cy, w, h, a = coords
        points = rbox_to_points(cx, cy, abs(w), abs(h), a) if w and h else None
    else:
        x1, y1, x2, y2 = coords
        points = hbox_to_points(x1, y1, x2, y2) if x1 != x2 and y1 != y2 else None
    if points is None:
        return None, form, "box has no area"
    return points, form, ""


def _rectify(answer: ParsedAnswer) -> None:
    """Polygon answers become oriented boxes in one vectorised pass over the whole answer;
    those without area move to the skipped lines."""
    polygons = [i for i, box in enumerate(answer.boxes) if box.form == "polygon"]
    if not polygons:
        return
    corners, has_area = rectify_many(np.stack([answer.boxes[i].points for i in polygons]))
    boxes: list[ParsedBox | None] = list(answer.boxes)
    for i, points, ok in zip(polygons, corners, has_area):
        if ok:
            boxes[i] = replace(boxes[i], points=points)
        else:
            answer.skipped.append((boxes[i].raw[:200], "box has no area"))
            boxes[i] = None
    answer.boxes = [box for box in boxes if box is not None]


def _label_for(label: str, classes: Sequence[str] | None) -> tuple[str | None, str]:
    label = label.strip().strip(".").strip()
    if classes is None:
        return label, ""
    matched = match_label(label, classes) if label else None
    if matched is None:
        return None, f"label '{label}' is not one of the requested classes"
    return matched, ""


def _parse_json_items(text: str) -> list | None:
    """JSON items from a fenced block or the bare text; None when the text is not JSON."""
    blocks = _FENCE.findall(text) or [text]
    items: list = []
    found = False
    for block in blocks:
        block = block.strip()
        if not block or block[0] not in "[{":
            continue
        try:
            data = json.loads(block)
        except (ValueError, RecursionError):
            continue
        found = True
        items.extend(data if isinstance(data, list) else [data])
    return items if found else None


_JSON_KEYS = ("bbox_2d", "oriented bbox", "oriented_bbox", "quadrant bbox", "quadrant_bbox", "bbox", "poly")


def _parse_json(items: list, size: tuple[int, int], classes: Sequence[str] | None, answer: ParsedAnswer) -> None:
    for index, item in enumerate(items):
        raw = json.dumps(item)[:200] if _json_safe(item) else repr(item)[:200]
        if not isinstance(item, dict):
            answer.skipped.append((raw, "JSON item is not an object"))
            continue
        key = next((k for k in _JSON_KEYS if k in item), None)
        values = item.get(key) if key else None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            answer.skipped.append((raw, "no numeric box in JSON item"))
            continue
        points, form, reason = _points_from_numbers([float(v) for v in values], size)
        if points is None:
            answer.skipped.append((raw, reason))
            continue
        label, reason = _label_for(str(item.get("label", "")), classes)
        if label is None:
            answer.skipped.append((raw, reason))
            continue
        answer.boxes.append(ParsedBox(points, label, index, raw, form))


def _json_safe(item) -> bool:
    try:
        json.dumps(item)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def parse_boxes(text: str, size: tuple[int, int], classes: Sequence[str] | None = None) -> ParsedAnswer:
    """Boxes in an answer about an image of size (width, height) in view pixels.

    With `classes`, labels are matched to them (exact, plural, close spelling) and lines with
    another label are skipped; without, the label is kept as written (grounding)."""
    answer = ParsedAnswer()
    if not isinstance(text, str):
        answer.skipped.append((repr(text)[:200], "answer is not text"))
        return answer
    if _is_none_answer(text):
        answer.none = True
        return answer
    items = _parse_json_items(text)
    if items is not None:
        _parse_json(items, size, classes, answer)
        _rectify(answer)
        return answer
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith("```"):
            continue
        if _is_none_answer(stripped):
            answer.none = True
            continue
        if len(stripped) > _MAX_LINE:
            answer.skipped.append((stripped[:200], "line too long"))
            continue
        match = _COORDS_LINE.match(stripped)
        if not match:
            answer.skipped.append((stripped[:200], "no coordinates"))
            continue
        try:
            values = [float(v) for v in match.group(1).split(",")]
        except ValueError:
            answer.skipped.append((stripped[:200], "unreadable number"))
            continue
        points, form, reason = _points_from_numbers(values, size)
        if points is None:
            answer.skipped.append((stripped[:200], reason))
            continue
        label, reason = _label_for(match.group(2), classes)
        if label is None:
            answer.skipped.append((stripped[:200], reason))
            continue
        answer.boxes.append(ParsedBox(points, label, index, stripped[:500], form))
    _rectify(answer)
    return answer


def match_class_in_text(text: str, classes: Sequence[str]) -> str | None:
    """The class an open answer names (classification): a class contained in the answer,
    the longest one when several are ('dense residential' over 'residential'); else the
    closest spelling of the whole answer."""
    if not isinstance(text, str):
        return None
    answer = " " + " ".join(re.sub(r"[^\w\s]", " ", normalise_category(text)).split()) + " "  # "Airport, with a runway."
    contained = [c for c in classes if f" {normalise_category(c)} " in answer]
    if contained:
        return max(contained, key=lambda c: len(normalise_category(c)))
    return match_label(text, classes, cutoff=0.8)


_CHOICE = re.compile(r"^\s*\(?([A-E])\b\)?")


def match_choice(text: str, choices: Sequence[str]) -> str | None:
    """The option a multiple-choice answer picks: its letter (`B`, `(B)`, `B. Red`) among the
    lettered choices, or an option's text the answer repeats; None otherwise. The option is
    returned without its letter."""
    if not isinstance(text, str):
        return None
    options = {c[1]: c[4:].strip() for c in choices if len(c) > 4 and c[0] == "(" and c[2] == ")"}
    match = _CHOICE.match(text)
    if match and match.group(1) in options:
        return options[match.group(1)]
    answer = normalise_category(re.sub(r"[^\w\s]", " ", text))
    named = [option for option in options.values() if normalise_category(option) == answer]
    return named[0] if named else None


@dataclass(frozen=True)
class ToolCall:
    """A zoom request read from an answer. `called` is False for a plain answer; `box` is None
    when the model asked to zoom but the request cannot be used, and `note` says why (or, with
    a box, how it was adjusted to fit the image)."""

    called: bool
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in view pixels, inside the view
    note: str = ""


def _tool_call_body(text: str) -> str | None:
    """The JSON inside <tool_call>...</tool_call> (an unclosed tag runs to the end), or a bare
    JSON call naming the zoom tool; None when the answer calls no tool."""
    match = _TOOL_CALL.search(text)
    if match:
        return match.group(1).strip()
    stripped = text.strip()
    if stripped.startswith("{") and ZOOM_TOOL in stripped:
        return stripped
    return None


def parse_tool_call(text: str, size: tuple[int, int]) -> ToolCall:
    """The `image_zoom_in` box an answer asks for, in the pixels of the image of size
    (width, height) it was asked about. Reversed corners are put in order and a box reaching
    past the image is clipped to it; a box wholly outside, without area, or not four numbers
    is refused with the reason."""
    if not isinstance(text, str):
        return ToolCall(False)
    body = _tool_call_body(text)
    if body is None:
        return ToolCall(False)
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):
        return ToolCall(True, None, "the tool call is not valid JSON")
    if not isinstance(call, dict):
        return ToolCall(True, None, "the tool call is not a JSON object")
    if call.get("name") != ZOOM_TOOL:
        return ToolCall(True, None, f"the tool call names {str(call.get('name'))[:40]!r}, not {ZOOM_TOOL!r}")
    arguments = call.get("arguments")
    if isinstance(arguments, str):  # OpenAI-style servers pass arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            arguments = None
    values = arguments.get("bbox", arguments.get("bbox_2d")) if isinstance(arguments, dict) else None
    if (
        not isinstance(values, list)
        or len(values) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        return ToolCall(True, None, "the tool call's bbox is not four numbers [x1, y1, x2, y2]")
    if not all(np.isfinite(values)):
        return ToolCall(True, None, "the tool call's bbox holds a number that is not finite")
    points, _, reason = _points_from_numbers([float(v) for v in values], size)
    if points is None:
        return ToolCall(True, None, f"the tool call's bbox {values}: {reason}")
    width, height = size
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    inside = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        return ToolCall(True, None, f"the tool call's bbox {values} lies outside the {width}x{height} image")
    notes = []
    if values[0] > values[2] or values[1] > values[3]:
        notes.append("corners given in reverse order")
    if inside != (x1, y1, x2, y2):
        notes.append(f"clipped to the {width}x{height} image")
    return ToolCall(True, tuple(float(v) for v in inside), "; ".join(notes))
