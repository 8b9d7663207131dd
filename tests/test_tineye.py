"""The TinEye-compatible API (/rest/), driven by TinEye's own client, pytineye 3.0.0.

A real uvicorn on 127.0.0.1 against the embedded PostgreSQL, real images from tests/data/pool,
and ``TinEyeAPIRequest(api_url=..., api_key=...)`` unchanged: what a team's code built on the
client would do against TinEye's hosted API, it does here.
"""

from __future__ import annotations

import datetime
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from pytineye import TinEyeAPIError, TinEyeAPIRequest
from webserver import READ_KEY, WRITE_KEY, FileServer, LiveServer

from engine.web import tineye

POOL = Path(__file__).parent / "data" / "pool"
STORED = {"bridge": "photos/palapeli__cincinnati-bridge.jpg", "cat": "photos/skimage__chelsea.jpg",
          "coffee": "photos/skimage__coffee.jpg", "hopper": "faces/matplotlib__grace_hopper.jpg"}
URIS = {"bridge": ["https://example.org/bridge.jpg", "http://news.example.com/2024/bridge-photo.jpg"],
        "cat": ["https://cats.example.net/chelsea.jpg"], "coffee": ["/srv/photos/coffee.jpg"],
        "hopper": ["https://example.org/hopper.jpg"]}
CROP = (0.1, 0.2, 0.8, 0.9)


def crop_of(rel: str, box=CROP) -> bytes:
    im = Image.open(POOL / rel).convert("RGB")
    w, h = im.size
    out = io.BytesIO()
    im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def live(database_url):
    server = LiveServer(api_keys=(WRITE_KEY,), allow_private_urls=True, max_upload_bytes=2_000_000,
                        request_timeout_s=30.0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stored(live):
    ids = {}
    with live.client(WRITE_KEY) as writer:
        for name, rel in STORED.items():
            for uri in URIS[name]:  # the same bytes again: one image, one more URI (backlink)
                with open(POOL / rel, "rb") as f:
                    r = writer.post("/api/images", files={"file": (Path(rel).name, f, "image/jpeg")},
                                    data={"uri": uri, "metadata": json.dumps({"name": name})})
                assert r.status_code in (200, 201), r.text
                ids[name] = r.json()["id"]
    return ids


@pytest.fixture(scope="module")
def api(live):
    return TinEyeAPIRequest(api_url=f"{live.url}/rest/", api_key="")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    (folder / "crop.jpg").write_bytes(crop_of(STORED["bridge"]))
    (folder / "page.html").write_text("<html><body>not an image</body></html>")
    server = FileServer(folder)
    yield server
    server.stop()


def fetch(live, url: str):
    with live.client() as client:
        return client.get(url)


def check_bridge_match(match, live, stored):
    assert match.image_url == f"{live.url}/api/images/{stored['bridge']}/thumbnail"
    assert 50 <= match.score <= 100
    assert match.domain == "example.org"  # the host of the first URI it was ingested from
    assert (match.width, match.height) == Image.open(POOL / STORED["bridge"]).size
    assert match.size == match.width * match.height
    assert match.format == "JPEG" and match.filesize == (POOL / STORED["bridge"]).stat().st_size
    assert match.tags == []
    assert {b.url for b in match.backlinks} == set(URIS["bridge"])
    assert all(b.backlink == b.url for b in match.backlinks)
    today = datetime.datetime.now(datetime.UTC).date()
    assert all(abs((b.crawl_date.date() - today).days) <= 1 for b in match.backlinks)
    assert match.overlay.startswith(f"{live.url}/rest/overlay/")


def test_search_data_finds_a_crop_first(api, live, stored):
    response = api.search_data(crop_of(STORED["bridge"]))
    assert response.matches, response
    check_bridge_match(response.matches[0], live, stored)
    assert response.stats["total_results"] == len(response.matches)
    assert response.stats["total_backlinks"] >= 2


def test_search_url_finds_it_first(api, live, stored, files):
    response = api.search_url(files.url("crop.jpg"))
    check_bridge_match(response.matches[0], live, stored)


def test_the_overlay_is_an_image_of_both(api, live, stored):
    match = api.search_data(crop_of(STORED["bridge"])).matches[0]
    r = fetch(live, match.overlay)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(r.content))
    im.load()
    assert im.height == tineye.OVERLAY_SIDE and im.width > im.height  # two pictures side by side
    # the outline is drawn (pure red pixels exist)
    assert (255, 32, 32) in {px for _, px in im.convert("RGB").getcolors(1 << 20)}
    # an unknown token, or a match that was not in that search: TinEye-shaped 404s
    token = match.overlay.split("/rest/overlay/")[1].split("/")[0]
    for url in (f"{live.url}/rest/overlay/not-a-token/{stored['bridge']}",
                f"{live.url}/rest/overlay/{token}/999999"):
        missing = fetch(live, url)
        assert missing.status_code == 404 and missing.json()["code"] == 404 and missing.json()["messages"]


def test_a_file_path_has_no_domain(api, stored):
    data = (POOL / STORED["coffee"]).read_bytes()
    best = api.search_data(data).matches[0]
    assert best.score == 100 and best.domain == "" and [b.url for b in best.backlinks] == URIS["coffee"]


