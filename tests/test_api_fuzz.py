"""The OpenAPI document fuzzed with schemathesis against a live server: no 5xx, for valid and invalid
requests to every operation (a short run; scripts/fuzz_api.py runs the long one).

URLs schemathesis invents are never fetched from the network (tests/apifuzz.py: loopback_only).
"""

from __future__ import annotations

import io
import json

import pytest
from apifuzz import fuzz, loopback_only
from PIL import Image
from webserver import WRITE_KEY, LiveServer

pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def live(database_url):
    with loopback_only() as refused:
        server = LiveServer(api_keys=(WRITE_KEY,), request_timeout_s=20.0)
        with server.client(WRITE_KEY) as client:  # something to find, list and delete
            for k in range(3):
                out = io.BytesIO()
                Image.new("RGB", (64 + 8 * k, 48), (40 * k, 90, 200)).save(out, "PNG")
                assert client.post("/api/images", content=out.getvalue(),
                                   params={"metadata": json.dumps({"k": k})}).status_code == 201
        yield server, refused
        server.stop()


def test_no_5xx_anywhere_in_the_openapi_document(live):
    server, refused = live
    figures = fuzz(server.url, WRITE_KEY, examples=8)
    print(f"\nschemathesis: {figures['requests']} requests; statuses per operation: {figures['statuses']}")
    assert figures["server_errors"] == [], figures["server_errors"]
    assert len(figures["statuses"]) >= 12 and figures["requests"] > 150
    assert refused == [], f"connects attempted beyond loopback: {refused}"
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("request_args", [
    ("get", "/api/images", {"params": {"meta.k": "a\x00b"}}),
    ("get", "/api/images", {"params": {"meta.k\x00": "b"}}),
    ("get", "/api/images", {"params": {"metadata": json.dumps({"k": "a\x00"})}}),
    ("get", "/api/images", {"params": {"metadata": '{"k": "\\udb68"}'}}),
    ("post", "/api/images", {"params": {"metadata": json.dumps({"k": ["x", {"y": "\x00"}]})}}),
    ("post", "/api/images", {"params": {"metadata": '{"k\\udb68": 1}'}}),
    ("post", "/api/images", {"params": {"uri": "https://example.org/\x00"}}),
], ids=["meta-value-nul", "meta-key-nul", "metadata-nul", "metadata-surrogate", "stored-metadata-nul",
        "stored-metadata-surrogate", "uri-nul"])
def test_text_postgresql_cannot_hold_is_a_400(live, request_args):
    # regression (schemathesis): these were 500s (psycopg UntranslatableCharacter / DataError)
    server, _ = live
    method, path, kwargs = request_args
    image = io.BytesIO()
    Image.new("RGB", (70, 50), (9, 9, 9)).save(image, "PNG")
    with server.client(WRITE_KEY) as client:
        r = getattr(client, method)(path, **({"content": image.getvalue()} if method == "post" else {}), **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_input"
        assert "NUL" in r.json()["error"]["message"] or "surrogate" in r.json()["error"]["message"]
