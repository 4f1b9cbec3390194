"""Dense supervision that is thrown away: a small head on the vision tower's merged tokens that
learns, for every 28 x 28 px cell, whether an object's centre lies in it, where in the cell, and
how large the object is (CenterNet's targets on Qwen2.5-VL's token grid).

Why: a box answer is only as good as what the image tokens say about where things are. Which
token an object is in is the language model's to know (training.position_head teaches each
image token its row and column), but the position inside a cell and the object's extent must be
in the token's features; the answer's
loss teaches them slowly, through every digit of every coordinate. This head teaches them
directly, from the same answers (no other labels: any detection or grounding sample carries its
targets in its answer text). It is used during training only; the saved checkpoint is a plain
Qwen2.5-VL without it.

Targets per token: objectness (1 at the cell holding a box's centre, 0 elsewhere on detection
images; grounding images name one object only, so only their positive cell counts), the centre's
offset in the cell (0..1) and the log of the box's width and height in cells.
"""

from __future__ import annotations

import math

import numpy as np

from backend.prompts import NO_OBJECTS
from backend.resolution import FACTOR
from training.data import BOX_LINE

# objectness target, its weight, centre offset x and y, log width and height, their weight
TARGET_COLUMNS = 7
ATTRIBUTE = "dense_head"  # the head's name on the model being trained; left out of what is saved


def answer_boxes(answer: str) -> list[tuple[float, float, float, float]] | None:
    """Axis-aligned extents (x0, y0, x1, y1) of the boxes an answer states, in its image's
    pixels; [] for 'There are none.'; None when the answer states no box (a caption)."""
    if answer.strip() == NO_OBJECTS:
        return []
    boxes = []
    for line in answer.splitlines():
        match = BOX_LINE.match(line.strip())
        if match:
            values = [float(v) for v in match.group(1).split(",")]
            xs, ys = values[0::2], values[1::2]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes or None


def image_targets(
    boxes: list[tuple[float, float, float, float]] | None, exhaustive: bool, grid: tuple[int, int], scale: tuple[float, float]
) -> np.ndarray:
    """(rows * cols, TARGET_COLUMNS) targets of one image whose merged-token grid is `grid`
    (rows, cols); `scale` maps answer pixels to the image the model saw. `exhaustive`: the
    answer names every object (detection), so cells without a centre are negatives."""
    rows, cols = grid
    targets = np.zeros((rows * cols, TARGET_COLUMNS), dtype=np.float32)
    if boxes is None:
        return targets  # nothing known: every weight stays 0
    if exhaustive:
        targets[:, 1] = 1.0
    for x0, y0, x1, y1 in boxes:
        x0, x1, y0, y1 = x0 * scale[0], x1 * scale[0], y0 * scale[1], y1 * scale[1]
        cx, cy = (x0 + x1) / 2 / FACTOR, (y0 + y1) / 2 / FACTOR
        col, row = min(cols - 1, max(0, int(cx))), min(rows - 1, max(0, int(cy)))
        width, height = max(x1 - x0, 1.0) / FACTOR, max(y1 - y0, 1.0) / FACTOR
        targets[row * cols + col] = (1.0, 1.0, cx - col, cy - row, math.log(width), math.log(height), 1.0)
    return targets


def batch_targets(examples, image_grid_thw, merge_size: int = 2) -> np.ndarray:
    """Targets of every merged token of a batch, in the order the vision tower emits them:
    image by image, row by row. Only single-image detection and grounding samples have boxes."""
    grids = [(int(h) // merge_size, int(w) // merge_size, int(h) * FACTOR // merge_size, int(w) * FACTOR // merge_size)
             for _, h, w in image_grid_thw.tolist()]
    parts, cursor = [], 0
    for example in examples:
        for k, image in enumerate(example.images):
            rows, cols, seen_h, seen_w = grids[cursor]
            cursor += 1
            boxed = k == 0 and len(example.images) == 1 and example.task in ("detect", "ground")
            boxes = answer_boxes(example.messages[-1]["content"]) if boxed else None
            scale = (seen_w / image.shape[1], seen_h / image.shape[0])
            parts.append(image_targets(boxes, example.task == "detect", (rows, cols), scale))
    return np.concatenate(parts) if parts else np.zeros((0, TARGET_COLUMNS), dtype=np.float32)


def attach(model, hidden: int = 128):
    """Put a dense head on `model` (as its `dense_head` module, so optimisers, checkpoints and
    distributed wrappers see it) and return it."""
    import torch

    class DenseHead(torch.nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.mlp = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 5))
            self.targets = None  # set before a forward pass; the loss is computed inside it
            self.last_loss = None

        def capture(self, module, inputs, output) -> None:
            if self.targets is not None:
                self.last_loss = self.loss(output.pooler_output, self.targets)
                self.targets = None

        def loss(self, features, targets):
            """Objectness (binary cross-entropy) plus the centre and size regression (L1) at
            the cells that hold a centre, each averaged over the cells that count."""
            if targets.shape[0] != features.shape[0]:
                raise RuntimeError(f"dense targets for {targets.shape[0]} merged tokens, the vision tower gave {features.shape[0]}")
            out = self.mlp(features.float())
            weight, positive = targets[:, 1], targets[:, 6]
            objectness = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], targets[:, 0], reduction="none")
            loss = (objectness * weight).sum() / weight.sum().clamp(min=1.0)
            predicted = torch.cat([torch.sigmoid(out[:, 1:3]), out[:, 3:5]], dim=1)
            regression = (predicted - targets[:, 2:6]).abs().sum(dim=1)
            return loss + (regression * positive).sum() / positive.sum().clamp(min=1.0)

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = DenseHead(base.config.text_config.hidden_size).to(next(base.parameters()).device)
    base.model.visual.register_forward_hook(head.capture)
    setattr(model, ATTRIBUTE, head)
    return head
