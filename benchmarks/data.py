"""Inputs the benchmarks share, generated once into benchmarks/data/ (not committed)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def scene(size: int, seed: int = 11, density: float = 1.0) -> Path:
    """A synthetic GeoTIFF of size x size pixels with overviews (training.synthetic)."""
    from training.synthetic import generate

    path = DATA / f"scene_{size}_s{seed}_d{density:g}.tif"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        generate(path, size, seed, density=density)
    return path


def tiny_checkpoint() -> Path:
    from training.scratch import build_checkpoint

    path = DATA / "tiny-random"
    if not (path / "config.json").exists():
        build_checkpoint(path, "tiny", seed=0)
    return path
