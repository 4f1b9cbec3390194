"""Fixtures of the training tests: a dataset exported from the session's synthetic scene."""

from __future__ import annotations

import pytest

# Small tiles keep each sample at 81 visual tokens, so a training step on the tiny model takes
# a fraction of a second; 512 px blocks split the 1024 px scene into four.
TILE, OVERLAP, BLOCK = 256, 64, 512


@pytest.fixture(scope="session")
def exported(scene, tmp_path_factory):
    from training.export import ExportOptions, export_dataset

    path, _ = scene
    out = tmp_path_factory.mktemp("datasets") / "scene"
    options = ExportOptions(tile_size=TILE, tile_overlap=OVERLAP, block_size=BLOCK, keep_empty=1.0, val_fraction=0.25, seed=0)
    manifest = export_dataset(path, path.with_suffix(".truth.gpkg"), out, class_field="label", options=options)
    return out, manifest


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)
