"""Jobs over HTTP against a real server with the tiny checkpoint: the lifecycle, bad input,
load from concurrent clients, cancelling, failures, and the result TTL."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from backend.engine.local import load_local_engine
from tests.backend.server.conftest import client_for, job, start_server, wait_for
from tests.scripted import ScriptedEngine


def test_detection_job_from_submit_to_geojson(client, small_raster):
    response = client.post("/jobs", json=job(small_raster, "detect", options={"tile_size": 256, "tile_overlap": 0, "max_new_tokens": 8}))
    assert response.status_code == 202
    created = response.json()
    assert created["url"] == f"/jobs/{created['id']}" and created["progress"]["total"] == 4
    status = wait_for(client, created["id"])
    assert status["state"] == "done", status["error"]
    assert status["progress"] == {"done": 4, "total": 4}
    assert status["features"] == [] and status["crs"] == "EPSG:32633"
    result = status["result"]
    assert result["type"] == "FeatureCollection" and result["task"] == "detect" and result["crs"] == "EPSG:32633"
    assert result["stats"]["views"] == 4 and result["stats"]["visual_tokens"] > 0
    geojson = client.get(f"/jobs/{created['id']}/geojson").json()
    assert geojson["type"] == "FeatureCollection"
    assert geojson["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert created["id"] in {j["id"] for j in client.get("/jobs").json()}
    assert client.delete(f"/jobs/{created['id']}").json()["state"] == "done"  # a finished job is dropped
    assert client.get(f"/jobs/{created['id']}").status_code == 404


@pytest.mark.parametrize("task", ["caption", "classify", "ask", "ground"])
def test_text_and_grounding_tasks(client, small_raster, task):
    status = wait_for(client, client.post("/jobs", json=job(small_raster, task)).json()["id"])
    assert status["state"] == "done", status["error"]
    result = status["result"]
    assert result["task"] == task and result["raster"]["window"] == [0, 0, 400, 400]
    if task != "ground":
        assert isinstance(result["text"], str) and len(result["features"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ('{"task": "caption", "raster": ', 400, "not valid JSON"),
        ("[1, 2", 400, "not valid JSON"),
        ({"task": "segment", "raster": "x.tif"}, 422, "invalid input (task): Input should be 'detect'"),
        ({"task": "detect", "raster": "x.tif"}, 422, "needs a non-empty list of classes"),
        ({"task": "caption", "raster": "x.tif", "colour": "red"}, 422, "invalid input (colour): Extra inputs are not permitted"),
        ({"task": "caption", "raster": "/nowhere/scene.tif"}, 400, "raster file not found: /nowhere/scene.tif"),
        ({"task": "caption", "raster": "RASTER", "extent": [0, 0, 10, 10]}, 400, "the extent does not overlap the raster"),
        ({"task": "caption", "raster": "RASTER", "extent_crs": "EPSG:999999", "extent": [0, 0, 1, 1]}, 400, "unknown CRS"),
        ({"task": "detect", "raster": "RASTER", "classes": ["ship"], "options": {"tile_size": 10}}, 422, "options.tile_size"),
    ],
)
def test_bad_input_is_4xx_with_the_reason(client, small_raster, body, status, message):
    if isinstance(body, dict):
        body = {k: (str(small_raster) if v == "RASTER" else v) for k, v in body.items()}
        response = client.post("/jobs", json=body)
    else:
        response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail


def test_unknown_job_is_404(client):
    for response in (client.get("/jobs/0123"), client.delete("/jobs/0123"), client.get("/jobs/0123/geojson")):
        assert response.status_code == 404 and "no job 0123" in response.json()["detail"]


@pytest.mark.slow
def test_200_jobs_from_20_clients_all_finish_once(served, small_raster):
    """Every job is answered, with its own request's result; no view is answered twice."""
    tasks = ["caption", "ask", "classify", "detect"]
    before = served.scheduler.views
    outcomes: dict[str, dict] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client_thread(number: int):
        with client_for(served) as client:
            mine = []
            for k in range(10):
                task = tasks[(number + k) % len(tasks)]
                marker = f"client {number} job {k}"
                body = job(small_raster, task, options={"tile_size": 256, "tile_overlap": 0, "max_new_tokens": 6})
                if task == "ask":
                    body["question"] = f"What is {marker}?"
                if task in ("detect", "classify"):
                    body["classes"] = [f"plane {number} {k}", "ship"]
                response = client.post("/jobs", json=body)
                if response.status_code != 202:
                    errors.append(response.text)
                    return
                mine.append((response.json()["id"], body))
            for job_id, body in mine:
                status = wait_for(client, job_id)
                with lock:
                    assert job_id not in outcomes
                    outcomes[job_id] = {"status": status, "body": body}

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert len(outcomes) == 200
    views = 0
    for outcome in outcomes.values():
        status, body = outcome["status"], outcome["body"]
        assert status["state"] == "done", status["error"]
        result = status["result"]
        assert result["task"] == body["task"]
        assert status["progress"]["done"] == status["progress"]["total"] == result["stats"]["views"]
        views += result["stats"]["views"]
        if body["task"] == "ask":
            assert all(body["question"] in f["properties"]["prompt"] for f in result["features"])
    assert served.scheduler.views - before == views  # each view answered exactly once
    assert Counter(o["body"]["task"] for o in outcomes.values()) == {t: 50 for t in tasks}


