"""Writing files and folders so that a failure never leaves a half-written one.

Everything is written under a hidden temporary name beside the target and renamed over it
only when complete; on failure the temporary is removed and any previous target is untouched.
Permissions are the usual ones for new files (the umask applies), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backend.errors import UserError


def _check_folder(target: Path) -> None:
    if not target.parent.is_dir():
        raise UserError(f"output folder {target.parent} does not exist.", "Create it first or choose another output path.")


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """A path beside `target` (same suffix, so format drivers recognise it), not yet created;
    renamed over `target` when the block ends without an exception."""
    target = Path(target)
    _check_folder(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    os.unlink(name)  # writers (GDAL drivers among them) create the file themselves, with the umask
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """An empty folder beside `target`; it replaces `target` (and whatever was there) when the
    block ends without an exception."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        if target.exists():
            previous = target.with_name(f".{target.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            target.rename(previous)
            staging.rename(target)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text(target: str | Path, text: str) -> Path:
    with staged_file(target) as staging:
        staging.write_text(text)
    return Path(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
