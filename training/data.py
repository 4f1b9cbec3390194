"""The co-training mixture: datasets named with weights, read as conversations, collated into
model inputs whose labels are the assistant answers only.

A data spec names datasets separated by commas, each optionally weighted as MODEL_IO says:
`name*K` repeats a dataset K times, `name%P` keeps P percent of it (a seeded choice), e.g.
`data/boats*3,data/general%20`. A dataset is an export folder (manifest.json + train/ + val/,
docs/DATASET.md), one split folder holding conversations.jsonl, or a JSON / JSONL file of
RSCoVLM-format samples: ours (`messages` with `<image>` placeholders + `images`) or LLaVA-style
(`image` + `conversations` of `from`/`value` turns). Any task mixes in one run: detection,
grounding, captioning, classification, VQA and Zoom-in Chain conversations (several images,
several assistant turns).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from backend.errors import UserError
from backend.prompts import DETECTION_SYSTEM, NO_OBJECTS
from backend.resolution import FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize

IGNORE_INDEX = -100  # label of tokens the loss skips
IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"  # frames of one place in time order (bi-temporal samples), as RSCoVLM's data writes them
TASKS = ("detect", "ground", "caption", "classify", "vqa", "zoom", "change", "change_caption", "chat")
# Side scale range of the random rescaling; smart_resize then keeps the result in the pixel budget.
RESCALE_RANGE = (0.5, 2.0)
_SPEC = re.compile(r"^(?P<path>.+?)(?:\*(?P<repeat>\d+)|%(?P<percent>\d+(?:\.\d+)?))?$")
# An answer line of a box (4 numbers) or a rotated box (8) and its label.
BOX_LINE = re.compile(r"^(-?\d+(?:,-?\d+){3}|-?\d+(?:,-?\d+){7}) (\S.*)$")
_LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class DatasetSpec:
    path: str
    repeat: int = 1
    percent: float = 100.0

    def __str__(self) -> str:
        if self.repeat != 1:
            return f"{self.path}*{self.repeat}"
        return f"{self.path}%{self.percent:g}" if self.percent != 100.0 else self.path


def parse_data_spec(text: str) -> list[DatasetSpec]:
    specs = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        match = _SPEC.match(part)
        repeat = int(match["repeat"]) if match["repeat"] else 1
        percent = float(match["percent"]) if match["percent"] else 100.0
        if repeat < 1 or not 0 < percent <= 100:
            raise UserError(f"data spec '{part}' has a weight out of range.", "Use name*K with K >= 1 or name%P with 0 < P <= 100.")
        specs.append(DatasetSpec(match["path"], repeat, percent))
    if not specs:
        raise UserError("the data spec is empty.", 'Name at least one dataset, e.g. --data "data/boats*3,data/general%20".')
    return specs


@dataclass(frozen=True)
class Sample:
    """One conversation: messages with `<image>` placeholders in user texts, the images they
    stand for in order, and for each image the [width, height] its coordinates refer to."""

    id: str
    task: str
    images: tuple[Path, ...]
    messages: tuple[dict, ...]  # {"role", "content": str}
    resized_sizes: tuple[tuple[int, int] | None, ...]
    videos: tuple[tuple[Path, ...], ...] = ()  # each the frames of one `<video>` placeholder

    def answer(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")


def _guess_task(messages: list[dict]) -> str:
    if any(m["role"] == "assistant" and "<tool_call>" in m["content"] for m in messages):
        return "zoom"
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    if system == DETECTION_SYSTEM["polygon"] or system == DETECTION_SYSTEM["rbox"]:
        return "detect"
    if system == DETECTION_SYSTEM["hbox"]:
        return "ground"
    return "chat"


def _record_to_sample(record: dict, base: Path, where: str) -> Sample:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
        images = record.get("images") or []
    elif "conversations" in record:
        messages = []
        for turn in record["conversations"]:
            role = _LLAVA_ROLES.get(str(turn.get("from")))
            if role is None:
                raise ValueError(f"unknown speaker '{turn.get('from')}'")
            messages.append({"role": role, "content": str(turn["value"]).replace(IMAGE_PLACEHOLDER + "\n", IMAGE_PLACEHOLDER)})
        images = record.get("image") or record.get("images") or []
        images = [images] if isinstance(images, str) else images
        if images and not any(IMAGE_PLACEHOLDER in m["content"] for m in messages):
            first_user = next(m for m in messages if m["role"] == "user")
            first_user["content"] = IMAGE_PLACEHOLDER * len(images) + first_user["content"]
    else:
        raise ValueError("neither 'messages' nor 'conversations'")
    roles = [m["role"] for m in messages]
    if "assistant" not in roles or any(r not in ("system", "user", "assistant") for r in roles):
        raise ValueError("needs user and assistant turns")
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages if m["role"] == "user")
    if placeholders != len(images):
        raise ValueError(f"{placeholders} <image> placeholder(s) for {len(images)} image(s)")
    videos = record.get("videos") or []
    if sum(m["content"].count(VIDEO_PLACEHOLDER) for m in messages if m["role"] == "user") != len(videos):
        raise ValueError(f"the <video> placeholders do not match the {len(videos)} video(s)")
    if any(not isinstance(v, list) or len(v) < 2 for v in videos):
        raise ValueError("a video is a list of at least two frame files")
    sizes = record.get("resized_size")
    if sizes and not isinstance(sizes[0], list):
        sizes = [sizes] + [None] * (len(images) - 1)  # one pair: the first image's (docs/DATASET.md)
    sizes = sizes or [None] * len(images)
    task = record.get("task") or _guess_task(messages)
    return Sample(
        id=str(record.get("id", where)),
        task=task if task in TASKS else "chat",
        images=tuple((base / str(p)).resolve() for p in images),
        messages=tuple(messages),
        resized_sizes=tuple(tuple(int(v) for v in s) if s else None for s in sizes),
        videos=tuple(tuple((base / str(p)).resolve() for p in video) for video in videos),
    )


def read_conversations(path: Path) -> list[Sample]:
    """Samples of a JSONL or JSON file; image paths are relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc}).", None) from exc
    try:
        if path.suffix == ".jsonl":
            records = [(f"{path.name}:{n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            data = json.loads(text)
            records = [(f"{path.name}[{n}]", r) for n, r in enumerate(data if isinstance(data, list) else [data])]
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}).", "Fix the file or export the dataset again.") from exc
    samples = []
    for where, record in records:
        try:
            samples.append(_record_to_sample(record, path.parent, where))
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise UserError(f"sample {where} is not an RSCoVLM conversation ({exc}).", "See docs/DATASET.md for the format.") from exc
    missing = [p for s in samples for p in (*s.images, *(f for v in s.videos for f in v)) if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) named in {path} are missing, e.g. {missing[0]}.", "Copy the images or export again.")
    return samples


