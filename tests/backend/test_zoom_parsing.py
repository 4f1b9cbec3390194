"""The Zoom-in Chain's literal texts and the reading of `image_zoom_in` calls (untrusted text)."""

import json

import pytest

from backend import prompts
from backend.parsing import parse_tool_call

SIZE = (1008, 756)


def call(bbox, name="image_zoom_in", key="bbox") -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": {key: bbox}}) + "\n</tool_call>"


def test_system_prompt_is_the_trained_tool_description():
    system = prompts.ZOOM_SYSTEM
    assert system.startswith("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n")
    assert "You are a helpful assistant" not in system  # training sent the tool text alone
    tools = system.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    function = json.loads(tools)["function"]
    assert function["name"] == "image_zoom_in"
    assert function["description"] == (
        "Zoom in to the region of interest on the given image. Input the bounding box of the region of interest "
        "and return the zoomed-in image to help to focus and view more clearly."
    )
    assert function["parameters"]["name"] == "bbox" and function["parameters"]["type"] == "list[int]"
    assert "absolute coordinates of the left top and right down corners" in function["parameters"]["description"]
    assert system.endswith(
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def test_turn_texts():
    # the LRS-VQA training questions end with the single-word instruction ('phrase', not VQA's 'a short phrase')
    turn_one = "What color is the roof?\n Answer the question using a single word or phrase.\nZoom in to the region of interest and answer the question."
    assert prompts.zoom_request(" What color is the roof? ") == turn_one
    assert prompts.zoom_request("What color is the roof?\n Answer the question using a single word or phrase.") == turn_one  # not twice
    assert prompts.ZOOM_FOLLOW_UP == "Here's the zoomed-in image. You can complete your task now."
    assert prompts.zoom_tool_call([12, 34, 560.7, 78]) == (
        '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [12, 34, 560, 78]}}\n</tool_call>'
    )


def test_the_trained_call_round_trips():
    parsed = parse_tool_call(prompts.zoom_tool_call([100, 150, 240, 290]), SIZE)
    assert parsed.called and parsed.box == (100.0, 150.0, 240.0, 290.0) and parsed.note == ""


@pytest.mark.parametrize(
    "text",
    [
        "A white roof.",
        "",
        "40,40,60,60 the ship",
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "ship"}]\n```',
        '{"bbox": [1, 2, 3, 4]}',  # a JSON answer that names no tool is not a call
    ],
)
def test_plain_answers_are_not_calls(text):
    assert parse_tool_call(text, SIZE).called is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<tool_call>\n{not json}\n</tool_call>", "not valid JSON"),
        ("<tool_call>\n" + '{"name": "image_zoom_in", "arguments": {"bbox": [1, 2, 3' + "\n</tool_call>", "not valid JSON"),
        ("<tool_call>[1, 2, 3, 4]</tool_call>", "not a JSON object"),
        (call([1, 2, 3, 4], name="crop"), "names 'crop'"),
        ('<tool_call>{"name": "image_zoom_in"}</tool_call>', "not four numbers"),
        (call([1, 2, 3]), "not four numbers"),
        (call(["1", "2", "3", "4"]), "not four numbers"),
        (call([True, 2, 3, 4]), "not four numbers"),
        (call({"x1": 1}), "not four numbers"),
        ('<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [NaN, 2, 3, 4]}}</tool_call>', "not finite"),
        (call([1e12, 2, 3, 4]), "out of range"),
        (call([5, 5, 5, 90]), "no area"),
        (call([1100, 800, 1500, 900]), "outside the 1008x756 image"),
        (call([-300, -200, -10, -5]), "outside"),
        ("<tool_call>" + "[" * 50_000 + "</tool_call>", "not valid JSON"),
    ],
)
def test_unusable_calls_say_why(text, reason):
    parsed = parse_tool_call(text, SIZE)
    assert parsed.called and parsed.box is None
    assert reason in parsed.note


def test_reversed_corners_are_put_in_order():
    parsed = parse_tool_call(call([240, 290, 100, 150]), SIZE)
    assert parsed.box == (100.0, 150.0, 240.0, 290.0)
    assert parsed.note == "corners given in reverse order"


def test_boxes_past_the_edge_are_clipped():
    parsed = parse_tool_call(call([-20, -10, 2000, 300]), SIZE)
    assert parsed.box == (0.0, 0.0, 1008.0, 300.0)
    assert parsed.note == "clipped to the 1008x756 image"
    both = parse_tool_call(call([1200, 300, 900, -4]), SIZE)
    assert both.box == (900.0, 0.0, 1008.0, 300.0)
    assert both.note == "corners given in reverse order; clipped to the 1008x756 image"


def test_lenient_forms():
    bare = parse_tool_call('{"name": "image_zoom_in", "arguments": {"bbox": [10, 20, 30, 40]}}', SIZE)
    assert bare.box == (10.0, 20.0, 30.0, 40.0)
    unclosed = parse_tool_call('<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [10, 20, 30, 40]}}', SIZE)
    assert unclosed.box == (10.0, 20.0, 30.0, 40.0)
    string_arguments = parse_tool_call(
        '<tool_call>{"name": "image_zoom_in", "arguments": "{\\"bbox\\": [10, 20, 30, 40]}"}</tool_call>', SIZE
    )
    assert string_arguments.box == (10.0, 20.0, 30.0, 40.0)
    qwen_key = parse_tool_call(call([10, 20, 30, 40], key="bbox_2d"), SIZE)
    assert qwen_key.box == (10.0, 20.0, 30.0, 40.0)
    # MODEL_IO: all values <= 1 is the one place normalised coordinates appear
    normalised = parse_tool_call(call([0.25, 0.5, 0.5, 1.0]), SIZE)
    assert normalised.box == (252.0, 378.0, 504.0, 756.0)
    after_text = parse_tool_call("I need a closer look.\n" + call([10, 20, 30, 40]) + "\n" + call([1, 1, 2, 2]), SIZE)
    assert after_text.box == (10.0, 20.0, 30.0, 40.0)  # the first call counts


@pytest.mark.parametrize("text", [None, 42, b"<tool_call>", ["<tool_call>"]])
def test_non_text_never_raises(text):
    assert parse_tool_call(text, SIZE).called is False
