"""`rscovlm serve` under load: 200 jobs from 20 concurrent HTTP clients against a real server
(uvicorn on 127.0.0.1, the tiny checkpoint), measuring jobs per second and p50/p95 latency from
submit to the client seeing `done`. The same load then runs with one tile per forward pass,
the baseline for the batching gain (tiles per second with cross-job batching over one at a
time), in the same run."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np

from benchmarks import data, report

BATCH_SIZE = 8
POLL_S = 0.05  # each client polls all its pending jobs this often; faster polls only load the CPU the model needs
# A mix the plugin sends: one-view text tasks, and detections of 4 tiles (256 px on a 512 px extent).
TASKS = ("caption", "ask", "classify", "detect")


def request_body(raster: str, task: str, client: int, k: int) -> dict:
    body = {"task": task, "raster": raster, "options": {"max_new_tokens": 16, "tile_size": 256, "tile_overlap": 0}}
    if task in ("detect", "classify"):
        body["classes"] = ["plane", "ship", "small vehicle"]
    if task == "ask":
        body["question"] = f"What is at place {client}-{k}?"
    return body


def run_load(engine, raster: str, clients: int, jobs_per_client: int) -> dict:
    from backend.server.jobs import Scheduler
    from backend.server.serving import LocalServer

    server = LocalServer(Scheduler(engine), "127.0.0.1", 0).start()
    latencies: list[float] = []
    views: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client_thread(number: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=300) as client:
            barrier.wait()
            submitted = []
            for k in range(jobs_per_client):
                start = time.perf_counter()
                response = client.post("/jobs", json=request_body(raster, TASKS[(number + k) % len(TASKS)], number, k))
                submitted.append((response.json()["id"], start))
            while submitted:  # poll every pending job each round, as a client with several does
                for job_id, start in list(submitted):
                    status = client.get(f"/jobs/{job_id}").json()
                    if status["state"] in ("queued", "running"):
                        continue
                    submitted.remove((job_id, start))
                    with lock:
                        if status["state"] != "done":
                            failures.append(status["error"])
                        latencies.append(time.perf_counter() - start)
                        views.append(status["progress"]["done"])
                time.sleep(POLL_S)

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(clients)]
    try:
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        batches = server.scheduler.batches
    finally:
        server.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} job(s) failed, e.g. {failures[0]}")
    jobs = len(latencies)
    return {
        "batch_size": engine.batch_size,
        "jobs": jobs,
        "views": int(sum(views)),
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "tiles_per_s": sum(views) / wall,
        "p50_latency_s": float(np.percentile(latencies, 50)),
        "p95_latency_s": float(np.percentile(latencies, 95)),
        "mean_batch": sum(views) / max(batches, 1),
    }


def main(quick: bool = False) -> dict:
    from backend.engine.local import load_local_engine

    clients, per_client = (8, 5) if quick else (20, 10)
    raster = str(data.scene(512))
    checkpoint = str(data.tiny_checkpoint())
    batched_engine = load_local_engine(checkpoint, batch_size=BATCH_SIZE)
    run_load(batched_engine, raster, 4, 2)  # warm-up: first-call costs out of the timings
    batched = run_load(batched_engine, raster, clients, per_client)
    single = run_load(load_local_engine(checkpoint, batch_size=1), raster, clients, per_client)
    rows = [{"mode": f"cross-job batches of {BATCH_SIZE}", **batched}, {"mode": "one tile at a time (baseline)", **single}]
    device = batched_engine.describe()["device"]
    summary = {
        "device": device,
        "jobs_per_s": batched["jobs_per_s"],
        "p50_latency_s": batched["p50_latency_s"],
        "p95_latency_s": batched["p95_latency_s"],
        "batching_gain_tiles_per_s": batched["tiles_per_s"] / single["tiles_per_s"],
    }
    notes = (
        f"{clients} clients x {per_client} jobs over HTTP (caption, ask, classify: 1 view; detect: 4 tiles), "
        f"16 new tokens per answer, tiny random Qwen2.5-VL on {device}; latency is submit to the client's poll "
        f"seeing done ({POLL_S * 1000:g} ms polls). The tiny model makes the engine cheap, so these numbers "
        "mostly measure the service's own overhead; with a 7B model on a GPU the batching gain is the model's."
    )
    return report.write("server", "rscovlm serve under load", rows, summary, notes)
