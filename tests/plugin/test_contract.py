"""The plugin speaks the backend's HTTP contract as resources/openapi.json (exported from
backend/contract.py) states it: every request body it builds validates against the schema, and
the answer fields it reads are there."""

from __future__ import annotations

import json

import jsonschema
import pytest

from qgis_plugin.task_request import TASKS, build_request

from .conftest import REPO

OPENAPI = json.loads((REPO / "resources" / "openapi.json").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]


def validate(body: dict, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": OPENAPI["components"]}
    jsonschema.validate(body, schema)


@pytest.mark.parametrize("task", list(TASKS))
def test_request_bodies_fit_the_schema(task):
    body = build_request(
        task, "/data/scene.tif", (500000.0, 4400000.0, 500512.0, 4400512.0), "EPSG:32633",
        ["plane", "small vehicle"], "the white ship", tile_size=504, gsd=0.3, zoom="on", box_form="polygon",
        choices=["Yellow", "Red"], regions=[(12.4, 41.8, 12.41, 41.81)], regions_crs="EPSG:4326",
        raster_after="/data/later.tif", change_kinds=["appeared", "disappeared"],
    )  # fmt: skip
    validate(body, "TaskRequest")
    assert ("zoom" in body.get("options", {})) == (task == "ask")  # the chain was trained on questions only
    assert ("box_form" in body.get("options", {})) == (task == "ground")
    assert ("raster_after" in body) == (task in ("change", "change_caption")) and ("change_kinds" in body.get("options", {})) == (task == "change")


def test_the_schema_refuses_what_the_plugin_never_sends():
    with pytest.raises(jsonschema.ValidationError):
        validate({"task": "detect", "raster": "x.tif", "colour": "red"}, "TaskRequest")


def test_the_answer_fields_the_plugin_reads_exist():
    properties = {name: set(SCHEMAS[name]["properties"]) for name in ("JobCreated", "JobStatus", "TaskResult", "Health", "ModelInfo", "RasterUpload", "JobProgress")}
    assert {"id"} <= properties["JobCreated"]
    assert {"state", "progress", "features", "result", "crs", "error", "submitted"} <= properties["JobStatus"]
    assert {"task", "crs", "features", "text", "warnings", "raster"} <= properties["TaskResult"]
    assert {"done", "total"} <= properties["JobProgress"]
    assert {"model", "device", "dtype", "quantize", "memory", "defaults"} <= properties["ModelInfo"]
    assert {"options", "classes"} <= set(SCHEMAS["ModelDefaultsInfo"]["properties"])
    assert {"status"} <= properties["Health"] and {"id", "raster"} <= properties["RasterUpload"]
    routes = {(path, method) for path, item in OPENAPI["paths"].items() for method in item}
    assert {("/health", "get"), ("/model", "get"), ("/jobs", "post"), ("/jobs", "get"), ("/jobs/{job_id}", "get"),
            ("/jobs/{job_id}", "delete"), ("/rasters", "post"), ("/rasters/{upload_id}", "delete")} <= routes
