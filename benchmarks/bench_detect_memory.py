"""Peak memory of `rscovlm detect` on a 16k x 16k GeoTIFF against a 2k x 2k one, in the same
run: windowed reads and a bounded GDAL block cache keep memory flat whatever the raster size.

Each run is its own process (the tiny checkpoint, so the model's own memory is small and the
raster-dependent part shows); its peak resident memory is read with getrusage in a wrapper
process that only waits for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import data, report

WRAPPER = (
    "import resource, subprocess, sys, json; "
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps({'rc': done.returncode, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "'stderr': done.stderr[-2000:]}))"
)


def measure(raster: Path, model: Path) -> dict:
    rscovlm = Path(sys.executable).parent / "rscovlm"
    command = [str(rscovlm), "detect", str(raster), "--classes", "plane,ship,small vehicle", "--model", str(model), "--max-new-tokens", "8", "--no-progress", "--json"]
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"rscovlm detect failed on {raster}: {result['stderr']}")
    return {"peak_rss_mib": result["maxrss_kib"] / 1024, "seconds": seconds}


def main(quick: bool = False) -> dict:
    model = data.tiny_checkpoint()
    sizes = (2048, 8192) if quick else (2048, 16384)
    rows = []
    for size in sizes:
        raster = data.scene(size, density=0.3)
        measured = measure(raster, model)
        tiles = (-(-(size - 504) // 376) + 1) ** 2
        rows.append({"raster": f"{size} x {size}", "megapixels": size * size / 1e6, "tiles": tiles, **measured})
    summary = {"memory_ratio_large_to_small": rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], "goal": "< 1.5x"}
    return report.write("detect_memory", "Peak memory of rscovlm detect against raster size", rows, summary, notes=__doc__.split("\n\n")[1].replace("\n", " "))


if __name__ == "__main__":
    main()
