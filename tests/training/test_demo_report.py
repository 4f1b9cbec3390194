"""The summary `make run` prints: scores of the layers the CLI wrote against the sample scene's
ground truth, the zoomed answer against the true colour, and the preview PNG."""

import numpy as np
from PIL import Image

from backend.contract import TaskOptions, TaskRequest
from backend.drive import run_task
from backend.prompts import ZOOM_REQUEST_SUFFIX, zoom_tool_call
from backend.writers import write_result
from tests.scripted import ScriptedEngine
from training.demo_report import report
from training.synthetic import generate

OPTIONS = TaskOptions(max_pixels=200704, tile_size=224, tile_overlap=64)


def _answers(scene, plane):
    """A scripted model that captions, and zooms onto the plane before naming its colour."""

    def answer(conversation):
        user = next(m for m in conversation if m.role == "user")
        if user.text.endswith(ZOOM_REQUEST_SUFFIX):
            if sum(m.role == "user" for m in conversation) == 1:
                size = user.images[0].shape[1], user.images[0].shape[0]
                x, y = plane.cx * size[0] / scene.width, plane.cy * size[1] / scene.height
                return zoom_tool_call([int(x - 40), int(y - 40), int(x + 40), int(y + 40)])
            return plane.colour_name
        return "A town with a plane."

    return answer


def test_report_scores_the_written_layers_and_draws_the_preview(tmp_path):
    raster = tmp_path / "town.tif"
    scene = generate(raster, 1024, seed=21, kind="town")  # 5x the budget: the chain zooms
    plane = next(o for o in scene.objects if o.label == "plane")
    engine = ScriptedEngine(_answers(scene, plane))
    question = "What colour is the plane?"
    (tmp_path / "truth_copy.gpkg").write_bytes(raster.with_suffix(".truth.gpkg").read_bytes())
    caption = run_task(TaskRequest(task="caption", raster=str(raster), options=OPTIONS), engine)
    answer = run_task(TaskRequest(task="ask", raster=str(raster), question=question, options=OPTIONS), engine)
    assert answer.zoom.steps == 1
    write_result(caption, tmp_path / "caption.gpkg")
    write_result(answer, tmp_path / "answer.gpkg")
    preview = tmp_path / "preview.png"
    text = report(raster, tmp_path / "truth_copy.gpkg", tmp_path / "caption.gpkg", tmp_path / "answer.gpkg", question, preview)
    assert "AP_nc 100.0" in text  # the ground truth scored as detections
    assert f"-> '{plane.colour_name}' (ground truth: {plane.colour_name}; right)" in text
    assert "the zoom window holds the plane" in text
    assert "caption: A town with a plane." in text
    image = np.asarray(Image.open(preview))
    assert image.shape == (1024 + 40, 2 * 1024 + 10, 3)
