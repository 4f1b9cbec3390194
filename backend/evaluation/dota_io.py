"""Reading DOTA text files: per-image label / prediction files and Task1 submission files.

Per-image file (`<image>.txt`), one object a line:
    x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]     ground truth
    x1 y1 x2 y2 x3 y3 x4 y4 class [score]          predictions
Header lines such as `imagesource:GoogleEarth` and `gsd:0.25` are skipped, as DOTA does.
Task1 submission file (`Task1_<class>.txt`), one detection a line:
    image score x1 y1 x2 y2 x3 y3 x4 y4

Files are untrusted text: a line that cannot be used is counted with its reason, never fatal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.errors import UserError
from backend.evaluation.boxes import BoxTable
from backend.prompts import normalise_category

TASK1_PREFIX = "Task1_"
MAX_SKIPPED_KEPT = 20


@dataclass
class Annotations:
    """Boxes read from one source, the images it covers (an image with an empty label file is
    covered and has no object) and the lines that could not be used."""

    boxes: BoxTable
    images: list[str]
    source: str
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < MAX_SKIPPED_KEPT:
            self.skipped_examples.append(f"{where}: {reason}")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Rows:
    def __init__(self):
        self.image, self.label, self.points, self.extra, self.line = [], [], [], [], []

    def add(self, image: str, label: str, coords: list[float], extra: float | None, line: int) -> None:
        self.image.append(image)
        self.label.append(label)
        self.points.append(coords)
        self.extra.append(extra)
        self.line.append(line)


def _parse_object_line(text: str) -> tuple[list[float], str, float | None] | str:
    """(coords, label, trailing number) of `x1 .. y4 class [number]`, or why it is unusable."""
    tokens = text.split()
    if len(tokens) < 9:
        return "fewer than 8 coordinates and a class"
    coords = [_number(t) for t in tokens[:8]]
    if any(c is None for c in coords):
        return "the first 8 fields are not all finite numbers"
    rest = tokens[8:]
    extra = _number(rest[-1]) if len(rest) >= 2 else None
    if extra is not None:
        rest = rest[:-1]
    label = normalise_category(" ".join(rest))
    if not label or _number(label) is not None:
        return "no class name"
    return coords, label, extra


def _is_header(text: str) -> bool:
    head = text.split(None, 1)[0]
    return ":" in head and _number(head.split(":", 1)[0]) is None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}).", "Check the file's permissions.") from exc


def read_image_files(files: list[Path], truth: bool, scored: bool, source: str) -> Annotations:
    """Per-image DOTA files; the image name is the file stem."""
    rows = _Rows()
    notes = Annotations(BoxTable.empty(), sorted({f.stem for f in files}), source)
    for path in files:
        for number, raw in enumerate(_read_text(path).splitlines()):
            text = raw.strip()
            if not text or _is_header(text):
                continue
            parsed = _parse_object_line(text)
            if isinstance(parsed, str):
                notes.skip(f"{path.name}:{number + 1}", parsed)
                continue
            coords, label, extra = parsed
            if not truth and scored and extra is None:
                raise UserError(
                    f"--scored was given but line {number + 1} of {path} has no score.",
                    "Leave out --scored to score every prediction 1 (AP_nc), or add scores as the last field.",
                )
            rows.add(path.stem, label, coords, extra, number)
    n = len(rows.image)
    extra = np.array([np.nan if e is None else e for e in rows.extra], dtype=float)
    notes.boxes = BoxTable.build(
        rows.image,
        rows.label,
        np.asarray(rows.points, dtype=float).reshape(n, 4, 2),
        score=None if truth else np.where(np.isnan(extra), 1.0, extra),
        difficult=(np.nan_to_num(extra) != 0) if truth else None,
        line=rows.line,
    )
    return notes


def read_task1_files(files: list[Path], source: str) -> Annotations:
    """DOTA Task1 submission files; the class is in the file name, the score on every line."""
    rows = _Rows()
    notes = Annotations(BoxTable.empty(), [], source)
    for path in files:
        label = normalise_category(path.stem[len(TASK1_PREFIX) :])
        for number, raw in enumerate(_read_text(path).splitlines()):
            tokens = raw.split()
            if not tokens:
                continue
            values = [_number(t) for t in tokens[1:10]]
            if len(tokens) != 10 or any(v is None for v in values):
                notes.skip(f"{path.name}:{number + 1}", "not 'image score x1 y1 x2 y2 x3 y3 x4 y4'")
                continue
            rows.add(tokens[0], label, values[1:], values[0], number)
    n = len(rows.image)
    notes.boxes = BoxTable.build(
        rows.image, rows.label, np.asarray(rows.points, dtype=float).reshape(n, 4, 2), score=rows.extra, line=rows.line
    )
    notes.images = notes.boxes.images()
    return notes


def is_task1_folder(files: list[Path]) -> bool:
    return bool(files) and all(f.name.startswith(TASK1_PREFIX) for f in files)