def test_cancel_mid_job_stops_within_one_batch(client, served, large_raster, small_raster):
    body = job(large_raster, "detect", options={"tile_size": 64, "tile_overlap": 0, "max_new_tokens": 4})
    job_id = client.post("/jobs", json=body).json()["id"]
    wait_for(client, job_id, states=("running",))
    while client.get(f"/jobs/{job_id}").json()["progress"]["done"] == 0:
        time.sleep(0.01)
    cancelled = client.delete(f"/jobs/{job_id}").json()
    assert cancelled["state"] == "cancelled" and cancelled["error"] == "cancelled by the client"
    total = cancelled["progress"]["total"]
    assert total > 1000 and 0 < cancelled["progress"]["done"] < total
    time.sleep(0.5)  # the batch in flight ends; its answers are dropped
    later = client.get(f"/jobs/{job_id}").json()
    assert later["state"] == "cancelled" and later["progress"] == cancelled["progress"]
    assert client.delete(f"/jobs/{job_id}").status_code == 200  # dropped now
    assert wait_for(client, client.post("/jobs", json=job(small_raster)).json()["id"])["state"] == "done"


def test_a_job_whose_raster_breaks_fails_with_the_reason_and_others_go_on(client, small_raster, tmp_path):
    """A Cloud-Optimised GeoTIFF cut short: its header opens, its pixels do not."""
    import rasterio
    from rasterio.shutil import copy as copy_raster

    cog = tmp_path / "cut.tif"
    copy_raster(small_raster, cog, driver="COG", COMPRESS="NONE", BLOCKSIZE=256, OVERVIEWS="NONE")
    with rasterio.open(cog) as dataset:
        assert dataset.width == 400
    cog.write_bytes(cog.read_bytes()[:2000])
    broken = client.post("/jobs", json=job(cog)).json()["id"]
    healthy = client.post("/jobs", json=job(small_raster)).json()["id"]
    failed = wait_for(client, broken)
    assert failed["state"] == "failed" and failed["error"].startswith("reading the raster failed")
    assert wait_for(client, healthy)["state"] == "done"


def test_nan_in_an_answer_is_skipped_and_a_failing_merge_still_closes_the_raster(small_raster, monkeypatch):
    """Model output is untrusted: a JSON answer with NaN coordinates is skipped and counted, the
    job done. A job whose merge fails anyway (a bug) fails alone and leaves no raster open."""
    nan = '[{"bbox_2d": [NaN, 1, 20, 30], "label": "plane"}, {"bbox_2d": [10, 20, 60, 40], "label": "ship"}]'
    server = start_server(ScriptedEngine([nan]))
    try:
        with client_for(server) as client:
            status = wait_for(client, client.post("/jobs", json=job(small_raster, "detect", options={"tile_size": 256, "tile_overlap": 0})).json()["id"])
            assert status["state"] == "done", status["error"]
            stats = status["result"]["stats"]
            assert stats["lines_skipped"] == 4 and "not finite" in stats["skipped"][0]["reason"]
            assert {f["properties"]["label"] for f in status["result"]["features"]} == {"ship"}
            from backend.pipeline import TaskRun

            monkeypatch.setattr(TaskRun, "features", lambda self: (_ for _ in ()).throw(ValueError("a merge bug")))
            failed_id = client.post("/jobs", json=job(small_raster, "detect")).json()["id"]
            failed = wait_for(client, failed_id)
            assert failed["state"] == "failed" and "a merge bug" in failed["error"]
            assert server.scheduler.get(failed_id).run.source.dataset.closed
    finally:
        server.stop()


