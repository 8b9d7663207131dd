"""The HTTP API over real HTTP: uvicorn on 127.0.0.1, the real database, real images.

Every request goes through a socket to a server started here; URL fetches reach only a loopback
file server started here (IMGSEARCH_ALLOW_PRIVATE_URLS on for that server). The refusal of other
addresses is tested on the policy function in test_urlpolicy.py, without sending anything.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from webserver import READ_KEY, WRITE_KEY, FileServer, LiveServer, free_port, validate

from engine.web import guard
from engine.web.app import ROUTES

POOL = Path(__file__).parent / "data" / "pool"
STORED = {"bridge": "photos/palapeli__cincinnati-bridge.jpg", "cat": "photos/skimage__chelsea.jpg",
          "macaw": "photos/gcompris__scarlet_macaw.jpg", "coffee": "photos/skimage__coffee.jpg",
          "hopper": "faces/matplotlib__grace_hopper.jpg"}
CROP = (0.1, 0.2, 0.8, 0.9)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def crop_of(rel: str, box=CROP) -> bytes:
    im = Image.open(POOL / rel).convert("RGB")
    w, h = im.size
    return jpeg(im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))))


@pytest.fixture(scope="module")
def live(database_url):
    server = LiveServer(api_keys=(WRITE_KEY,), allow_private_urls=True, max_upload_bytes=2_000_000,
                        request_timeout_s=20.0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def writer(live):
    with live.client(WRITE_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def reader(live):
    with live.client() as client:
        yield client


@pytest.fixture(scope="module")
def doc(reader):
    return reader.get("/openapi.json").json()


@pytest.fixture(scope="module")
def stored(writer):
    ids = {}
    for name, rel in STORED.items():
        with open(POOL / rel, "rb") as f:
            r = writer.post("/api/images", files={"file": (Path(rel).name, f, "image/jpeg")},
                            data={"uri": f"https://example.org/{name}.jpg", "metadata": json.dumps({"set": name[0]})})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    (folder / "crop.jpg").write_bytes(crop_of(STORED["bridge"]))
    (folder / "cat.jpg").write_bytes((POOL / STORED["cat"]).read_bytes())
    (folder / "page.html").write_text("<html><body>not an image</body></html>")
    server = FileServer(folder)
    yield server
    server.stop()


def response_schema(doc: dict, path: str, method: str, status: int) -> dict:
    content = doc["paths"][path][method]["responses"][str(status)]["content"]
    return next(iter(content.values()))["schema"]


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# --- the OpenAPI document matches the route table and the behaviour ---------------------------------------
def test_openapi_paths_are_the_route_table(doc, reader):
    table = {(re.sub(r"{(\w+):\w+}", r"{\1}", r.path), m.lower()) for r in ROUTES
             if getattr(getattr(r, "endpoint", None), "operation", None) for m in r.methods - {"HEAD"}}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == table
    assert ("/api/search", "get") in documented and ("/api/images/{id}", "delete") in documented
    assert doc["openapi"].startswith("3.1")
    for path, method in documented:  # every documented operation answers, with a documented status
        r = reader.request(method.upper(), path.replace("{id}", "999999"))
        assert r.status_code != 405, (path, method)
        if r.status_code == 404:
            assert not r.json()["error"]["message"].startswith("nothing at"), (path, method)  # the route exists
        if r.status_code >= 400:
            assert str(r.status_code) in doc["paths"][path][method]["responses"], (path, method, r.status_code)


# --- storing and reading images ---------------------------------------------------------------------
def test_store_read_and_list_images(stored, reader, writer, doc):
    r = reader.get(f"/api/images/{stored['cat']}")
    assert r.status_code == 200
    image = r.json()
    validate(image, response_schema(doc, "/api/images/{id}", "get", 200), doc)
    assert image["metadata"] == {"set": "c"} and image["uris"][0]["uri"] == "https://example.org/cat.jpg"
    assert image["keypoints"] > 100 and len(image["hashes"]["pdq"]) == 64
    # the same bytes again: 200, the new URI recorded, no new image
    again = writer.post("/api/images", content=(POOL / STORED["cat"]).read_bytes(),
                        headers={"content-type": "image/jpeg"}, params={"uri": "https://mirror.example/c.jpg"})
    assert again.status_code == 200 and again.json()["id"] == stored["cat"] and not again.json()["created"]
    validate(again.json(), response_schema(doc, "/api/images", "post", 200), doc)
    uris = [u["uri"] for u in reader.get(f"/api/images/{stored['cat']}").json()["uris"]]
    assert uris == ["https://example.org/cat.jpg", "https://mirror.example/c.jpg"]
    assert_error(reader.get("/api/images/999999"), 404, "not_found")
    assert_error(reader.get("/api/images/99999999999999999999999"), 404, "not_found")
    assert_error(reader.get("/api/images/abc"), 404, "not_found")


def test_pagination_and_metadata_filter(stored, reader, doc):
    seen, url, pages = [], "/api/images?limit=2", 0
    while url:
        r = reader.get(url)
        assert r.status_code == 200
        validate(r.json(), response_schema(doc, "/api/images", "get", 200), doc)
        seen += [img["id"] for img in r.json()["images"]]
        url, pages = r.json()["next"], pages + 1
    assert seen == sorted(seen) and set(stored.values()) <= set(seen) and pages >= 3
    only_c = reader.get("/api/images", params={"meta.set": "c"}).json()["images"]
    assert sorted(i["id"] for i in only_c) == sorted([stored["cat"], stored["coffee"]])
    by_json = reader.get("/api/images", params={"metadata": json.dumps({"set": "h"})}).json()["images"]
    assert [i["id"] for i in by_json] == [stored["hopper"]]
    page = reader.get("/api/images", params={"meta.set": "c", "limit": 1}).json()
    assert len(page["images"]) == 1 and "meta.set=c" in page["next"]
    assert reader.get(page["next"]).json()["images"][0]["id"] == max(i["id"] for i in only_c)
    for bad in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"after": "-1"}, {"metadata": "[1]"},
                {"metadata": "{oops"}):
        assert_error(reader.get("/api/images", params=bad), 400, "bad_input")


def test_thumbnail(stored, reader):
    r = reader.get(f"/api/images/{stored['macaw']}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256
    again = reader.get(f"/api/images/{stored['macaw']}/thumbnail", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert_error(reader.get("/api/images/999999/thumbnail"), 404)


# --- lineage -----------------------------------------------------------------------------------------
def test_lineage_of_a_crop_and_of_its_source(writer, reader, doc):
    from engine import db
    from engine.provenance import lineage

    taj = "photos/gcompris__tajMahal.jpg"
    ids, edges = {}, {}
    for name, data in (("taj", (POOL / taj).read_bytes()), ("taj_crop", crop_of(taj, (0.2, 0.1, 0.8, 0.9)))):
        r = writer.post("/api/images", content=data, params={"uri": f"https://example.org/{name}.jpg"})
        assert r.status_code == 201, r.text
        ids[name], edges[name] = r.json()["id"], r.json()["edges"]
    assert edges["taj_crop"] >= 1  # a new image is linked as it is stored

    r = reader.get(f"/api/images/{ids['taj_crop']}/lineage")
    assert r.status_code == 200, r.text
    tree = r.json()
    validate(tree, response_schema(doc, "/api/images/{id}/lineage", "get", 200), doc)
    assert tree["image"] == {"id": ids["taj_crop"], "uri": "https://example.org/taj_crop.jpg"}
    parent = tree["ancestors"][0]
    assert [a["id"] for a in tree["ancestors"]] == [ids["taj"]]
    assert parent["relation"] == "crop" and parent["uri"] == "https://example.org/taj.jpg" and parent["score"] > 0
    assert parent["target_box"] == pytest.approx((0.2, 0.1, 0.8, 0.9), abs=0.04)  # where the crop was cut
    assert parent["query_box"] == pytest.approx((0, 0, 1, 1), abs=0.04)
    assert set(parent) == {"id", "uri", "relation", "score", "query_box", "target_box", "transform", "ancestors"}
    assert tree["descendants"] == []

    down = reader.get(f"/api/images/{ids['taj']}/lineage", params={"depth": 1}).json()
    validate(down, response_schema(doc, "/api/images/{id}/lineage", "get", 200), doc)
    child = next(d for d in down["descendants"] if d["id"] == ids["taj_crop"])
    assert child["relation"] == "crop" and child["descendants"] == [] and down["ancestors"] == []
    with db.connect() as conn:  # exactly what engine.provenance.lineage returns
        assert down == lineage(conn, ids["taj"], 1)
        assert tree == lineage(conn, ids["taj_crop"])
    assert reader.get(f"/api/images/{ids['taj']}/lineage?depth=0").json() == {
        "image": down["image"], "ancestors": [], "descendants": []}

    assert_error(reader.get("/api/images/999999/lineage"), 404, "not_found")
    assert_error(reader.get("/api/images/99999999999999999999999/lineage"), 404, "not_found")
    for bad in ("-1", "21", "x", "1.5"):
        assert_error(reader.get(f"/api/images/{ids['taj']}/lineage", params={"depth": bad}), 400, "bad_input")


# --- search ------------------------------------------------------------------------------------------
def test_search_by_upload_finds_the_crop_and_where_it_lies(stored, reader, doc):
    r = reader.post("/api/search", files={"file": ("crop.jpg", crop_of(STORED["bridge"]), "image/jpeg")},
                    params={"limit": 3})
    assert r.status_code == 200, r.text
    result = r.json()
    validate(result, response_schema(doc, "/api/search", "post", 200), doc)
    best = result["matches"][0]
    assert best["id"] == stored["bridge"] and best["relation"] == "crop"
    assert best["target_box"] == pytest.approx(CROP, abs=0.04)
    assert best["uri"] == "https://example.org/bridge.jpg" and result["query"] == "crop.jpg"
    thumb = reader.get(best["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert len(result["matches"]) <= 3


def test_search_by_raw_body_json_url_and_get_url(stored, reader, files):
    raw = reader.post("/api/search", content=crop_of(STORED["bridge"]), headers={"content-type": "image/jpeg"})
    assert raw.json()["matches"][0]["id"] == stored["bridge"]
    # the Content-Type is not trusted: bytes are decoded whatever it says
    lying = reader.post("/api/search", content=(POOL / STORED["cat"]).read_bytes(),
                        headers={"content-type": "text/plain"})
    assert lying.json()["matches"][0]["id"] == stored["cat"]
    by_json = reader.post("/api/search", json={"url": files.url("crop.jpg"), "limit": 1, "min_score": 1})
    assert by_json.status_code == 200, by_json.text
    assert [m["id"] for m in by_json.json()["matches"]] == [stored["bridge"]]
    by_get = reader.get("/api/search", params={"url": files.url("cat.jpg")})
    assert by_get.json()["matches"][0]["relation"] == "duplicate" and by_get.json()["query"] == files.url("cat.jpg")
    form_url = reader.post("/api/search", data={"url": files.url("cat.jpg")})
    assert form_url.json()["matches"][0]["id"] == stored["cat"]
    assert reader.get("/api/search", params={"url": files.url("cat.jpg"), "min_score": 101}).status_code == 400


def test_search_by_url_errors(reader, files):
    assert_error(reader.get("/api/search", params={"url": "file:///etc/passwd"}), 400, "url_refused")
    assert_error(reader.get("/api/search", params={"url": "http://user:pw@127.0.0.1/x.jpg"}), 400, "url_refused")
    assert_error(reader.get("/api/search", params={"url": files.url("missing.jpg")}), 422, "fetch_error")
    assert_error(reader.get("/api/search", params={"url": files.url("page.html")}), 422, "decode_error")
    assert_error(reader.get("/api/search"), 400, "bad_input")


def test_stored_image_matches_and_random(stored, reader, doc):
    r = reader.get(f"/api/images/{stored['cat']}/matches")
    assert r.status_code == 200
    validate(r.json(), response_schema(doc, "/api/images/{id}/matches", "get", 200), doc)
    assert all(m["id"] != stored["cat"] for m in r.json()["matches"])  # never itself
    picked = reader.get("/api/images/random").json()
    validate(picked, response_schema(doc, "/api/images/random", "get", 200), doc)
    assert picked["id"] in stored.values() or reader.get(f"/api/images/{picked['id']}").status_code == 200


# --- bad input is a 4xx JSON error, never a 500 ------------------------------------------------------------
def test_bad_uploads(stored, reader):
    full = (POOL / STORED["bridge"]).read_bytes()
    cases = [
        (b"this is plain text, not an image", 422, "decode_error"),
        (full[: len(full) // 2], 422, "decode_error"),  # a truncated JPEG
        (b"%PDF-1.4 not really", 415, "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, 422, "decode_error"),
    ]
    for data, status, code in cases:
        assert_error(reader.post("/api/search", files={"file": ("x.jpg", data, "image/jpeg")}), status, code)
        assert_error(reader.post("/api/search", content=data, headers={"content-type": "image/jpeg"}), status, code)
    assert_error(reader.post("/api/search", files={"file": ("empty.jpg", b"", "image/jpeg")}), 422, "empty_input")
    assert_error(reader.post("/api/search", content=b"", headers={"content-type": "image/jpeg"}), 400, "bad_input")
    assert_error(reader.post("/api/search", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "bad_input")
    assert_error(reader.post("/api/search", json=["a", "list"]), 400, "bad_input")
    assert_error(reader.post("/api/search", json={"url": 5}), 400, "bad_input")
    assert_error(reader.post("/api/search", content=b"--x\r\ngarbage", headers={
        "content-type": "multipart/form-data; boundary=x"}), 400)
    for params in ({"limit": "abc"}, {"limit": "0"}, {"limit": "1000"}, {"min_score": "-1"}, {"limit": "1.5"}):
        assert_error(reader.post("/api/search", params=params, content=full, headers={"content-type": "image/jpeg"}),
                     400, "bad_input")
    assert_error(reader.post("/api/search", json={"url": "x", "limit": True}), 400, "bad_input")


def test_upload_size_limit(live, reader):
    big = b"\xff\xd8\xff" + os.urandom(2_100_000)
    assert_error(reader.post("/api/search", content=big, headers={"content-type": "image/jpeg"}), 413, "too_large")
    assert_error(reader.post("/api/search", files={"file": ("big.jpg", big, "image/jpeg")}), 413, "too_large")

    def chunks():  # no Content-Length: cut while streaming
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    assert_error(reader.post("/api/search", content=chunks(), headers={"content-type": "image/jpeg"}), 413,
                 "too_large")
    assert reader.get("/healthz").status_code == 200  # and the server is fine


def test_a_body_that_never_arrives_is_cut(database_url):
    server = LiveServer(request_timeout_s=1.0)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 100000\r\n\r\n\xff\xd8")
            sock.settimeout(5)
            started = time.monotonic()
            chunks = []  # the whole reply, until the server closes: headers and body may come apart
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            reply = b"".join(chunks).decode("latin-1")
        assert reply.startswith("HTTP/1.1 408") and '"request_timeout"' in reply, reply
        assert time.monotonic() - started < 3
    finally:
        server.stop()


# --- keys ------------------------------------------------------------------------------------------------
def test_writes_need_a_key(stored, live, reader):
    body = (POOL / "photos/skimage__camera.jpg").read_bytes()
    r = reader.post("/api/images", content=body, headers={"content-type": "image/jpeg"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_error(reader.post("/api/images", content=body, headers={"authorization": "Bearer wrong-key-0123456789"}),
                 403, "forbidden")
    assert_error(reader.post("/api/images", content=body, headers={"x-api-key": WRITE_KEY[:-1]}), 403, "forbidden")
    assert_error(reader.delete(f"/api/images/{stored['coffee']}"), 401)
    assert_error(reader.delete(f"/api/images/{stored['coffee']}", headers={"x-api-key": "nope"}), 403)
    ok = reader.post("/api/images", content=body, headers={"x-api-key": WRITE_KEY})
    assert ok.status_code == 201 and ok.headers["location"] == f"/api/images/{ok.json()['id']}"
    r = reader.delete(ok.headers["location"], headers={"authorization": f"Bearer {WRITE_KEY}"})
    assert r.status_code == 204 and r.content == b""
    assert_error(reader.get(ok.headers["location"]), 404)
    assert_error(reader.delete(ok.headers["location"], headers={"x-api-key": WRITE_KEY}), 404)


def test_read_keys_and_disabled_writes(database_url):
    server = LiveServer(api_keys=(), read_keys=(READ_KEY,))
    try:
        with server.client() as anonymous, server.client(READ_KEY) as reading:
            assert_error(anonymous.get("/api/stats"), 401, "unauthorized")
            assert_error(anonymous.get("/api/stats", headers={"x-api-key": "wrong"}), 403, "forbidden")
            assert_error(anonymous.get("/api/images"), 401)
            assert_error(anonymous.get("/metrics"), 401)
            assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/openapi.json").status_code == 200
            assert anonymous.get("/").status_code == 200  # the page itself; it asks for a key when the API does
            assert reading.get("/api/stats").status_code == 200
            # no IMGSEARCH_API_KEYS: writes are refused whatever key is sent
            assert_error(reading.post("/api/images", content=b"x"), 403, "forbidden")
            assert_error(anonymous.delete("/api/images/1"), 403, "forbidden")
    finally:
        server.stop()


def test_keys_are_compared_in_constant_time(monkeypatch):
    from engine.config import Settings

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    keys = guard.Keys(Settings(None, Path("/x"), 1, 1, api_keys=("k" * 16, "m" * 40, "n" * 20)))
    for presented in ("k" * 16, "n" * 20, "short", "z" * 100):
        calls.clear()
        try:
            keys.check(guard.WRITE, presented)
        except Exception:
            pass
        assert calls == [(32, 32)] * 3  # every key, always, as equal-length digests


# --- compare -------------------------------------------------------------------------------------------
def test_compare(reader, files, doc):
    original = (POOL / STORED["bridge"]).read_bytes()
    r = reader.post("/api/compare", files={"a": ("crop.jpg", crop_of(STORED["bridge"]), "image/jpeg"),
                                           "b": ("bridge.jpg", original, "image/jpeg")})
    assert r.status_code == 200, r.text
    got = r.json()
    validate(got, response_schema(doc, "/api/compare", "post", 200), doc)
    assert got["related"] and got["relation"] == "crop" and got["score"] > 0
    assert got["b_box"] == pytest.approx(CROP, abs=0.04) and got["a_box"] == pytest.approx((0, 0, 1, 1), abs=0.04)
    unrelated = reader.post("/api/compare", files={"a": ("cat.jpg", (POOL / STORED["cat"]).read_bytes()),
                                                   "b": ("bridge.jpg", original)}).json()
    validate(unrelated, response_schema(doc, "/api/compare", "post", 200), doc)
    assert unrelated["related"] is False and unrelated["relation"] is None and unrelated["score"] == 0
    by_url = reader.post("/api/compare", json={"a": files.url("cat.jpg"), "b": files.url("cat.jpg")}).json()
    assert by_url["relation"] == "duplicate" and by_url["score"] == 100
    assert_error(reader.post("/api/compare", files={"a": ("a.jpg", original)}), 400, "bad_input")
    # two star fields whose pHashes (turned) and picture regions are close, but not their PDQs
    stars = {k: (POOL / f"distractors/stellarium__{k}.jpg").read_bytes() for k in ("m5", "m63-vasey")}
    apart = reader.post("/api/compare", files={"a": ("m5.jpg", stars["m5"]), "b": ("m63.jpg", stars["m63-vasey"])})
    assert apart.json()["related"] is False, apart.text


# --- stats, health, metrics ------------------------------------------------------------------------------
def test_stats_and_health(stored, reader, doc):
    stats = reader.get("/api/stats").json()
    validate(stats, response_schema(doc, "/api/stats", "get", 200), doc)
    assert stats["counts"]["images"] >= len(stored) and stats["schema_version"] >= 5
    assert reader.get("/healthz").json() == {"status": "ok"}


SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|NaN)$')


def test_metrics_are_prometheus_text(stored, reader):
    reader.get("/api/stats")
    r = reader.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    typed = {}
    for line in lines:
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            typed[name] = kind
        elif not line.startswith("# HELP"):
            assert SAMPLE.match(line), line
    assert typed["imgsearch_http_requests_total"] == "counter"
    assert typed["imgsearch_http_request_duration_seconds"] == "histogram"
    assert 'imgsearch_http_requests_total{method="GET",route="/api/stats",status="200"}' in r.text
    assert 'route="/api/images/{id}/thumbnail"' in r.text or "thumbnail" not in r.text
    buckets = [float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith('imgsearch_http_request_duration_seconds_bucket{method="GET",route="/api/stats"')]
    count = next(float(line.rsplit(" ", 1)[1]) for line in lines
                 if line.startswith('imgsearch_http_request_duration_seconds_count{method="GET",route="/api/stats"'))
    assert buckets == sorted(buckets) and buckets[-1] == count >= 1
    assert "imgsearch_stage_duration_seconds_count" in r.text and 'imgsearch_db_pool{stat="pool_max"}' in r.text


def test_unknown_paths_and_methods_are_json(reader):
    assert_error(reader.get("/api/nothing"), 404, "not_found")
    assert_error(reader.put("/api/search"), 405, "method_not_allowed")


# --- the command ---------------------------------------------------------------------------------------
def test_serve_command(database_url):
    port = free_port()
    env = {**os.environ, "IMGSEARCH_API_KEYS": WRITE_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port), "--log-level",
                             "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        page = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
        assert page.status_code == 200 and "imgsearch" in page.text and "/static/app.js" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/static/app.js", trust_env=False).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
