"""`rscovlm eval detection` and `rscovlm eval grounding` from the command line."""

import json

import numpy as np
import pytest
import shapely
from pyogrio.raw import write as write_vector
from rasterio.crs import CRS

from backend.cli import main
from tests.backend.evaluation.helpers import hbox, rbox

BOXES = {
    "P1": [(rbox(100, 100, 40, 12, 30), "small-vehicle"), (rbox(300, 200, 60, 20, -10), "ship"), (hbox(10, 10, 50, 30), "ship")],
    "P2": [(rbox(200, 200, 40, 12, 80), "small-vehicle"), (hbox(400, 400, 440, 420), "plane")],
}


def dota_line(points, label, extra=""):
    return " ".join(f"{v:.2f}" for v in np.asarray(points).reshape(-1)) + f" {label}{extra}\n"


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("gt", "pred", "val"):
        (tmp_path / name).mkdir()
    for image, objects in BOXES.items():
        (tmp_path / "gt" / f"{image}.txt").write_text("gsd:0.5\n" + "".join(dota_line(p, label, " 0") for p, label in objects))
        for folder in ("pred", "val"):
            lines = [dota_line(hbox(600, 600, 640, 620), "ship", " 0.2")]  # a false alarm with a low score, answered first
            lines += [dota_line(p + rng.normal(0, 0.5, p.shape), label, f" {rng.uniform(0.5, 1):.3f}") for p, label in objects]
            (tmp_path / folder / f"{image}.txt").write_text("".join(lines))
    return tmp_path


def run(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_detection_folders_print_a_table_and_write_a_report(folders, capsys):
    code, out, err = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "gt", "--out", folders / "report")
    assert code == 0 and "AP_nc" in out and "small vehicle" in out and "stable sort" in out
    report = json.loads((folders / "report" / "report.json").read_text())
    assert report["summary"]["mAP_nc"] < 1.0  # the false alarms, scored 1 like the rest, rank first in their images
    assert {c["label"] for c in report["classes"]} == {"plane", "ship", "small vehicle"}
    assert (folders / "report" / "precision_recall.png").stat().st_size > 1000
    assert not list((folders / "report").glob(".*"))  # no temporary left behind


def test_scored_detections_choose_the_threshold_on_the_validation_split(folders, capsys):
    code, out, _ = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "gt", "--scored",
                       "--val-pred", folders / "val", "--val-gt", folders / "gt", "--json", "--out", folders / "r")
    report = json.loads(out)
    assert code == 0 and report["threshold"]["source"] == "chosen on the validation split"
    assert report["threshold"]["value"] == 0.2  # the lowest that drops the false alarms (kept: score over it)
    assert report["summary"]["mAP_nc"] == pytest.approx(1.0) and report["summary"]["mAP_scored"] == pytest.approx(1.0)
    assert len(report["sweep"]) == 20 and (folders / "r" / "f1_threshold.png").is_file()
    code, out, _ = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "gt", "--scored", "--threshold", "0", "--json")
    assert json.loads(out)["threshold"] == {"value": 0.0, "source": "given"}


def test_horizontal_mode_and_class_selection(folders, capsys):
    code, out, _ = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "gt", "--hbox", "--classes", "ship,plane", "--json")
    report = json.loads(out)
    assert code == 0 and [c["label"] for c in report["classes"]] == ["plane", "ship"]
    assert report["protocol"]["boxes"] == "horizontal envelopes"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--iou", "1.5"], "outside [0, 1)"),
        (["--val-pred", "x"], "go together"),
        (["--threshold", "0.3"], "only apply to scored"),
        (["--classes", " , "], "--classes is empty"),
    ],
)
def test_bad_options_end_with_one_line_and_status_2(folders, capsys, extra, message):
    code, out, err = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "gt", *extra)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_mismatched_image_names_and_missing_paths(folders, capsys):
    (folders / "other").mkdir()
    (folders / "other" / "X9.txt").write_text(dota_line(hbox(0, 0, 5, 5), "ship"))
    code, _, err = run(capsys, "detection", "--pred", folders / "other", "--gt", folders / "gt")
    assert code == 2 and "no predicted image is in the ground truth" in err
    code, _, err = run(capsys, "detection", "--pred", folders / "pred", "--gt", folders / "missing")
    assert code == 2 and "ground truth not found" in err


def test_vector_layers_with_a_label_field(tmp_path, capsys):
    crs = CRS.from_epsg(32633).to_wkt()
    polygons = [shapely.box(500_000, 4_400_000, 500_040, 4_400_010), shapely.box(500_100, 4_400_100, 500_120, 4_400_140)]
    for name, shift in (("truth", 0.0), ("pred", 0.5)):
        geometry = np.array([shapely.to_wkb(shapely.affinity.translate(p, shift, 0)) for p in polygons], dtype=object)
        write_vector(str(tmp_path / f"{name}.gpkg"), geometry, [np.array(["boat", "Boat"], dtype=object)], ["kind"],
                     driver="GPKG", geometry_type="Polygon", crs=crs)
    code, out, _ = run(capsys, "detection", "--pred", tmp_path / "pred.gpkg", "--gt", tmp_path / "truth.gpkg", "--label-field", "kind", "--json")
    report = json.loads(out)
    assert code == 0 and report["classes"][0]["label"] == "boat" and report["summary"]["mAP_nc"] == pytest.approx(1.0)


def test_grounding_folders(tmp_path, capsys):
    for name in ("gt", "pred"):
        (tmp_path / name).mkdir()
    cases = {"s1": (hbox(0, 0, 30, 10), hbox(1, 0, 31, 10)), "s2": (hbox(0, 0, 30, 10), hbox(10, 0, 40, 10)), "s3": (hbox(5, 5, 9, 9), None)}
    for sample, (reference, answer) in cases.items():
        (tmp_path / "gt" / f"{sample}.txt").write_text(dota_line(reference, "target"))
        (tmp_path / "pred" / f"{sample}.txt").write_text(dota_line(answer, "target") + dota_line(hbox(0, 0, 1, 1), "x") if answer is not None else "")
    code, out, _ = run(capsys, "grounding", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", tmp_path / "r")
    assert code == 0 and "Acc@0.5 33.33" in out and "1 without a box" in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["samples"] == 3 and report["correct"] == 1


def test_grounding_vector_layers_need_only_a_sample_id(tmp_path, capsys):
    crs = CRS.from_epsg(32633).to_wkt()
    box = shapely.box(500_000, 4_400_000, 500_040, 4_400_010)
    for name, shift in (("truth", 0.0), ("pred", 30.0)):
        geometry = np.array([shapely.to_wkb(shapely.affinity.translate(box, shift, 0)), shapely.to_wkb(box)], dtype=object)
        write_vector(str(tmp_path / f"{name}.gpkg"), geometry, [np.array(["a", "b"], dtype=object)], ["sample"],
                     driver="GPKG", geometry_type="Polygon", crs=crs)
    code, out, _ = run(capsys, "grounding", "--pred", tmp_path / "pred.gpkg", "--gt", tmp_path / "truth.gpkg", "--id-field", "sample", "--json")
    report = json.loads(out)
    assert code == 0 and (report["samples"], report["correct"]) == (2, 1)
