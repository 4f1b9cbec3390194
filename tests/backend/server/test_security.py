"""Token, Host header, CORS, body limits and the server file, against a real server."""

import json
import os
import stat

import httpx
import pytest

from backend.server.security import allowed_host_names, host_name, remove_server_file, write_server_file
from tests.backend.server.conftest import job


def test_no_token_or_a_wrong_one_is_401(served, small_raster):
    with httpx.Client(base_url=served.url) as anonymous:
        for path in ("/health", "/model", "/jobs", "/v1/models"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert "no bearer token" in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"
        response = anonymous.post("/jobs", json=job(small_raster), headers={"Authorization": "Bearer not-the-token"})
        assert response.status_code == 401 and "a wrong bearer token" in response.json()["detail"]
        response = anonymous.get("/health", headers={"Authorization": served.token})  # no "Bearer " scheme
        assert response.status_code == 401
    assert served.scheduler.counts()["queued"] == 0


def test_foreign_host_is_refused_before_the_token_is_looked_at(served, client):
    for host in ("evil.example", f"evil.example:{served.port}", "127.0.0.1.evil.example", "192.168.1.20"):
        response = client.get("/health", headers={"Host": host})
        assert response.status_code == 403, host
        assert "DNS-rebinding" in response.json()["detail"]
    for host in (f"127.0.0.1:{served.port}", f"localhost:{served.port}", "localhost:9999"):  # an SSH tunnel's local port
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_no_cors_headers_ever(client):
    origin = {"Origin": "http://evil.example"}
    preflight = client.options("/jobs", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code in (401, 405)
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers)
    answer = client.get("/health", headers=origin)
    assert answer.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in answer.headers)


def test_bodies_over_the_limit_are_413_with_or_without_content_length(client, small_raster):
    padded = job(small_raster, question="x" * (2 * 2**20), task="ask")
    response = client.post("/jobs", json=padded)
    assert response.status_code == 413 and "limit of 1048576 bytes" in response.json()["detail"]

    def chunks():
        body = json.dumps(padded).encode()
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = client.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert client.get("/health").status_code == 200


def test_host_names():
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert allowed_host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_host_names("10.0.0.5", ("gpu-box",)) == {"10.0.0.5", "gpu-box"}
    assert "localhost" in allowed_host_names("0.0.0.0")


def test_server_file_is_private_and_removed_only_by_its_server(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = write_server_file("http://127.0.0.1:1234", "secret", "tiny")
    assert path == tmp_path / "config" / "rscovlm" / "server.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert json.loads(path.read_text())["token"] == "secret"
    remove_server_file(path, "another server's token")
    assert path.exists()
    remove_server_file(path, "secret")
    assert not path.exists()


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_no_interactive_docs(client, path):
    assert client.get(path).status_code == 404
