"""A dataset split folder as `rscovlm eval run` reads it (docs/DATASET.md): `images/`,
`labelTxt/` (detection truth, DOTA) and `conversations.jsonl` (the other tasks), with the
classes from `manifest.json` beside the splits when there is one."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import UserError
from backend.evaluation.dota_io import Annotations, read_image_files
from backend.parsing import parse_boxes
from backend.prompts import CLASSIFY_PREFIX, VQA_SUFFIX, ZOOM_REQUEST_SUFFIX, normalise_category

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GROUNDING_PREFIX = "find the "
REGION_CAPTION_PREFIX = "[identify]"


@dataclass
class Sample:
    """One conversation of a non-detection task, reduced to what the pipeline is asked and
    what the reference answer is."""

    id: str
    task: str  # "ground", "caption", "classify", "ask", "zoom", "change" or "change_caption"
    image: Path  # zoom: the full-resolution raster the chain reads; change: the earlier frame
    prompt: str  # the user text without the image placeholder
    argument: str  # expression, question, or classes joined by ','; '' for captions
    references: list[str]  # reference texts (captions may have several)
    reference_box: list[list[float]] | None = None  # grounding: corners in stored-image pixels
    image_after: Path | None = None  # change: the later frame
    change_kind: str = ""  # change: changed, appeared or disappeared; `argument` is the class
    reference_boxes: list[list[list[float]]] = field(default_factory=list)  # change: corners of every changed object


@dataclass
class DatasetSplit:
    root: Path
    images: dict[str, Path]  # detection images (stem -> file) that have a label file
    truth: Annotations | None
    classes: list[str]
    samples: list[Sample] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def _manifest_classes(root: Path) -> list[str] | None:
    for manifest in (root / "manifest.json", root.parent / "manifest.json"):
        if manifest.is_file():
            try:
                classes = json.loads(manifest.read_text()).get("classes")
            except (OSError, ValueError, AttributeError):
                return None
            return [normalise_category(c) for c in classes] if isinstance(classes, list) and classes else None
    return None


def _strip_image(text: str) -> str:
    return text.replace("<image>", "").strip()


def _sample(record: dict, root: Path) -> Sample | str:
    """The sample of one conversation line, or why it is not scored."""
    task = record.get("task")
    messages = record.get("messages") or []
    images = record.get("images") or []
    users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    answers = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if task == "detect":
        return "detect samples (detection is scored from labelTxt)"
    if task == "zoom":
        return _zoom_sample(record, root, users, answers)
    if task in ("change", "change_caption"):
        return _change_sample(record, root, users, answers)
    if task not in ("ground", "caption", "classify", "vqa") or len(users) != 1 or not answers or len(images) != 1:
        return "not a single-image sample of a known task"
    image = root / str(images[0])
    if not image.is_file():
        return "image file missing"
    prompt, answer = _strip_image(str(users[0])), str(answers[-1])
    sample_id = str(record.get("id") or images[0])
    if task == "ground":
        if not prompt.startswith(GROUNDING_PREFIX):
            return "grounding prompt not 'find the ...'"
        width, height = record.get("image_size") or [0, 0]
        resized_w, resized_h = record.get("resized_size") or [width, height]
        parsed = parse_boxes(answer, (resized_w, resized_h))
        if not parsed.boxes or not width or not resized_w:
            return "grounding reference without a box or image size"
        box = parsed.boxes[0].points * [width / resized_w, height / resized_h]
        return Sample(sample_id, "ground", image, prompt, prompt[len(GROUNDING_PREFIX) :], [answer], box.tolist())
    if task == "classify":
        if not prompt.startswith(CLASSIFY_PREFIX):
            return "classification prompt not in the RSCoVLM form"
        return Sample(sample_id, "classify", image, prompt, prompt[len(CLASSIFY_PREFIX) :].rstrip("."), [answer])
    if task == "vqa":
        question = prompt[: -len(VQA_SUFFIX)] if prompt.endswith(VQA_SUFFIX) else prompt
        return Sample(sample_id, "ask", image, prompt, question, [answer])
    references = [str(r) for r in record.get("references") or [answer]]
    return Sample(sample_id, "caption", image, prompt, "", references)


def _zoom_sample(record: dict, root: Path, users: list, answers: list) -> Sample | str:
    """A Zoom-in Chain question, asked again of the whole raster it was cut from (`raster`):
    the chain must find the region itself, so the stored crop is not used."""
    raster = record.get("raster")
    if not raster:
        return "zoom samples without a raster (the chain needs the full-resolution scene)"
    if not (root / str(raster)).is_file():
        return "raster file missing"
    if not users or not answers:
        return "not a Zoom-in Chain conversation"
    prompt = _strip_image(str(users[0]))
    question = prompt[: -len(ZOOM_REQUEST_SUFFIX)].strip() if prompt.endswith(ZOOM_REQUEST_SUFFIX) else prompt
    sample_id = str(record.get("id") or raster)
    return Sample(sample_id, "zoom", root / str(raster), prompt, question, [str(answers[-1])])


def _change_sample(record: dict, root: Path, users: list, answers: list) -> Sample | str:
    """A pair of frames with the question about them (its class and kind in `change`)."""
    videos = record.get("videos") or []
    if len(videos) != 1 or len(videos[0]) != 2 or len(users) != 1 or not answers:
        return "not a two-frame change sample"
    before, after = root / str(videos[0][0]), root / str(videos[0][1])
    if not before.is_file() or not after.is_file():
        return "frame file missing"
    sample_id, answer = str(record.get("id") or videos[0][0]), str(answers[-1])
    prompt = str(users[0]).replace("<video>", " ").strip()
    if record["task"] == "change_caption":
        return Sample(sample_id, "change_caption", before, prompt, "", [str(r) for r in record.get("references") or [answer]], image_after=after)
    asked = record.get("change") or {}
    if not asked.get("label") or asked.get("kind") not in ("changed", "appeared", "disappeared"):
        return "change samples without their class and kind ('change': {label, kind})"
    boxes = [b.points.tolist() for b in parse_boxes(answer, tuple(record.get("resized_size") or (0, 0))).boxes]
    return Sample(sample_id, "change", before, prompt, str(asked["label"]), [answer], image_after=after, change_kind=asked["kind"],
                  reference_boxes=boxes)


def open_split(path: str | Path) -> DatasetSplit:
    root = Path(path)
    if not (root / "images").is_dir():
        raise UserError(f"{root} is not a dataset split folder (no images/ in it).", "Point --data at a split such as data/boats/val (see docs/DATASET.md).")
    images = {p.stem: p for p in sorted((root / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    skipped: Counter = Counter()
    truth = None
    labels = root / "labelTxt"
    if labels.is_dir():
        files = sorted(p for p in labels.iterdir() if p.suffix == ".txt")
        without_image = [f for f in files if f.stem not in images]
        if without_image:
            skipped["label files without an image"] += len(without_image)
        truth = read_image_files([f for f in files if f.stem in images], truth=True, scored=False, source=str(labels))
        images = {stem: images[stem] for stem in truth.images}
    else:
        images = {}
    samples = []
    conversations = root / "conversations.jsonl"
    if conversations.is_file():
        for line in conversations.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                skipped["unreadable conversation lines"] += 1
                continue
            sample = _sample(record, root) if isinstance(record, dict) else "not a JSON object"
            if isinstance(sample, str):
                skipped[sample] += 1
            else:
                samples.append(sample)
    if not images and not samples:
        raise UserError(f"{root} has nothing to score: no labelTxt/ for its images and no usable conversations.", "See docs/DATASET.md.")
    classes = _manifest_classes(root) or (truth.boxes.labels() if truth is not None else [])
    return DatasetSplit(root, images, truth, classes, samples, skipped)
