"""The literal prompt texts RSCoVLM checkpoints were trained on (see MODEL_IO.md).

A real checkpoint answers badly to paraphrases, so every string here is exact; tests pin them.
A conversation is a list of `Message`s; user messages carry their images before their text,
the order RSCoVLM's training data uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

BoxForm = Literal["polygon", "rbox", "hbox"]

DETECTION_SYSTEM = {
    "polygon": (
        "As an AI assistant, you specialize in accurate oriented object detection, delivering "
        "coordinates of the polygon vertices in plain text format 'x1,y1,x2,y2,x3,y3,x4,y4 object'."
    ),
    "rbox": (
        "As an AI assistant, you specialize in accurate oriented object detection, delivering "
        "coordinates in plain text format 'x,y,w,h,a object'."
    ),
    "hbox": (
        "As an AI assistant, you specialize in accurate image object detection, delivering "
        "coordinates in plain text format 'x1,y1,x2,y2 object'."
    ),
}
NO_OBJECTS = "There are none."
CAPTION_PROMPT = "Describe the image"
CLASSIFY_PREFIX = "Classify the image within one of the given classes:"
VQA_SUFFIX = " Answer the question using a single word or a short phrase."
ZOOM_TOOL = "image_zoom_in"
# The Zoom-in Chain's system prompt: RSCoVLM's training data builder (visual_cot_dataset.py,
# SYSTEM_PROMPT) sends this Qwen-style tool description alone, with no "You are a helpful
# assistant." before it. Its "parameters" member is a single parameter, not a JSON schema: that
# is how the checkpoint was trained, so it is kept as is.
ZOOM_SYSTEM = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "image_zoom_in", "description": "Zoom in to the region of interest on the given image. Input the bounding box of the region of interest and return the zoomed-in image to help to focus and view more clearly.", "parameters": {"name": "bbox", "type": "list[int]", "description": "The bounding box of the region of interest as an array [x1, y1, x2, y2], where (x1, y1) and (x2, y2) indicate the positions' absolute coordinates of the left top and right down corners, respectively.", "required": true}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>"""
ZOOM_ANSWER_INSTRUCTION = "\n Answer the question using a single word or phrase."
ZOOM_REQUEST_SUFFIX = "\nZoom in to the region of interest and answer the question."
ZOOM_FOLLOW_UP = "Here's the zoomed-in image. You can complete your task now."
MULTIPLE_CHOICE_INFIX = " The choices are listed below: "
MULTIPLE_CHOICE_SUFFIX = (
    "Select the best answer to the above multiple-choice question based on the image. "
    "Respond with only the letter (A, B, C, D, or E) of the correct option.\nThe best answer is:"
)

# DOTA-v1.0 classes as users type them: what `--classes dota` stands for. (The plugin offers
# DOTA-v2.0's eighteen in its class picker: qgis_plugin/task_request.py, QGIS's side of the process.)
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
)