def test_a_crashed_engine_is_loaded_again(tiny_checkpoint, small_raster):
    loads = []

    def load():
        loads.append(1)
        return load_local_engine(str(tiny_checkpoint), batch_size=4)

    server = start_server(load(), load)
    try:
        with client_for(server) as client:
            server.scheduler.engine.model = None  # the engine breaks: every generate() raises now
            status = wait_for(client, client.post("/jobs", json=job(small_raster)).json()["id"])
            assert status["state"] == "done", status["error"]
            health = client.get("/health").json()
            assert health["engine_reloads"] == 1 and len(loads) == 2
    finally:
        server.stop()


class BatchRecorder(ScriptedEngine):
    """The scripted engine, remembering each batch's size; batches after the first `hold_after`
    wait in generate() until released."""

    def __init__(self, answer, batch_size=4, hold_after=0):
        super().__init__(answer, batch_size)
        self.hold_after = hold_after
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, conversations, max_new_tokens, repetition_penalty=None):
        if len(self.batches) >= self.hold_after:
            self.entered.set()
            self.release.wait(30)
        self.batches.append(len(conversations))
        return super().generate(conversations, max_new_tokens, repetition_penalty)


def test_views_of_queued_jobs_share_batches(small_raster):
    """One detection of 4 tiles, then 6 one-view captions: the captions fill whole batches,
    while the detection, queued first, is answered first."""
    engine = BatchRecorder(lambda conv: "10,10,60,10,60,40,10,40 plane" if "find" in conv[-1].text else "a field")
    server = start_server(engine)
    try:
        with client_for(server) as client:
            detect_id = client.post("/jobs", json=job(small_raster, "detect", options={"tile_size": 256, "tile_overlap": 0, "max_new_tokens": 8})).json()["id"]
            assert engine.entered.wait(10)
            caption_ids = [client.post("/jobs", json=job(small_raster)).json()["id"] for _ in range(6)]
            running = client.get(f"/jobs/{detect_id}").json()
            assert running["state"] == "running" and running["progress"]["done"] < 4
            engine.release.set()
            done = [wait_for(client, i) for i in caption_ids]
            assert all(s["state"] == "done" for s in done)
            final = wait_for(client, detect_id)
            assert final["state"] == "done"
            assert engine.batches == [4, 4, 2]  # 4 tiles; 4 captions; 2 captions
            assert final["result"]["features"] and all(f["properties"]["label"] == "plane" for f in final["result"]["features"])
    finally:
        server.stop()


def test_partial_features_while_a_job_runs(small_raster):
    engine = BatchRecorder(lambda conv: "10,10,60,10,60,40,10,40 plane", batch_size=2, hold_after=1)
    server = start_server(engine)
    try:
        with client_for(server) as client:
            job_id = client.post("/jobs", json=job(small_raster, "detect", options={"tile_size": 256, "tile_overlap": 0, "max_new_tokens": 8})).json()["id"]
            deadline = time.monotonic() + 30
            while (status := client.get(f"/jobs/{job_id}").json())["progress"]["done"] < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert status["state"] == "running" and status["progress"] == {"done": 2, "total": 4}
            assert len(status["features"]) == 2 and status["crs"] == "EPSG:32633" and status["result"] is None
            x, y = status["features"][0]["geometry"]["coordinates"][0][0]
            assert 500_000 < x < 500_200 and 4_400_000 < y < 4_400_200  # map coordinates, not pixels
            engine.release.set()
            assert len(wait_for(client, job_id)["result"]["features"]) == 4
    finally:
        server.stop()


def test_results_are_dropped_after_the_ttl(small_raster):
    server = start_server(ScriptedEngine(["a field"]), result_ttl_s=0.3)
    try:
        with client_for(server) as client:
            job_id = client.post("/jobs", json=job(small_raster)).json()["id"]
            assert wait_for(client, job_id)["state"] == "done"
            time.sleep(0.5)
            assert client.get(f"/jobs/{job_id}").status_code == 404
            assert client.get("/health").json()["jobs"]["done"] == 0
    finally:
        server.stop()


