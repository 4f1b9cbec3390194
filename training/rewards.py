"""Task-aware rewards for reinforcement fine-tuning (GeoVLM-R1's idea): one pure function per
task, each a number in [0, 1] for an answer against the reference answer of its sample, or None
for a sample of another task, so one run mixes tasks. Answers are read with the backend's own
parser, so a reward counts what `rscovlm detect` (or ground, ask...) would make of the answer.

`format_reward` says whether the answer is in its task's form at all (it parses, its boxes lie in
the image, no special token leaked in, not a runaway); the task rewards count only when it is 1
(`gated`). Each rule closes a way of gaming the reward that tests pin: an empty answer, the
prompt echoed, duplicate boxes, one box over the whole image, boxes in another coordinate frame.
Model output is untrusted text: nothing here raises, NaN and runaway numbers included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from backend.parsing import parse_boxes
from backend.prompts import NO_OBJECTS, normalise_category

IOU_MATCH = 0.5  # a detected box counts as found at this rotated IoU with a true box of its class
FRAME_SLACK = 0.02  # of the image side: a box may reach this far past the edge (rounding, clipped objects)
MAX_BOXES = 1000  # an answer with more boxes than this is a runaway, not a detection
MAX_WORDS = {"classify": 8, "vqa": 12}  # a one-word answer task answered at more length is not in form
RUNAWAY_RATIO = 3.0  # a caption this many times longer than its reference is a runaway
MAX_TEXT_WORDS = 512  # ROUGE-L's dynamic programme is bounded by this many words per side
REWARDED_TASKS = ("detect", "ground", "classify", "vqa", "caption", "change", "change_caption")
BOX_TASKS = ("detect", "ground", "change")
_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                                            "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class Reference:
    """What a reward knows of a sample: its task, the reference answer, and the [width, height]
    its coordinates refer to (box tasks)."""

    task: str
    answer: str
    size: tuple[int, int] | None = None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _normalised(text: str) -> str:
    return " ".join(w for w in _words(text) if w not in _ARTICLES)


def _number(text: str) -> float | None:
    """The one number an answer gives (digits or a number word up to twenty), else None."""
    found = [float(w) for w in _words(text) if re.fullmatch(r"\d+(?:\.\d+)?", w)]
    found += [float(_NUMBER_WORDS[w]) for w in _words(text) if w in _NUMBER_WORDS]
    return found[0] if len(found) == 1 and math.isfinite(found[0]) else None


def _inside_frame(points: np.ndarray, size: tuple[int, int]) -> bool:
    w, h = size
    slack = FRAME_SLACK * max(w, h)
    return bool(np.isfinite(points).all() and points[:, 0].min() >= -slack and points[:, 1].min() >= -slack
                and points[:, 0].max() <= w + slack and points[:, 1].max() <= h + slack)


def _boxes(text: str, size: tuple[int, int]):
    """The answer's boxes, and whether every line of it was read (nothing skipped)."""
    answer = parse_boxes(text, size)
    return answer, not answer.skipped


