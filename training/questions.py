"""What can be asked about a view of the synthetic world, and the answers: grounding expressions,
VQA questions, captions, the scene class, and the Zoom-in Chain's question.

Pure functions over `Seen` objects (what one view shows, in its pixels), so every text is
reproducible from the scene and the view. Expressions are only generated when they pick out one
object of the view; answers are single words or numbers, as MODEL_IO's VQA instruction asks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Article + noun of each scene kind, as a caption names it.
KIND_PHRASES = {
    "airport": "an airport",
    "harbor": "a harbor",
    "industrial area": "an industrial area",
    "parking lot": "a parking lot",
    "residential area": "a residential area",
}
SCENE_QUESTION = "What kind of area is this?"
SIZE_GAP = 1.25  # the largest object must be this much larger (area) than the next to be "the largest"


@dataclass(frozen=True)
class Seen:
    """An object as one view shows it."""

    label: str
    colour: str
    points: np.ndarray  # (4, 2) corners in view pixels
    cut: bool  # partly outside the view

    @property
    def area(self) -> float:
        x, y = self.points[:, 0], self.points[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    def hbox(self) -> list[int]:
        pts = np.rint(self.points).astype(int)
        return [int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max())]


def plural(label: str, count: int) -> str:
    return label if count == 1 else label + "s"


def counted(label: str, count: int) -> str:
    """'a plane', 'an industrial area', '3 ships'."""
    if count == 1:
        return ("an " if label[0] in "aeiou" else "a ") + label
    return f"{count} {plural(label, count)}"


def listing(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def groundings(seen: Sequence[Seen]) -> list[tuple[str, Seen]]:
    """Referring expressions (without the article) that each pick out one whole object: the
    only object of its class, the only one of its colour and class, the clearly largest or
    smallest of its class."""
    whole = [s for s in seen if not s.cut]
    by_label = Counter(s.label for s in seen)
    by_colour = Counter((s.colour, s.label) for s in seen)
    found = []
    for s in whole:
        if by_label[s.label] == 1:
            found.append((s.label, s))
        elif by_colour[(s.colour, s.label)] == 1:
            found.append((f"{s.colour} {s.label}", s))
    for label in sorted(by_label):
        group = sorted((s for s in seen if s.label == label), key=lambda s: s.area)
        if len(group) < 2:
            continue
        if not group[-1].cut and group[-1].area > SIZE_GAP * group[-2].area:
            found.append((f"largest {label}", group[-1]))
        if not group[0].cut and group[1].area > SIZE_GAP * group[0].area:
            found.append((f"smallest {label}", group[0]))
    return found


def colour_question(label: str) -> str:
    return f"What colour is the {label}?"


def vqa_pairs(seen: Sequence[Seen], kind: str | None, classes: Sequence[str], rng: np.random.Generator) -> list[tuple[str, str]]:
    """Questions a view answers, with their one-word answers: how many of a class (none
    included), the colour of the only object of a class, whether there is one, what kind of
    area it is."""
    counts = Counter(s.label for s in seen)
    pairs = []
    label = str(rng.choice(sorted(counts))) if counts and rng.random() < 0.7 else str(rng.choice(list(classes)))
    pairs.append((f"How many {plural(label, 2)} are there?", str(counts.get(label, 0))))
    for s in seen:
        if counts[s.label] == 1 and not s.cut:
            pairs.append((colour_question(s.label), s.colour))
    present = sorted(counts)
    absent = [c for c in classes if c not in counts]
    if present and (not absent or rng.random() < 0.5):
        pairs.append((f"Is there a {rng.choice(present)}?", "yes"))
    elif absent:
        pairs.append((f"Is there a {rng.choice(absent)}?", "no"))
    if kind is not None:
        pairs.append((SCENE_QUESTION, kind))
    return pairs


def caption(seen: Sequence[Seen], kind: str | None, rng: np.random.Generator) -> str:
    """One sentence: the kind of place and what is in it, by class (colour when all agree)."""
    place = KIND_PHRASES.get(kind, "an area")
    counts = Counter(s.label for s in seen)
    parts = []
    for label in sorted(counts, key=lambda c: (-counts[c], c)):
        colours = {s.colour for s in seen if s.label == label}
        text = counted(label, counts[label])
        if len(colours) == 1:
            colour = colours.pop()
            text = ("an " if colour[0] in "aeiou" else "a ") + f"{colour} {label}" if counts[label] == 1 else f"{counts[label]} {colour} {plural(label, 2)}"
        parts.append(text)
    if not parts:
        return f"{place[0].upper()}{place[1:]} with nothing parked in view."
    if rng.random() < 0.5:
        return f"{place[0].upper()}{place[1:]} with {listing(parts)}."
    first = listing(parts)
    return f"{first[0].upper()}{first[1:]} in {place}."