def test_a_full_queue_is_503(small_raster):
    engine = BatchRecorder(["a field"])
    server = start_server(engine, max_jobs=2)
    try:
        with client_for(server) as client:
            assert all(client.post("/jobs", json=job(small_raster)).status_code == 202 for _ in range(2))
            assert engine.entered.wait(10)  # both jobs are held: one in the batch, one queued
            refused = client.post("/jobs", json=job(small_raster))
            assert refused.status_code == 503 and "queue is full" in refused.json()["detail"]
            assert refused.headers["retry-after"] == "5"
            engine.release.set()
    finally:
        server.stop()


TOOL_CALL = '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [20, 20, 120, 120]}}\n</tool_call>'


def _zoom_answer(conversation) -> str:
    users = [m for m in conversation if m.role == "user"]
    if not any(m.role == "system" and "image_zoom_in" in m.text for m in conversation):
        return "a field"
    return TOOL_CALL if len(users) == 1 else "two ships"


def test_zoom_in_chain_jobs_run_their_turns_through_the_queue(small_raster):
    """A chained job's second turn depends on its first answer; its turns share the queue and
    its batches with other work, and the job reports the chain's trace."""
    engine = BatchRecorder(_zoom_answer, hold_after=1)
    server = start_server(engine)
    try:
        with client_for(server) as client:
            zoomed = job(small_raster, "ask", question="What is in the harbour?", options={"zoom": "on", "max_new_tokens": 8})
            chain_id = client.post("/jobs", json=zoomed).json()["id"]
            assert engine.entered.wait(10)  # turn 1 answered, turn 2 waits
            caption_ids = [client.post("/jobs", json=job(small_raster)).json()["id"] for _ in range(3)]
            running = client.get(f"/jobs/{chain_id}").json()
            assert running["state"] == "running" and running["progress"]["done"] == 1
            engine.release.set()
            status = wait_for(client, chain_id)
            assert status["state"] == "done", status["error"]
            result = status["result"]
            assert result["text"] == "two ships"
            assert result["zoom"]["outcome"] == "answered after zooming" and len(result["zoom"]["turns"]) == 2
            roles = sorted(f["properties"]["role"] for f in result["features"])
            assert roles == ["answer", "zoom"]
            assert all(wait_for(client, i)["state"] == "done" for i in caption_ids)
    finally:
        server.stop()


def test_cancelling_a_chained_job_stops_it_between_turns(small_raster):
    engine = BatchRecorder(_zoom_answer, hold_after=1)
    server = start_server(engine)
    try:
        with client_for(server) as client:
            zoomed = job(small_raster, "ask", question="What is in the harbour?", options={"zoom": "on", "max_new_tokens": 8})
            chain_id = client.post("/jobs", json=zoomed).json()["id"]
            assert engine.entered.wait(10)
            assert client.delete(f"/jobs/{chain_id}").json()["state"] == "cancelled"
            engine.release.set()
            assert wait_for(client, client.post("/jobs", json=job(small_raster)).json()["id"])["state"] == "done"
            status = client.get(f"/jobs/{chain_id}").json()
            assert status["state"] == "cancelled" and status["result"] is None
    finally:
        server.stop()


def test_a_small_job_is_not_stuck_behind_a_large_one(small_raster, large_raster):
    engine = BatchRecorder(lambda conv: "There are none.", hold_after=1)
    server = start_server(engine)
    try:
        with client_for(server) as client:
            tiles = {"tile_size": 64, "tile_overlap": 0, "max_new_tokens": 8}
            large = client.post("/jobs", json=job(large_raster, "detect", options=tiles)).json()
            assert engine.entered.wait(10)  # the large job's second batch is in flight
            small = client.post("/jobs", json=job(small_raster, "detect", options={**tiles, "tile_size": 200})).json()
            engine.release.set()
            small_done = wait_for(client, small["id"])
            assert small_done["state"] == "done" and small_done["progress"]["total"] < 10
            large_done = wait_for(client, large["id"])
            assert large_done["state"] == "done" and large_done["progress"]["total"] > 1000
            assert small_done["finished"] < large_done["finished"]  # in after the large job, out long before it
    finally:
        server.stop()
