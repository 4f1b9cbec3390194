"""Inference while the service trains. Caption jobs, one after another, against a real
`rscovlm serve` (127.0.0.1, the tiny checkpoint): first with nothing else running (the
baseline), then while a LoRA fine-tuning job of the same service runs in its child process at
the runner's default lower CPU priority, then while one runs at full priority
(RSCOVLM_TRAINING_NICENESS=0), all in the same run. Latency is submit to the client seeing done;
the fit's steps per second during each measurement show what the priority costs training."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks import data, report

POLL_S = 0.01
QUICK_FIT = ["lora_r=4", "num_workers=0", "val_samples=2", "val_ap_samples=0", "rescale=0", "warmup_steps=0", "grad_accum=1",
             "log_every=1000", "save_every=100000", "gradient_checkpointing=false", "min_pixels=50176", "max_pixels=65536"]


def _follow(client: httpx.Client, url: str, until, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(url).json()
        if until(status):
            return status
        time.sleep(POLL_S)
    raise RuntimeError(f"{url} did not get there within {timeout_s} s: {status}")


def _ended(status: dict) -> bool:
    return status["state"] in ("done", "failed", "cancelled")


def _captions(client: httpx.Client, raster: str, count: int) -> list[float]:
    """Seconds from submit to done of `count` caption jobs, one at a time."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        created = client.post("/jobs", json={"task": "caption", "raster": raster, "options": {"max_new_tokens": 16}}).json()
        status = _follow(client, f"/jobs/{created['id']}", _ended)
        if status["state"] != "done":
            raise RuntimeError(f"caption job {status['state']}: {status['error']}")
        latencies.append(time.perf_counter() - start)
    return latencies


def _row(mode: str, latencies: list[float], baseline_p50: float | None, steps_per_s: float | None) -> dict:
    p50 = float(np.percentile(latencies, 50))
    return {
        "mode": mode,
        "jobs": len(latencies),
        "p50_latency_s": p50,
        "p95_latency_s": float(np.percentile(latencies, 95)),
        "p50_vs_idle": p50 / baseline_p50 if baseline_p50 else 1.0,
        "fit_steps_per_s": steps_per_s,
    }


def _while_fitting(client: httpx.Client, raster: str, count: int, body: dict, niceness: str) -> tuple[list[float], float]:
    os.environ["RSCOVLM_TRAINING_NICENESS"] = niceness
    created = client.post("/training/fit", json=body).json()
    url = created["url"]
    try:
        running = _follow(client, url, lambda s: s["progress"]["done"] >= 2 or _ended(s))
        if running["state"] != "running":
            raise RuntimeError(f"the fit {running['state']}: {running['error']}")
        start, first = time.perf_counter(), running["progress"]["done"]
        latencies = _captions(client, raster, count)
        steps = client.get(url).json()["progress"]["done"] - first
        return latencies, steps / (time.perf_counter() - start)
    finally:
        client.delete(url)
        _follow(client, url, _ended)
        os.environ.pop("RSCOVLM_TRAINING_NICENESS", None)


def main(quick: bool = False) -> dict:
    from backend.engine.local import load_local_engine
    from backend.server.jobs import Scheduler
    from backend.server.serving import LocalServer

    count = 10 if quick else 40
    scene = data.scene(1024)
    raster = str(data.scene(512))
    checkpoint = data.tiny_checkpoint()
    engine = load_local_engine(str(checkpoint), batch_size=1)
    server = LocalServer(Scheduler(engine), "127.0.0.1", 0).start()
    work = Path(tempfile.mkdtemp(prefix="bench-training-service-"))
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60) as client:
            export = client.post("/training/export", json={
                "raster": str(scene), "labels": str(scene.with_suffix(".truth.gpkg")), "class_field": "label", "out": str(work / "data"),
                "options": {"tile_size": 256, "tile_overlap": 64, "block_size": 512, "val_fraction": 0.25},
            }).json()  # fmt: skip
            exported = _follow(client, export["url"], _ended)
            if exported["state"] != "done":
                raise RuntimeError(f"the export {exported['state']}: {exported['error']}")
            _captions(client, raster, 3)  # warm-up: first-call costs out of the timings
            idle = _captions(client, raster, count)
            rows = [_row("idle (baseline)", idle, None, None)]
            baseline = rows[0]["p50_latency_s"]
            for mode, niceness in (("fit running, niceness 10 (default)", "10"), ("fit running, niceness 0", "0")):
                body = {"model": str(checkpoint), "data": str(work / "data"), "out": str(work / f"run-{niceness}"), "max_steps": 100000,
                        "overrides": QUICK_FIT}
                latencies, steps_per_s = _while_fitting(client, raster, count, body, niceness)
                rows.append(_row(mode, latencies, baseline, steps_per_s))
    finally:
        server.stop()
    device = engine.describe()["device"]
    summary = {
        "device": device,
        "idle_p50_latency_s": baseline,
        "p50_slowdown_fit_niceness_10": rows[1]["p50_vs_idle"],
        "p50_slowdown_fit_niceness_0": rows[2]["p50_vs_idle"],
    }
    notes = (
        f"{count} caption jobs (16 new tokens) one after another over HTTP, tiny random Qwen2.5-VL on {device}, "
        f"{os.cpu_count()} CPUs; the fit is LoRA on the same tiny checkpoint in the service's child process "
        "(python -m training.runner), 256 px tiles, batch 1. Both processes compete for the same cores, so the "
        "slowdown is what a fit costs a CPU-only service; on a GPU machine they share the GPU instead. "
        "A shared machine's other load adds noise to every row alike."
    )
    return report.write("training_service", "Inference while the service fine-tunes", rows, summary, notes)