def test_offset_limit_sort_and_order(api, stored):
    data = (POOL / STORED["cat"]).read_bytes()
    everything = api.search_data(data, limit=50).matches
    assert everything[0].score == 100 and [m.score for m in everything] == sorted(
        (m.score for m in everything), reverse=True)
    if len(everything) > 1:
        second = api.search_data(data, offset=1, limit=1).matches
        assert [m.image_url for m in second] == [everything[1].image_url]
    by_size = api.search_data(data, limit=50, sort="size", order="asc").matches
    assert [m.size for m in by_size] == sorted(m.size for m in everything)
    by_date = api.search_data(data, limit=50, sort="crawl_date", order="desc").matches
    assert {m.image_url for m in by_date} == {m.image_url for m in everything}
    assert api.search_data(data, offset=200, limit=10).matches == []
    for bad in ({"sort": "colour"}, {"order": "up"}, {"limit": 0}, {"offset": -1}):
        with pytest.raises(TinEyeAPIError) as caught:
            api.search_data(data, **bad)
        assert caught.value.code == 400 and caught.value.message, bad


def test_broken_images_raise_the_clients_error(api, stored, files):
    full = (POOL / STORED["bridge"]).read_bytes()
    for data, code in ((b"not an image at all", 422), (full[: len(full) // 2], 422), (b"%PDF-1.4 no", 415)):
        with pytest.raises(TinEyeAPIError) as caught:
            api.search_data(data)
        assert caught.value.code == code and "image.jpg" in caught.value.message[0], caught.value.message
    with pytest.raises(TinEyeAPIError) as caught:
        api.search_url(files.url("page.html"))
    assert caught.value.code == 422
    with pytest.raises(TinEyeAPIError) as caught:
        api.search_url("file:///etc/passwd")
    assert caught.value.code == 400


def test_too_large_and_unknown_paths_are_tineye_errors(api, live):
    with pytest.raises(TinEyeAPIError) as caught:  # refused by the Guard, before the handler
        api.search_data(b"\xff\xd8\xff" + os.urandom(2_100_000))
    assert caught.value.code == 413 and "IMGSEARCH_MAX_UPLOAD_BYTES" in caught.value.message[0]
    with pytest.raises(TinEyeAPIError) as caught:
        api._request("no_such_method")
    assert caught.value.code == 404
    r = fetch(live, "/rest/search/")  # no image
    assert r.status_code == 400 and r.json()["code"] == 400 and "image_upload" in r.json()["messages"][0]
    assert fetch(live, "/api/nothing").json()["error"]["code"] == "not_found"  # our API keeps its own shape


def test_image_count_and_remaining_searches(api, live, stored):
    with live.client() as client:
        count = client.get("/api/stats").json()["counts"]["images"]
    assert api.image_count() == count >= len(STORED)
    remaining = api.remaining_searches()
    assert remaining["total_remaining_searches"] == tineye.UNLIMITED
    (bundle,) = remaining["bundles"]
    assert bundle["remaining_searches"] == tineye.UNLIMITED and bundle["expire_date"] > bundle["start_date"]


def test_not_in_openapi(live):
    paths = fetch(live, "/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/rest")]


def test_read_keys_and_a_configured_quota(database_url, stored):
    server = LiveServer(api_keys=(WRITE_KEY,), read_keys=(READ_KEY,), tineye_remaining=5000)
    try:
        url = f"{server.url}/rest/"
        data = crop_of(STORED["bridge"])
        for key, code in (("", 401), ("wrong-key-wrong-key", 403)):
            with pytest.raises(TinEyeAPIError) as caught:
                TinEyeAPIRequest(api_url=url, api_key=key).search_data(data)
            assert caught.value.code == code and "key" in caught.value.message[0]
            with pytest.raises(TinEyeAPIError):
                TinEyeAPIRequest(api_url=url, api_key=key).image_count()
        anonymous = fetch(server, "/rest/image_count/")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        for key in (READ_KEY, WRITE_KEY):
            client = TinEyeAPIRequest(api_url=url, api_key=key)
            assert client.search_data(data).matches[0].image_url.endswith(f"/api/images/{stored['bridge']}/thumbnail")
            assert client.remaining_searches()["total_remaining_searches"] == 5000
        with pytest.raises(TinEyeAPIError) as caught:  # a broken image, with a good key
            TinEyeAPIRequest(api_url=url, api_key=READ_KEY).search_data(b"broken")
        assert caught.value.code == 422
    finally:
        server.stop()


def test_overlay_cache_is_bounded_and_expires():
    cache = tineye.OverlayCache(entries=2, ttl_s=3600)
    tokens = [cache.put(tineye._Overlay(b"q", {})) for _ in range(3)]
    assert cache.get(tokens[0]) is None and cache.get(tokens[1]) and cache.get(tokens[2])
    cache.ttl_s = 0.0
    assert cache.get(tokens[2]) is None


def test_domain_of():
    assert tineye.domain_of("https://Example.ORG:8443/a/b.jpg?x=1") == "example.org"
    assert tineye.domain_of("http://[::1]/x.png") == "::1"
    for no_host in ("/srv/photos/a.jpg", "file:///srv/a.jpg", "relative/a.jpg", "", None, "http://[bad/x"):
        assert tineye.domain_of(no_host) == ""