def message_texts(path: Path) -> list[str]:
    """Every distinct message text of a conversations file, without image placeholders: the
    corpus a from-scratch tokenizer is trained on, so the data's words become tokens."""
    texts = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                texts.update(m["content"].replace(IMAGE_PLACEHOLDER, "") for m in json.loads(line)["messages"])
    return sorted(texts)


def conversations_file(path: str | Path, split: str) -> Path:
    """The conversations a dataset name stands for, for one split of an export folder."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "manifest.json").is_file() or (path / split).is_dir():
        path = path / split
    candidate = path / "conversations.jsonl"
    if candidate.is_file():
        return candidate
    if not path.exists():
        raise UserError(f"the data spec names a missing dataset: {path}.", "Give an export folder or a JSON/JSONL file; check --data.")
    raise UserError(f"{path} holds no conversations.jsonl.", "Give an export folder (rscovlm train export) or a JSON/JSONL file.")


def select(samples: list[Sample], spec: DatasetSpec, seed: int) -> list[Sample]:
    """A dataset after its weight: P percent chosen by a seeded draw, or K copies."""
    if spec.percent < 100.0 and samples:
        keep = max(1, math.ceil(len(samples) * spec.percent / 100.0))
        order = np.random.default_rng([seed, len(samples)]).permutation(len(samples))[:keep]
        samples = [samples[i] for i in sorted(order.tolist())]
    return samples * spec.repeat


def rescale_answer(answer: str, sx: float, sy: float) -> str | None:
    """A detection answer with its coordinates scaled; None when a line is in a form that
    cannot be scaled by x and y alone (e.g. rotated boxes carry an angle)."""
    lines = []
    for line in answer.splitlines():
        if line.strip() == NO_OBJECTS:
            lines.append(line)
            continue
        match = BOX_LINE.match(line.strip())
        if not match:
            return None
        values = [int(v) for v in match.group(1).split(",")]
        scaled = [round(v * (sx if i % 2 == 0 else sy)) for i, v in enumerate(values)]
        lines.append(",".join(str(v) for v in scaled) + " " + match.group(2))
    return "\n".join(lines)


@dataclass(frozen=True)
class Example:
    """What the collator gets: chat-template messages (image and video parts in place), the
    images and the videos (lists of frames)."""

    id: str
    task: str
    messages: list[dict]
    images: list[np.ndarray]
    videos: list[list[np.ndarray]] = field(default_factory=list)


_PLACEHOLDERS = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})")


def chat_messages(messages: list[dict]) -> list[dict]:
    """`<image>` and `<video>` placeholders become image and video parts of the message, in
    place; the text around them stays where it is."""
    result = []
    for m in messages:
        if m["role"] == "user" and _PLACEHOLDERS.search(m["content"]):
            parts = []
            for piece in _PLACEHOLDERS.split(m["content"]):
                if piece == IMAGE_PLACEHOLDER:
                    parts.append({"type": "image"})
                elif piece == VIDEO_PLACEHOLDER:
                    parts.append({"type": "video"})
                elif piece:
                    parts.append({"type": "text", "text": piece})
            result.append({"role": m["role"], "content": parts})
        else:
            result.append(dict(m))
    return result


class Mixture:
    """The weighted datasets of a spec as one indexable dataset (a torch map-style dataset).

    Detection samples are randomly rescaled inside the pixel budget with probability
    `rescale`, their answer coordinates with them; the draw depends on (seed, epoch, index)
    only, so a resumed run sees the very samples the interrupted one would have."""

    def __init__(
        self,
        specs: list[DatasetSpec],
        split: str = "train",
        seed: int = 0,
        rescale: float = 0.0,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
    ):
        self.seed, self.rescale, self.min_pixels, self.max_pixels = seed, rescale, min_pixels, max_pixels
        self.epoch = 0
        self.samples: list[Sample] = []
        self.composition: list[dict] = []
        for spec in specs:
            read = read_conversations(conversations_file(spec.path, split))
            chosen = select(read, spec, seed)
            self.composition.append({"dataset": str(spec), "read": len(read), "used": len(chosen)})
            self.samples.extend(chosen)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def tasks(self) -> Counter:
        return Counter(s.task for s in self.samples)

    def load_images(self, sample: Sample) -> list[np.ndarray]:
        """The sample's images as arrays, each at the size its coordinates refer to."""
        images = []
        for path, size in zip(sample.images, sample.resized_sizes):
            with Image.open(path) as image:
                image = image.convert("RGB")
                if size is not None and image.size != tuple(size):
                    image = image.resize(tuple(size), Image.BICUBIC)
                images.append(np.array(image))  # writable: torch warns on read-only arrays
        return images

    def __getitem__(self, index: int) -> Example:
        sample = self.samples[index]
        images = self.load_images(sample)
        messages = list(sample.messages)
        if sample.task == "detect" and len(images) == 1 and self.rescale > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.rescale:
                h, w = images[0].shape[:2]
                scale = math.exp(rng.uniform(*np.log(RESCALE_RANGE)))
                new_h, new_w = smart_resize(max(1, round(h * scale)), max(1, round(w * scale)), FACTOR, self.min_pixels, self.max_pixels)
                answer = rescale_answer(sample.answer(), new_w / w, new_h / h)
                if answer is not None and (new_h, new_w) != (h, w):
                    images = [np.array(Image.fromarray(images[0]).resize((new_w, new_h), Image.BICUBIC))]
                    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
                    messages[last] = {"role": "assistant", "content": answer}
        videos = [[self._frame(path) for path in video] for video in sample.videos]
        return Example(sample.id, sample.task, chat_messages(messages), images, videos)

    @staticmethod
    def _frame(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))


