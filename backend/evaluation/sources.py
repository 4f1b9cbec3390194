"""Where boxes come from: a folder of per-image DOTA files, DOTA Task1 submission files, a
dataset split folder (its `labelTxt/`), or a labelled vector layer."""

from __future__ import annotations

from pathlib import Path

from backend.errors import UserError
from backend.evaluation.dota_io import Annotations, is_task1_folder, read_image_files, read_task1_files
from backend.evaluation.layers import is_vector, read_layer


def _text_files(path: Path) -> list[Path]:
    if path.is_dir():
        if (path / "labelTxt").is_dir():
            path = path / "labelTxt"
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
        if not files:
            raise UserError(f"{path} holds no .txt files.", "Point at a folder of DOTA label or prediction files.")
        return files
    if path.suffix.lower() == ".txt":
        return [path]
    raise UserError(
        f"cannot tell what {path} is.",
        "Give a folder of DOTA .txt files, a Task1_<class>.txt file, or a vector layer (.gpkg, .geojson, .shp).",
    )


def read_truth(
    path: str | Path, label_field: str | None = None, image_field: str | None = None, labelled: bool = True
) -> tuple[Annotations, str | None]:
    """Ground truth and its CRS (None for pixel coordinates)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"ground truth not found: {path}", "Check the --gt path.")
    if is_vector(path):
        return read_layer(path, truth=True, label_field=label_field, image_field=image_field, labelled=labelled)
    files = _text_files(path)
    if is_task1_folder(files):
        raise UserError(f"{path} holds Task1 submission files, which are predictions.", "Give per-image DOTA label files as --gt.")
    return read_image_files(files, truth=True, scored=False, source=str(path)), None


def read_predictions(
    path: str | Path,
    scored: bool = False,
    label_field: str | None = None,
    image_field: str | None = None,
    truth_crs: str | None = None,
    labelled: bool = True,
) -> Annotations:
    path = Path(path)
    if not path.exists():
        raise UserError(f"predictions not found: {path}", "Check the --pred path.")
    if is_vector(path):
        notes, _ = read_layer(path, truth=False, label_field=label_field, image_field=image_field, scored=scored, target_crs=truth_crs,
                              labelled=labelled)
        return notes
    files = _text_files(path)
    if is_task1_folder(files):
        return read_task1_files(files, str(path))
    return read_image_files(files, truth=False, scored=scored, source=str(path))
