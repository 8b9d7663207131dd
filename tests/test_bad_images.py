"""The bad-image corpus (tests/badimages.py) through every door: `imgsearch hash`, `imgsearch ingest`,
POST /api/search and POST /api/images on a real `imgsearch serve` process, and peak memory on the
bombs measured in subprocesses.

Each file gets a clear error (one of our codes, naming the file) or a correct result (decoded, the
right way up); never a crash, a hang or a 5xx, and the server answers /healthz after every file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from badimages import BOMBS, HTTP_STATUS, OK, write_corpus
from helpers_ingest import cli, last_json
from psycopg.rows import dict_row
from serveproc import ServeProcess
from webserver import WRITE_KEY

MEMORY_LIMIT_KIB = 1024 * 1024  # 1 GiB per worker process
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("badimages")
    return path, write_corpus(path)


def outcome_ok(name, case, code, size=None) -> None:
    assert code in case.codes, f"{name}: got {code}, expected one of {sorted(case.codes)}"
    if code == OK and case.size is not None:
        assert tuple(size) == case.size, f"{name}: decoded as {size}, expected {case.size}"


def test_imgsearch_hash(folder):
    path, cases = folder
    names = sorted(cases)
    r = cli("hash", "--json", *(str(path / n) for n in names), timeout=300)
    assert r.returncode == 1, r.stderr  # some files are bad: status 1, not a crash (2) or a signal
    assert "Traceback" not in r.stderr, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(line["file"]).name for line in lines] == names
    for name, line in zip(names, lines, strict=True):
        if "error" in line:
            assert name in line["error"]["message"]
            outcome_ok(name, cases[name], line["error"]["code"])
        else:
            outcome_ok(name, cases[name], OK, (line["width"], line["height"]))


def test_imgsearch_ingest(folder, pg_server, tmp_path):
    from helpers_ingest import fresh_database

    path, cases = folder
    url = fresh_database(pg_server, "bad_images_ingest")
    names = sorted(cases)
    r = cli("ingest", "--json", "--workers", "2", *(str(path / n) for n in names), env={"DATABASE_URL": url},
            timeout=600)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    summary = last_json(r)
    failed = {Path(e["path"]).name: e for e in summary["errors"]}
    with psycopg.connect(url, row_factory=dict_row) as conn:
        stored = {Path(row["uri"]).name: (row["width"], row["height"]) for row in conn.execute(
            "select u.uri, i.width, i.height from images i join image_uris u on u.image_id = i.id")}
        incomplete = conn.execute("select count(*) as n from images i where not exists "
                                  "(select 1 from regions r where r.image_id = i.id and r.region_no = 0)").fetchone()
    assert set(failed) | set(stored) == set(names) and not set(failed) & set(stored)
    for name in names:
        if name in failed:
            assert name in failed[name]["message"]
            outcome_ok(name, cases[name], failed[name]["code"])
        else:
            outcome_ok(name, cases[name], OK, stored[name])
    assert incomplete["n"] == 0
    assert summary["failed"] == len(failed) and summary["added"] + summary["duplicates"] == len(stored)


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = ServeProcess({"DATABASE_URL": database_url, "IMGSEARCH_API_KEYS": WRITE_KEY}, log).start()
    yield proc
    proc.stop()


def test_http_search_and_add_on_a_real_server(folder, server):
    path, cases = folder
    with server.client() as reader, server.client(WRITE_KEY) as writer:
        for name in sorted(cases):
            case = cases[name]
            started = time.monotonic()
            search = reader.post("/api/search", files={"file": (name, case.data, "application/octet-stream")})
            # the same bytes as a raw body (for the bad ones: a good one's search costs a fingerprint)
            raw = search if case.must_decode else reader.post("/api/search", content=case.data,
                                                              headers={"content-type": "image/jpeg"})
            add = writer.post("/api/images", files={"file": (name, case.data, "application/octet-stream")},
                              data={"uri": f"https://example.org/bad/{name}"})
            assert time.monotonic() - started < 60, f"{name}: too slow"
            for r in (search, raw, add):
                assert r.status_code < 500, (name, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/json"), name
            if search.status_code == 200:
                outcome_ok(name, case, OK, (search.json()["query_image"]["width"],
                                            search.json()["query_image"]["height"]))
                assert add.status_code in (200, 201), (name, add.text)
                outcome_ok(name, case, OK, (add.json()["width"], add.json()["height"]))
            else:
                error = search.json()["error"]
                outcome_ok(name, case, error["code"])
                assert search.status_code == HTTP_STATUS[error["code"]] and name in error["message"]
                assert add.status_code == search.status_code and add.json()["error"]["code"] == error["code"]
            if not case.data:  # an empty raw body is "send an image", not an empty image
                assert raw.status_code == 400
            else:
                assert raw.status_code == search.status_code, name
            assert reader.get("/healthz").status_code == 200, f"the server stopped answering after {name}"
        assert reader.get("/api/stats").status_code == 200
    assert server.proc.poll() is None
    peak = server.peak_rss_kib()
    print(f"\nserver peak RSS after {len(cases)} files x 3 requests: {peak / 1024:.0f} MiB")
    assert peak < MEMORY_LIMIT_KIB


MEASURE = """
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from badimages import corpus
from engine.errors import ImgsearchError
from engine.fingerprint import fingerprint, query_fingerprint
data = corpus()[sys.argv[1]].data
outcomes = []
for fn in (fingerprint, query_fingerprint):
    try:
        fn(data, name=sys.argv[1])
        outcomes.append("ok")
    except ImgsearchError as e:
        outcomes.append(e.code)
print(json.dumps({"outcomes": outcomes, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.parametrize("name", BOMBS)
def test_memory_stays_bounded_on_the_bombs(name):
    from badimages import corpus

    r = subprocess.run([sys.executable, "-c", MEASURE, name, str(TESTS)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for code in result["outcomes"]:
        assert code in corpus()[name].codes
    print(f"\n{name}: {result['outcomes']}, peak RSS {result['peak_kib'] / 1024:.0f} MiB")
    assert result["peak_kib"] < MEMORY_LIMIT_KIB
