"""Peak memory of `rscovlm change` on an 8k x 8k pair against a 2k x 2k pair, in the same run:
the later raster, in another CRS at another resolution, is read warped onto the earlier grid
window by window (WarpedVRT), so memory does not grow with the rasters (as detection's).

Each run is its own process (the tiny checkpoint: the model's own memory is small and the
raster-dependent part shows), its peak resident memory read with getrusage by a wrapper that
only waits for it (bench_detect_memory's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import data, report
from benchmarks.bench_detect_memory import WRAPPER

LATER_CRS, LATER_RESOLUTION = "EPSG:3857", 0.4  # m: the scene is 0.3 m in UTM


def later(before: Path) -> Path:
    """The earlier scene as another provider delivers it (Web Mercator, coarser), written by
    streaming a WarpedVRT so that making it needs no more memory than using it."""
    import rasterio
    import rasterio.shutil
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import Resampling, calculate_default_transform

    path = before.with_name(before.stem + "_later_3857.tif")
    if path.exists():
        return path
    with rasterio.open(before) as src:
        transform, width, height = calculate_default_transform(src.crs, LATER_CRS, src.width, src.height, *src.bounds, resolution=LATER_RESOLUTION)
        with WarpedVRT(src, crs=LATER_CRS, transform=transform, width=width, height=height, resampling=Resampling.bilinear) as vrt:
            staging = path.with_suffix(".partial.tif")
            rasterio.shutil.copy(vrt, staging, driver="GTiff", tiled=True, compress="deflate", blockxsize=512, blockysize=512)
            staging.rename(path)
    return path


def measure(before: Path, after: Path, model: Path) -> dict:
    rscovlm = Path(sys.executable).parent / "rscovlm"
    command = [str(rscovlm), "change", str(before), str(after), "--classes", "building", "--model", str(model), "--max-new-tokens", "8",
               "--no-progress", "--json"]
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"rscovlm change failed on {before}: {result['stderr']}")
    return {"peak_rss_mib": result["maxrss_kib"] / 1024, "seconds": seconds}


def main(quick: bool = False) -> dict:
    model = data.tiny_checkpoint()
    sizes = (1024, 4096) if quick else (2048, 8192)
    rows = []
    for size in sizes:
        before = data.scene(size, density=0.3)
        rows.append({"pair": f"{size} x {size}", "megapixels": size * size / 1e6, **measure(before, later(before), model)})
    summary = {"memory_ratio_large_to_small": rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], "goal": "< 1.5x"}
    return report.write("change_memory", "Peak memory of rscovlm change against the pair's size", rows, summary,
                        notes=__doc__.split("\n\n")[1].replace("\n", " "))


if __name__ == "__main__":
    main()
