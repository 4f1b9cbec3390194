"""What `make run` shows at the end: the scores of the demo checkpoint's answers on the sample
scene against its ground truth, and a PNG preview (the raster with the detected boxes, the
ground truth beside it, the zoom window and the answer).

Detection is scored by backend.evaluation (AP_nc, the RSCoVLM protocol) from the GeoPackages the
CLI wrote; the zoomed question by whether the answer names the colour the ground truth gives
the one object of the class it asks about.

    python -m training.demo_report --scene resources/sample/scene.tif --detections out/detections.gpkg \\
        --caption out/caption.gpkg --answer out/answer.gpkg --question "What colour is the plane?" --preview out/preview.png
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from pyogrio.raw import read as read_vector

from backend.atomic import staged_file
from backend.errors import UserError
from backend.evaluation.protocols import detection_report
from backend.evaluation.report import detection_table
from backend.evaluation.sources import read_predictions, read_truth
from backend.georef import map_to_raster
from training.world import CLASSES

PANEL = 1024  # side of each preview panel, px
CLASS_COLOURS = {"plane": (255, 0, 255), "ship": (0, 255, 255), "storage tank": (255, 140, 0), "large vehicle": (255, 255, 0),
                 "small vehicle": (0, 255, 0), "building": (255, 60, 60)}
QUESTION = re.compile(r"what colou?r is the (?P<label>.+?)\??$", re.IGNORECASE)


def _features(path: Path) -> list[dict]:
    """Polygons (map coordinates) and properties of a layer the CLI wrote."""
    import shapely

    meta, _, geometry, fields = read_vector(str(path))
    names = list(meta["fields"])
    rows = []
    for k, wkb in enumerate(geometry):
        shape = shapely.from_wkb(wkb) if wkb is not None else None
        ring = np.asarray(shape.exterior.coords) if shape is not None and shape.geom_type == "Polygon" else None
        rows.append({"ring": ring, **{name: fields[i][k] for i, name in enumerate(names)}})
    return rows


def _draw(image: Image.Image, rings: list[tuple[np.ndarray, str]], transform, scale: float, width: int = 2) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for ring, label in rings:
        pixels = map_to_raster(ring, transform) * scale
        draw.polygon([tuple(p) for p in pixels], outline=CLASS_COLOURS.get(label, (255, 255, 255)), width=width)
    return image


def preview(scene: Path, detections: list[dict], truth: list[dict], zoom: list[dict], answer: str | None, out: Path) -> Path:
    with rasterio.open(scene) as source:
        scale = PANEL / max(source.width, source.height)
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        pixels = source.read(out_shape=(3, size[1], size[0]), resampling=rasterio.enums.Resampling.average).transpose(1, 2, 0)
        transform = source.transform
    left = _draw(Image.fromarray(pixels), [(d["ring"], d.get("label", "")) for d in detections if d["ring"] is not None], transform, scale)
    left = _draw(left, [(z["ring"], "") for z in zoom if z["ring"] is not None], transform, scale, width=3)
    right = _draw(Image.fromarray(pixels), [(t["ring"], t.get("label", "")) for t in truth], transform, scale)
    canvas = Image.new("RGB", (2 * size[0] + 10, size[1] + 40), (255, 255, 255))
    canvas.paste(left, (0, 40))
    canvas.paste(right, (size[0] + 10, 40))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), f"demo checkpoint: {len(detections)} detections; white box: zoom window; answer: {answer or '-'}", fill=(0, 0, 0))
    draw.text((size[0] + 16, 4), f"ground truth: {len(truth)} objects", fill=(0, 0, 0))
    x = 6
    for label, colour in CLASS_COLOURS.items():
        draw.rectangle([x, 22, x + 10, 32], fill=colour, outline=(0, 0, 0))
        draw.text((x + 14, 21), label, fill=(0, 0, 0))
        x += 20 + 7 * len(label)
    with staged_file(out) as staging:
        canvas.save(staging, format="PNG")
    return out


def report(scene: Path, detections: Path, caption: Path, answer: Path, question: str, preview_path: Path) -> str:
    truth_layer = scene.with_suffix(".truth.gpkg")
    if not truth_layer.is_file():
        raise UserError(f"{truth_layer} is missing.", "Generate the scene with python -m training.synthetic.")
    truth, crs = read_truth(truth_layer, "label")
    predicted = read_predictions(detections, truth_crs=crs)
    scores = detection_report(truth, predicted, sorted(CLASSES))
    document = scores.as_dict()
    truth_rows = _features(truth_layer)
    answer_rows = _features(answer)
    caption_rows = _features(caption)
    reply = next((r.get("text") for r in answer_rows if r.get("role") == "answer"), None)
    match = QUESTION.match(question.strip())
    lines = [f"sample scene: {scene} ({len(truth_rows)} objects)", "",
             f"detection: {len(predicted.boxes.label)} boxes, AP_nc {100 * document['summary']['mAP_nc']:.1f} "
             "(RSCoVLM protocol: every box scores 1, rotated IoU 0.5, VOC07 11-point AP, mean over classes)",
             detection_table(document), "",
             f"caption: {caption_rows[0].get('text') if caption_rows else '-'}", ""]
    if match:
        label = match["label"].lower()
        colours = [r["colour"] for r in truth_rows if r.get("label") == label]
        expected = colours[0] if len(colours) == 1 else None
        verdict = "-" if expected is None else ("right" if reply and expected in reply.lower() else "wrong")
        lines.append(f"zoomed question: {question} -> {reply!r} (ground truth: {expected or 'not one ' + label}; {verdict})")
        zooms = [r for r in answer_rows if r.get("role") == "zoom"]
        if zooms and expected is not None:
            target = next(r for r in truth_rows if r.get("label") == label)
            inside = any(_contains(z["ring"], target["ring"]) for z in zooms)
            lines.append(f"the zoom window {'holds' if inside else 'misses'} the {label}")
    preview(scene, _features(detections), truth_rows, [r for r in answer_rows if r.get("role") == "zoom"], reply, preview_path)
    lines.append(f"preview: {preview_path} (left: detections and zoom window; right: ground truth)")
    return "\n".join(lines)


def _contains(outer: np.ndarray, inner: np.ndarray) -> bool:
    import shapely

    return bool(shapely.Polygon(outer).contains(shapely.Polygon(inner)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="the sample GeoTIFF (its .truth.gpkg beside it)")
    parser.add_argument("--detections", type=Path, required=True)
    parser.add_argument("--caption", type=Path, required=True)
    parser.add_argument("--answer", type=Path, required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--preview", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        print(report(args.scene, args.detections, args.caption, args.answer, args.question, args.preview))
    except UserError as exc:
        print(f"rscovlm: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
