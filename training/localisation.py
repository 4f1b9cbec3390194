"""Where, shape and what: how well a checkpoint predicts each part of its box answers.

A detection answer line is `x1,y1,x2,y2,x3,y3,x4,y4 class`, a grounding one `x1,y1,x2,y2 phrase`.
Scored teacher-forced (the model sees the true answer so far and is asked for the next token),
its negative log-likelihood splits into three parts that fail for different reasons:
- where: the first corner (x1, y1), i.e. where the object is, in nats per coordinate, beside
  ln(view side), what guessing uniformly over the view would cost;
- shape: the other coordinates given the first, i.e. the box's size (and angle);
- what: the class words (the phrase), in nats per object.
AP needs all three; a model that counts and classifies well but is near uniform on "where"
has learned what a view holds, not where (the demo checkpoint's case: training/model_card.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from backend.prompts import NO_OBJECTS
from training.data import BOX_LINE, IGNORE_INDEX, Collator, Mixture

_NUMBER = re.compile(r"-?\d+")
PARTS = ("where", "shape", "what")


@dataclass
class PartTotals:
    nats: float = 0.0
    count: int = 0  # coordinates for where/shape, objects for what

    def mean(self) -> float | None:
        return self.nats / self.count if self.count else None


def token_parts(answer: str, token_ends: list[int]) -> tuple[list[str | None], int, int, int]:
    """The part of the answer each token belongs to ("where", "shape", "what" or None), given
    where each token ends in `answer`; the number of box lines and of shape coordinates in
    them; and how many other non-empty lines there were (skipped).

    A token belongs to the first span it overlaps; a token straddling two spans (a digit merged
    with its comma) counts for the first."""
    spans: list[tuple[int, int, str]] = []
    boxes = shape = skipped = 0
    offset = 0
    for line in answer.split("\n"):
        match = BOX_LINE.match(line.strip())
        start = offset + (len(line) - len(line.lstrip()))
        if match:
            boxes += 1
            for k, number in enumerate(_NUMBER.finditer(match[1])):
                shape += k >= 2
                spans.append((start + number.start(), start + number.end(), "where" if k < 2 else "shape"))
            spans.append((start + match.start(2), start + match.end(2), "what"))
        elif line.strip() and line.strip() != NO_OBJECTS:
            skipped += 1
        offset += len(line) + 1
    parts: list[str | None] = []
    begin = 0
    for end in token_ends:
        parts.append(next((part for lo, hi, part in spans if lo < end and hi > begin), None))
        begin = end
    return parts, boxes, shape, skipped


def box_answer_nll(model, processor, data: Mixture, indices: list[int], batch_size: int = 4) -> dict:
    """Mean teacher-forced NLL of the parts of the box answers (detection or grounding) of the
    single-image samples `indices`."""
    import torch

    collator = Collator(processor, padding_side="right")
    tokenizer = processor.tokenizer
    totals = {part: PartTotals() for part in PARTS}
    uniform = PartTotals()
    skipped = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            examples = [data[i] for i in chunk]
            batch = collator(examples)
            labels = batch.pop("labels")
            logits = model(**batch).logits[:, :-1]
            targets = labels[:, 1:]
            for row, example in enumerate(examples):
                positions = (targets[row] != IGNORE_INDEX).nonzero().flatten()
                answer_ids = targets[row, positions]
                # the loss at the answer's tokens only: a released checkpoint's vocabulary is
                # 150k wide: a log-softmax over every position of a batch takes gigabytes
                nll = torch.nn.functional.cross_entropy(logits[row, positions].float(), answer_ids, reduction="none").tolist()
                ends, length = [], 0
                for piece in tokenizer.batch_decode([[token] for token in answer_ids.tolist()]):
                    length += len(piece)
                    ends.append(length)
                parts, boxes, shape, lines_skipped = token_parts(example.messages[-1]["content"], ends)
                skipped += lines_skipped
                for value, part in zip(nll, parts):
                    if part is not None:
                        totals[part].nats += value
                totals["where"].count += 2 * boxes
                totals["shape"].count += shape
                totals["what"].count += boxes
                height, width = example.images[0].shape[:2]
                uniform.nats += boxes * (math.log(width) + math.log(height))
                uniform.count += 2 * boxes
    return {
        "samples": len(indices),
        "objects": totals["what"].count,
        "where_nats": totals["where"].mean(),
        "uniform_where_nats": uniform.mean(),
        "shape_nats": totals["shape"].mean(),
        "what_nats_per_object": totals["what"].mean(),
        "lines_skipped": skipped,
    }


def measure(checkpoint: str | Path, data: str | Path, samples: int = 64) -> dict:
    """`box_answer_nll` of a checkpoint on the val split of a dataset folder: detection and
    grounding, `samples` of each spread evenly over the split."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from training.data import parse_data_spec
    from training.validation import evenly_spaced

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(checkpoint))
    processor = AutoProcessor.from_pretrained(str(checkpoint))
    split = Mixture(parse_data_spec(str(data)), split="val")
    result = {}
    for task in ("detect", "ground"):
        candidates = [i for i, s in enumerate(split.samples) if s.task == task and len(s.images) == 1]
        if candidates:
            chosen = [candidates[k] for k in evenly_spaced(len(candidates), samples)]
            result[task] = box_answer_nll(model, processor, split, chosen)
    return result
