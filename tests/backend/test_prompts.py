"""The literal texts of MODEL_IO: a real checkpoint answers badly to paraphrases."""

from backend import prompts


def test_detection_prompts_are_the_trained_strings():
    system, user = prompts.detection_prompt(["Small-Vehicle", "plane", "large vehicle", "plane"])
    assert system == (
        "As an AI assistant, you specialize in accurate oriented object detection, delivering coordinates of the "
        "polygon vertices in plain text format 'x1,y1,x2,y2,x3,y3,x4,y4 object'."
    )
    assert user == "find the large vehicle, plane, small vehicle."
    assert prompts.detection_prompt(["ship"], "rbox")[0].endswith("delivering coordinates in plain text format 'x,y,w,h,a object'.")
    assert prompts.detection_prompt(["ship"], "hbox")[0] == (
        "As an AI assistant, you specialize in accurate image object detection, delivering coordinates in plain "
        "text format 'x1,y1,x2,y2 object'."
    )


def test_other_task_prompts():
    hbox = prompts.DETECTION_SYSTEM["hbox"]
    assert prompts.grounding_prompt("white ship next to the pier") == (hbox, "find the white ship next to the pier")
    # an article typed by the user is not doubled
    assert prompts.grounding_prompt(" The white  ship next to the pier ") == (hbox, "find the white ship next to the pier")
    assert prompts.classification_prompt(["airport", "harbor", "farmland"]) == "Classify the image within one of the given classes:airport,harbor,farmland."
    assert prompts.vqa_prompt("How many planes are parked?") == "How many planes are parked? Answer the question using a single word or a short phrase."
    assert prompts.CAPTION_PROMPT == "Describe the image"
    assert prompts.region_caption_prompt([1, 2, 30, 40]) == "[identify] What is the object present at [1, 2, 30, 40]"
    mc = prompts.multiple_choice_prompt("What is shown?", ["a port", "a farm"])
    assert mc.startswith("What is shown? The choices are listed below: ")
    assert mc.endswith(
        "Select the best answer to the above multiple-choice question based on the image. Respond with only the "
        "letter (A, B, C, D, or E) of the correct option.\nThe best answer is:"
    )


def test_single_turn_puts_the_image_before_the_text():
    import numpy as np

    image = np.zeros((28, 28, 3), np.uint8)
    conversation = prompts.single_turn(image, "Describe the image")
    assert [m.role for m in conversation] == ["user"]
    assert conversation[0].images[0] is image
    with_system = prompts.single_turn(image, "find the ship.", "SYSTEM")
    assert [m.role for m in with_system] == ["system", "user"]
