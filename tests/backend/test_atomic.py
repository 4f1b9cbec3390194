import os
import stat

import pytest

from backend.atomic import staged_file, staged_folder, write_text
from backend.errors import UserError


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "hello")
        with staged_folder(tmp_path / "model") as staging:
            (staging / "config.json").write_text("{}")
    finally:
        os.umask(umask)
    assert path.read_text() == "hello" and mode(path) == 0o644
    assert mode(tmp_path / "model") == 0o755


def test_a_failure_keeps_the_previous_file_and_leaves_no_staging(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), staged_file(target) as staging:
        staging.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with staged_folder(target) as staging:
        (staging / "v1").write_text("1")
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "v2").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["v1"]
    with staged_folder(target) as staging:
        (staging / "v3").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["v3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_missing_output_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"), staged_file(tmp_path / "no" / "a.txt"):
        pass
