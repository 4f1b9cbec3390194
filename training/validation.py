"""Validation during fine-tuning: loss on the held-out conversations, and AP_nc of the model's
own detection answers on held-out tiles (generated greedily through the backend's engine,
parsed by the backend's parser and scored by backend.evaluation, exactly as `rscovlm detect`
and `rscovlm eval` would)."""

from __future__ import annotations

import numpy as np

from backend.engine.local import LocalEngine
from backend.parsing import parse_boxes
from backend.prompts import Message
from training.data import IGNORE_INDEX, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Example, Mixture


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread over range(count): a fixed, representative subset."""
    if wanted >= count:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, wanted).round()})


def validation_loss(model, batches, accelerator) -> float | None:
    """Mean loss per answer token over all processes' batches."""
    import torch

    total = torch.zeros(2, device=accelerator.device)
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
            loss = model(**batch).loss
            total += torch.stack([loss.float() * tokens, tokens.float()])
    model.train()
    total = accelerator.reduce(total, reduction="sum") if accelerator.num_processes > 1 else total
    return float(total[0] / total[1]) if total[1] > 0 else None


def detection_classes(user_text: str) -> list[str]:
    """The classes a detection prompt asks for: `find the a, b.` -> [a, b]."""
    text = user_text.replace(IMAGE_PLACEHOLDER, "").strip()
    text = text.removeprefix("find the ").rstrip(".")
    return [c.strip() for c in text.split(",") if c.strip()]


def _conversation(example: Example, messages: tuple[dict, ...]) -> list[Message]:
    """The example up to (not including) its answer, as the engine takes it."""
    conversation = []
    for m in messages[:-1]:
        images = tuple(example.images) if m["role"] == "user" else ()
        text = m["content"].replace(IMAGE_PLACEHOLDER, "")
        if m["role"] == "user" and VIDEO_PLACEHOLDER in text:  # a bi-temporal sample: its text leads the frames
            lead, _, text = text.partition(VIDEO_PLACEHOLDER)
            conversation.append(Message(m["role"], text, images, tuple(example.videos[0]), lead))
        else:
            conversation.append(Message(m["role"], text, images))
    return conversation


def _generate(unwrapped_model, processor, placement, val: Mixture, indices: list[int], accelerator, config) -> list[tuple]:
    """(sample, image size, answer text) of greedy answers to this process's share of the
    single-image validation samples `indices`."""
    engine = LocalEngine(unwrapped_model, processor, placement, "validation", config.batch_size, config.min_pixels, config.max_pixels)
    engine.generation_config.use_cache = True  # training turns the cache off; generating without it is quadratic
    mine = indices[accelerator.process_index :: accelerator.num_processes]
    answered = []
    unwrapped_model.eval()
    try:
        for start in range(0, len(mine), engine.batch_size):
            chunk = mine[start : start + engine.batch_size]
            examples = [val[i] for i in chunk]
            conversations = [_conversation(e, val.samples[i].messages) for e, i in zip(examples, chunk)]
            for i, example, generation in zip(chunk, examples, engine.generate(conversations, config.val_max_new_tokens)):
                height, width = example.images[0].shape[:2]
                answered.append((val.samples[i], (width, height), generation.text))
    finally:
        unwrapped_model.train()
    return answered


def detection_ap_nc(unwrapped_model, processor, placement, val: Mixture, indices: list[int], accelerator, config) -> dict | None:
    """AP_nc of greedy detection answers on the validation tiles `indices` (single-image
    detection samples), each process generating its share."""
    from accelerate.utils import gather_object

    from backend.evaluation.boxes import BoxTable
    from backend.evaluation.detection import evaluate_detections

    rows = []
    for sample, size, text in _generate(unwrapped_model, processor, placement, val, indices, accelerator, config):
        user = next(m["content"] for m in sample.messages if m["role"] == "user")
        classes = detection_classes(user)
        truth = parse_boxes(sample.answer(), size, classes)
        predicted = parse_boxes(text, size, classes)
        rows.append((sample.id, classes, [(b.label, b.points) for b in truth.boxes], [(b.label, b.points) for b in predicted.boxes]))
    rows = gather_object(rows) if accelerator.num_processes > 1 else rows
    if not rows:
        return None

    def table(which: int) -> BoxTable:
        items = [(sample_id, label, points) for row in rows for label, points in row[which] for sample_id in [row[0]]]
        if not items:
            return BoxTable.empty()
        return BoxTable.build([i[0] for i in items], [i[1] for i in items], np.stack([i[2] for i in items]))

    classes = sorted({c for row in rows for c in row[1]})
    scores = evaluate_detections(table(2), table(3), images=[row[0] for row in rows], classes=classes)
    return {"ap_nc": scores.mean_ap, "tiles": len(rows), "per_class": {c.label: c.ap for c in scores.classes}}


def grounding_accuracy(unwrapped_model, processor, placement, val: Mixture, indices: list[int], accelerator, config) -> dict | None:
    """Acc@0.5 and mean IoU of greedy grounding answers (their first box) on the validation
    samples `indices`, scored as `rscovlm eval grounding` scores them."""
    from accelerate.utils import gather_object

    from backend.evaluation.grounding import score_grounding

    pairs = []
    for sample, size, text in _generate(unwrapped_model, processor, placement, val, indices, accelerator, config):
        truth, predicted = parse_boxes(sample.answer(), size).boxes, parse_boxes(text, size).boxes
        if truth:
            pairs.append((sample.id, truth[0].points, predicted[0].points if predicted else None))
    pairs = gather_object(pairs) if accelerator.num_processes > 1 else pairs
    if not pairs:
        return None
    scores = score_grounding({i: reference for i, reference, _ in pairs}, {i: answer for i, _, answer in pairs})
    return {"acc_at_0.5": scores.accuracy, "mean_iou": scores.mean_iou, "samples": scores.samples}
