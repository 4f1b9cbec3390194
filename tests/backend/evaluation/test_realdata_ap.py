"""AP on the real DOTA labels of ../shared/realdata with deterministic perturbations, and the
fast evaluator against the devkit loop (backend.evaluation.reference) on the same inputs."""

import numpy as np
import pytest

from backend.evaluation.boxes import BoxTable
from backend.evaluation.detection import evaluate_detections
from backend.evaluation.dota_io import read_image_files
from backend.evaluation.reference import reference_ap
from backend.evaluation.sources import read_truth

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def devkit_truth(realdata):
    truth, _ = read_truth(realdata / "dota" / "dota_devkit" / "labelTxt")
    assert len(truth.boxes) == 600 and int(truth.boxes.difficult.sum()) == 6
    return truth


@pytest.fixture(scope="module")
def dota8_truth(realdata):
    files = sorted((realdata / "dota" / "dota8" / "labelTxt_derived").glob("*/*.txt"))
    return read_image_files(files, truth=True, scored=False, source="dota8")


def jittered(boxes: BoxTable, sigma: float, seed: int) -> BoxTable:
    rng = np.random.default_rng(seed)
    return BoxTable.build(boxes.image, boxes.label, boxes.points + rng.normal(0, sigma, boxes.points.shape), line=boxes.line)


def aps(scores):
    return {c.label: c.ap for c in scores.classes}


def test_the_truth_itself_scores_one(devkit_truth, dota8_truth):
    for truth in (devkit_truth, dota8_truth):
        scores = evaluate_detections(truth.boxes, truth.boxes)
        assert all(c.ap == pytest.approx(1.0) and c.recall == 1.0 and c.precision == 1.0 for c in scores.classes)
    ship = {c.label: c for c in evaluate_detections(devkit_truth.boxes, devkit_truth.boxes).classes}["ship"]
    assert (ship.truth, ship.difficult, ship.ignored) == (525, 6, 6)


def test_dropping_half_of_a_class_halves_its_recall(devkit_truth):
    boxes = devkit_truth.boxes
    ships = np.flatnonzero((boxes.label == "ship") & ~boxes.difficult)
    kept = np.setdiff1d(np.arange(len(boxes)), ships[1::2])
    ship = {c.label: c for c in evaluate_detections(boxes, boxes.take(kept)).classes}["ship"]
    assert ship.recall == pytest.approx(len(ships[::2]) / 525) == pytest.approx(0.5, abs=1e-3)
    assert ship.precision == 1.0
    assert ship.ap == pytest.approx(6 / 11)  # precision 1 up to recall 0.501: points 0 .. 0.5


def test_duplicates_halve_precision_and_their_rank_decides_ap(devkit_truth):
    boxes = devkit_truth.boxes.take(~devkit_truth.boxes.difficult)
    appended = BoxTable.build(np.r_[boxes.image, boxes.image], np.r_[boxes.label, boxes.label],
                              np.r_[boxes.points, boxes.points], line=np.r_[boxes.line, boxes.line + 10_000])
    scores = evaluate_detections(boxes, appended)
    assert all(c.precision == 0.5 and c.recall == 1.0 and c.ap == pytest.approx(1.0) for c in scores.classes)
    assert scores.mean_f1 == pytest.approx(2 / 3)
    interleaved = BoxTable.build(appended.image, appended.label, appended.points, line=np.r_[2 * boxes.line, 2 * boxes.line + 1])
    worse = evaluate_detections(boxes, interleaved)
    assert worse.mean_ap < scores.mean_ap and worse.mean_f1 == pytest.approx(2 / 3)


def test_ap_falls_as_the_boxes_drift(devkit_truth):
    drift = [evaluate_detections(devkit_truth.boxes, jittered(devkit_truth.boxes, sigma, seed=1)).mean_ap for sigma in (0, 2, 4, 8)]
    assert drift[0] == pytest.approx(1.0)
    assert drift[0] > drift[1] > drift[2] > drift[3] and drift[3] < 0.2


def perturbed(truth: BoxTable, seed: int) -> BoxTable:
    """Jittered, 20 % missed, 20 % duplicated far off with another class, scores with ties."""
    rng = np.random.default_rng(seed)
    noisy = jittered(truth, 2.0, seed=seed + 1)
    extra = jittered(truth.take(rng.random(len(truth)) < 0.2), 6.0, seed=seed + 2)
    extra = BoxTable.build(extra.image, np.roll(extra.label, 1), extra.points, line=extra.line + 5000)
    predictions = BoxTable.concat([noisy.take(rng.random(len(noisy)) > 0.2), extra])
    scores = rng.random(len(predictions)).round(2)
    return BoxTable.build(predictions.image, predictions.label, predictions.points, score=scores, line=predictions.line)


def agree_with_devkit_loop(truth: BoxTable, seed: int, **options) -> None:
    predictions = perturbed(truth, seed)
    classes = sorted(set(truth.label.tolist()))
    fast = evaluate_detections(truth, predictions, classes=classes, **options)
    assert aps(fast) == reference_ap(truth, predictions, classes, **options)


@pytest.mark.parametrize("scored", [False, True])
@pytest.mark.parametrize("metric", ["voc07", "all"])
@pytest.mark.parametrize("horizontal", [False, True])
def test_same_numbers_as_the_devkit_loop(devkit_truth, dota8_truth, metric, horizontal, scored):
    small = BoxTable.concat([dota8_truth.boxes, devkit_truth.boxes.take(devkit_truth.boxes.image == "P1888")])
    agree_with_devkit_loop(small, seed=7, metric=metric, horizontal=horizontal, scored=scored)


@pytest.mark.slow
def test_same_numbers_as_the_devkit_loop_on_a_dense_marina(devkit_truth):
    agree_with_devkit_loop(devkit_truth.boxes.take(devkit_truth.boxes.image == "P0706"), seed=11)


def test_reading_files_in_another_order_changes_nothing(devkit_truth, dota8_truth, tmp_path):
    truth = BoxTable.concat([devkit_truth.boxes, dota8_truth.boxes])
    predictions = jittered(truth, 1.5, seed=9)
    order = np.random.default_rng(2).permutation(len(predictions))
    predictions = predictions.take(order[order % 3 != 0])  # drop a third, keep answer order per image below
    folder = tmp_path / "pred"
    folder.mkdir()
    for image in predictions.images():
        rows = predictions.take(predictions.image == image)
        rows = rows.take(np.argsort(rows.line, kind="stable"))
        (folder / f"{image}.txt").write_text(
            "".join(" ".join(f"{v:.3f}" for v in p.reshape(-1)) + f" {label.replace(' ', '-')}\n" for p, label in zip(rows.points, rows.label))
        )
    files = sorted(folder.glob("*.txt"))
    expected = evaluate_detections(truth, read_image_files(files, False, False, "p").boxes).as_dict()
    for seed in range(3):
        shuffled = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
        assert evaluate_detections(truth, read_image_files(shuffled, False, False, "p").boxes).as_dict() == expected