@dataclass(frozen=True)
class Message:
    """One turn. A user turn's images come before its text; a video (frames of one place in
    time order, as RSCoVLM feeds bi-temporal data) comes between `lead` and `text`, as the
    training data's `...at different times: <video> question` reads."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: tuple[np.ndarray, ...] = field(default=())
    video: tuple[np.ndarray, ...] = field(default=())
    lead: str = ""

    @property
    def visuals(self) -> tuple[np.ndarray, ...]:
        return self.images + self.video


Conversation = list[Message]


def normalise_category(name: str) -> str:
    """The category spelling of the training data: lower case, '-' and '_' as spaces."""
    return " ".join(name.replace("-", " ").replace("_", " ").lower().split())


def detection_categories(classes: Sequence[str]) -> list[str]:
    """Normalised, de-duplicated and sorted, as the training prompts list them."""
    return sorted({normalise_category(c) for c in classes if normalise_category(c)})


def detection_prompt(classes: Sequence[str], form: BoxForm = "polygon") -> tuple[str, str]:
    """(system, user) for oriented or horizontal detection. The user text ends with the '.'
    that the public evaluator appends: the published scores were measured with it."""
    return DETECTION_SYSTEM[form], f"find the {', '.join(detection_categories(classes))}."


def grounding_expression(expression: str) -> str:
    """The referring expression as trained (after 'find the '): users often type the article
    themselves ('the white ship ...'), which would read 'find the the white ship'."""
    text = " ".join(expression.split())
    return text[4:] if text.lower().startswith("the ") else text


def grounding_prompt(expression: str, form: BoxForm = "hbox") -> tuple[str, str]:
    """(system, user) for grounding: a box (hbox, the default) or, as the mix's polygon grounding
    was trained, the polygon detection system prompt with the same user text."""
    return DETECTION_SYSTEM[form], f"find the {grounding_expression(expression)}"


def classification_prompt(classes: Sequence[str]) -> str:
    return CLASSIFY_PREFIX + ",".join(c.strip() for c in classes) + "."


def vqa_prompt(question: str) -> str:
    return question.strip() + VQA_SUFFIX


def region_caption_prompt(box: Sequence[int]) -> str:
    return f"[identify] What is the object present at {list(int(v) for v in box)}"


CHOICE_LETTERS = "ABCDE"
_LETTERED = re.compile(r"^\(([A-E])\)\s")


def lettered_choices(options: Sequence[str]) -> list[str]:
    """The options as the training data writes them, `(A) Yellow`, one per line: options
    already lettered so are kept, bare ones are lettered in order."""
    if len(options) > len(CHOICE_LETTERS):
        raise ValueError(f"at most {len(CHOICE_LETTERS)} choices, not {len(options)}")
    return [o.strip() if _LETTERED.match(o.strip()) else f"({CHOICE_LETTERS[i]}) {o.strip()}" for i, o in enumerate(options)]


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    return question.strip() + MULTIPLE_CHOICE_INFIX + "\n" + "\n".join(lettered_choices(options)) + "\n" + MULTIPLE_CHOICE_SUFFIX


def zoom_request(question: str) -> str:
    """Turn 1 of the Zoom-in Chain. The training questions (LRS-VQA) already ended with the
    single-word instruction (`phrase`, not VQA's `a short phrase`): a bare question gets it."""
    question = question.strip()
    if not question.endswith(ZOOM_ANSWER_INSTRUCTION.strip()):
        question += ZOOM_ANSWER_INSTRUCTION
    return question + ZOOM_REQUEST_SUFFIX


def zoom_tool_call(box: Sequence[int]) -> str:
    """The assistant's turn-1 answer as the checkpoint was trained to write it."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return f'<tool_call>\n{{"name": "{ZOOM_TOOL}", "arguments": {{"bbox": [{x1}, {y1}, {x2}, {y2}]}}}}\n</tool_call>'


# Bi-temporal questions (MODEL_IO, "Bi-temporal data"; docs/CHANGE.md): TEOChat's raw wording,
# which RSCoVLM's data builder keeps, the frames as one video after the prefix.
CHANGE_PREFIX = "This is a sequence of satellite images capturing the same location at different times:"
CHANGE_KINDS = ("changed", "appeared", "disappeared")
CHANGE_CAPTION_PROMPT = "Describe the changes between the two images."


def change_question(category: str, kind: str = "changed") -> str:
    """TEOChat's change localisation question for a class: 'changed' is S2Looking's form;
    'appeared' and 'disappeared' follow xBD's 'the buildings in the first image which were ...
    in the second image'."""
    plural = _plural(normalise_category(category))
    if kind == "changed":
        what = f"all changed {plural}"
    elif kind == "appeared":
        what = f"the {plural} in the second image which were not in the first image"
    elif kind == "disappeared":
        what = f"the {plural} in the first image which were not in the second image"
    else:
        raise ValueError(f"unknown change kind {kind!r}; one of {', '.join(CHANGE_KINDS)}")
    return (f"Identify {what}. Include a bounding box of the form [x_min, y_min, x_max, y_max] for each identified "
            f"{normalise_category(category)} in your response. If there are no such {plural}, do not output a bounding box.")


def change_answer_label(question: str) -> str:
    """The label RSCoVLM's builder gives TEOChat's box answers: the question without its
    instructions ('changed buildings'); answer lines read `x1,y1,x2,y2 <label>`."""
    text = question.split(". Include", 1)[0].removeprefix("Identify ").strip(" .")
    return text.removeprefix("all ")


def _plural(name: str) -> str:
    return name if name.endswith("s") else name + "s"


def change_turn(before: np.ndarray, after: np.ndarray, question: str) -> Conversation:
    return [Message("user", question, video=(before, after), lead=CHANGE_PREFIX)]


def single_turn(image: np.ndarray, user: str, system: str | None = None) -> Conversation:
    messages: Conversation = [Message("system", system)] if system else []
    messages.append(Message("user", user, (image,)))
    return messages


def corpus_for_tokenizer() -> list[str]:
    """Texts a from-scratch tokenizer is trained on, so task words become single tokens."""
    classes = list(DOTA_CLASSES)
    lines = list(DETECTION_SYSTEM.values()) + [
        NO_OBJECTS,
        CAPTION_PROMPT,
        CLASSIFY_PREFIX,
        VQA_SUFFIX,
        MULTIPLE_CHOICE_INFIX,
        MULTIPLE_CHOICE_SUFFIX,
        "You are a helpful assistant.",
        detection_prompt(classes)[1],
        grounding_prompt("the white ship next to the pier")[1],
        ZOOM_REQUEST_SUFFIX.strip(),
        ZOOM_FOLLOW_UP,
        '{"name": "image_zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}}',
    ]
    lines += [f"0,1,2,3,4,5,6,7 {c}" for c in classes]
    return lines