class Collator:
    """Batches examples into model inputs. Labels are -100 everywhere except the assistant
    answers and the `<|im_end|>` closing each (so the model learns to stop), as RSCoVLM trained.
    Training pads on the right; generation (validation) pads on the left. With `dense_targets`
    the batch also holds what training.dense_head learns from each image's box answer."""

    def __init__(self, processor, padding_side: str = "right", dense_targets: bool = False):
        self.processor = processor
        self.padding_side = padding_side
        self.dense_targets = dense_targets
        tokenizer = processor.tokenizer
        self.header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def answer_labels(self, input_ids):
        import torch

        labels = torch.full_like(input_ids, IGNORE_INDEX)
        header, n = self.header, len(self.header)
        for row, ids in enumerate(input_ids.tolist()):
            i = 0
            while i <= len(ids) - n:
                if ids[i : i + n] != header:
                    i += 1
                    continue
                start = end = i + n
                while end < len(ids) and ids[end] != self.im_end:
                    end += 1
                stop = min(end + 1, len(ids))
                labels[row, start:stop] = input_ids[row, start:stop]
                i = stop
        return labels

    def __call__(self, examples: list[Example]) -> dict:
        from backend.engine.local import video_metadata

        texts = [self.processor.apply_chat_template(e.messages, tokenize=False, add_generation_prompt=False) for e in examples]
        images = [image for e in examples for image in e.images]
        videos = [video for e in examples for video in e.videos]
        extra = {"videos": videos, "video_metadata": [video_metadata(v) for v in videos], "cap_pixels_per_frame": False} if videos else {}
        batch = self.processor(text=texts, images=images or None, padding=True, padding_side=self.padding_side, return_tensors="pt", **extra)
        batch = dict(batch)
        batch["labels"] = self.answer_labels(batch["input_ids"])
        if self.dense_targets and images:
            import torch

            from training.dense_head import batch_targets

            merge = self.processor.image_processor.merge_size
            batch["dense_targets"] = torch.from_numpy(batch_targets(examples, batch["image_grid_thw"], merge))
        return batch
