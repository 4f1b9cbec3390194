"""Fixtures shared by the backend and training tests.

The tiny checkpoint is built once per session by `training.scratch` (random weights, a BPE
tokenizer trained with `tokenizers`, the real Qwen2.5-VL processor classes) and loaded back
through the same `from_pretrained` path a released checkpoint takes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Servers the tests start list and download models in a folder of their own, never the user's.
os.environ["RSCOVLM_MODELS_DIR"] = tempfile.mkdtemp(prefix="rscovlm-tests-models-")

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("RSCOVLM_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from training.scratch import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("models") / "tiny-random", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoint):
    from backend.engine.local import load_local_engine

    return load_local_engine(str(tiny_checkpoint), batch_size=4)


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    """A 1024 px synthetic scene in EPSG:32633 at 0.5 m with DOTA and GeoPackage truth."""
    from training.synthetic import generate

    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    plan = generate(path, 1024, seed=3)
    return path, plan


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (set RSCOVLM_REALDATA or check out ../shared)")
    return REALDATA