def format_reward(reference: Reference, answer: str, leaked_special: bool = False) -> float | None:
    """1 when the answer is in its task's form, else 0; None for a task without a reward.
    `leaked_special`: the completion held a special token (e.g. `<|image_pad|>`), which the text
    decoded without special tokens no longer shows."""
    task = reference.task
    if task not in REWARDED_TASKS:
        return None
    text = (answer or "").strip()
    if leaked_special or not text or "<|" in text:
        return 0.0
    if task in BOX_TASKS:
        if reference.size is None:
            return None
        parsed, whole = _boxes(text, reference.size)
        if parsed.none:
            return 1.0 if text.rstrip(".") == NO_OBJECTS.rstrip(".") else 0.0
        if not parsed.boxes or not whole or len(parsed.boxes) > MAX_BOXES:
            return 0.0
        if task == "ground" and len(parsed.boxes) != 1:
            return 0.0
        return float(all(_inside_frame(box.points, reference.size) for box in parsed.boxes))
    words = _words(text)
    if task in MAX_WORDS:
        return float(0 < len(words) <= MAX_WORDS[task])
    reference_words = max(1, len(_words(reference.answer)))
    return float(0 < len(words) <= RUNAWAY_RATIO * reference_words + 5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    first, second = shapely.Polygon(a), shapely.Polygon(b)
    if not (first.is_valid and second.is_valid):
        first, second = first.buffer(0), second.buffer(0)
    union = first.union(second).area
    return float(first.intersection(second).area / union) if union > 0 else 0.0


def box_set_reward(predicted: Sequence[tuple[np.ndarray, str]], truth: Sequence[tuple[np.ndarray, str]]) -> float:
    """VLM-R1's detection score over (corners, class) pairs: true boxes matched greedily by IoU
    >= IOU_MATCH with a box of their class, each used once; the mean IoU of the matches over the
    true count, blended with the found and precise shares, times min(1, true / predicted) so
    that more boxes than there are objects cost. Nothing true: 1 for nothing predicted."""
    if not truth:
        return 1.0 if not predicted else 0.0
    if not predicted:
        return 0.0
    pairs = []
    for i, (p_points, p_label) in enumerate(predicted):
        for j, (t_points, t_label) in enumerate(truth):
            if p_label == t_label:
                iou = _iou(p_points, t_points)
                if iou >= IOU_MATCH:
                    pairs.append((iou, i, j))
    used_p, used_t, ious = set(), set(), []
    for iou, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            ious.append(iou)
    found, precise = len(ious) / len(truth), len(ious) / len(predicted)
    blended = 0.5 * sum(ious) / len(truth) + 0.25 * found + 0.25 * precise
    return blended * min(1.0, len(truth) / len(predicted))


def _labelled(text: str, size: tuple[int, int], label: str | None = None) -> list[tuple[np.ndarray, str]]:
    """The boxes of an answer with their class (normalised), or all under `label`."""
    return [(box.points, label if label is not None else normalise_category(box.label)) for box in parse_boxes(text, size).boxes]


def detection_reward(reference: Reference, answer: str) -> float | None:
    if reference.task != "detect" or reference.size is None:
        return None
    return box_set_reward(_labelled(answer, reference.size), _labelled(reference.answer, reference.size))


def change_reward(reference: Reference, answer: str) -> float | None:
    """Change boxes: the question names the class and kind, so boxes match whatever they are called."""
    if reference.task != "change" or reference.size is None:
        return None
    return box_set_reward(_labelled(answer, reference.size, ""), _labelled(reference.answer, reference.size, ""))


def grounding_reward(reference: Reference, answer: str) -> float | None:
    """IoU of the answer's box (or polygon, for polygon grounding) with the reference's."""
    if reference.task != "ground" or reference.size is None:
        return None
    predicted, truth = parse_boxes(answer, reference.size).boxes, parse_boxes(reference.answer, reference.size).boxes
    if not truth:
        return None  # a reference without a box: nothing to reward against
    return _iou(predicted[0].points, truth[0].points) if len(predicted) == 1 else 0.0


def classification_reward(reference: Reference, answer: str) -> float | None:
    if reference.task != "classify":
        return None
    return float(_normalised(answer) == _normalised(reference.answer) != "")


def vqa_reward(reference: Reference, answer: str) -> float | None:
    """Numbers: 1 - relative error (0 from twice off); words: 1 for the same answer, 0.5 for an
    answer that contains the reference among at most twice its words."""
    if reference.task != "vqa":
        return None
    truth, given = _number(reference.answer), _number(answer)
    if truth is not None:
        return max(0.0, 1.0 - abs(given - truth) / max(1.0, abs(truth))) if given is not None else 0.0
    want, got = _normalised(reference.answer), _normalised(answer)
    if not want:
        return None
    if got == want:
        return 1.0
    return 0.5 if f" {want} " in f" {got} " and len(got.split()) <= 2 * len(want.split()) else 0.0


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (beta 1.2, as the COCO caption toolkit) of word sequences."""
    a, b = _words(candidate)[:MAX_TEXT_WORDS], _words(reference)[:MAX_TEXT_WORDS]
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall, beta = lcs / len(a), lcs / len(b), 1.2
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def caption_reward(reference: Reference, answer: str) -> float | None:
    """ROUGE-L against the reference (CIDEr-D needs a corpus, not one answer); 0 for an empty
    or runaway answer."""
    if reference.task not in ("caption", "change_caption"):
        return None
    words = len(_words(answer))
    if words == 0 or words > RUNAWAY_RATIO * max(1, len(_words(reference.answer))) + 5:
        return 0.0
    return rouge_l(answer, reference.answer)


TASK_REWARDS = {"detect": detection_reward, "ground": grounding_reward, "classify": classification_reward, "vqa": vqa_reward,
                "caption": caption_reward, "change": change_reward, "change_caption": caption_reward}


def gated(reference: Reference, answer: str, leaked_special: bool = False) -> float | None:
    """The task reward, counted only when the answer is in form (format reward 1), else 0."""
    reward = TASK_REWARDS.get(reference.task)
    if reward is None:
        return None
    form = format_reward(reference, answer, leaked_special)
    if form is None:
        return None
    value = reward(reference, answer)
    if value is None:
        return None
    return value if form == 1.0 else 0.0
