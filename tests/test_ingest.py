"""`imgsearch ingest`: bad files in the mix, duplicates, kill -9 and resume, URL lists, CSV, stdin,
globs, dry runs and exit statuses. Real PostgreSQL, real images, the CLI as a subprocess."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import psycopg
import pytest
from helpers_ingest import PHOTOS, bad_images, cli, fresh_database, good_images, last_json, variants
from psycopg.rows import dict_row
from webserver import FileServer

from engine import db


@pytest.fixture
def db_url(pg_server, request, monkeypatch) -> str:
    """An empty database for this test alone, exported as DATABASE_URL."""
    url = fresh_database(pg_server, "ingest_" + request.node.name)
    monkeypatch.setenv("DATABASE_URL", url)
    with db.connect():  # migrated, so that the tests can look at the tables at once
        pass
    return url


def rows(url: str, statement: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(statement).fetchall()


def check_whole(url: str) -> None:
    """Every stored image is complete: its global region, keypoints and postings, and a URI."""
    broken = rows(url, """
        select i.id from images i
        where not exists (select 1 from regions r where r.image_id = i.id and r.region_no = 0)
           or not exists (select 1 from image_uris u where u.image_id = i.id)
           or (exists (select 1 from image_keypoints k where k.image_id = i.id)
               <> exists (select 1 from keypoint_words w where w.image_id = i.id))""")
    assert broken == []


def test_a_folder_of_good_and_awkward_and_bad_images(db_url, tmp_path):
    folder = tmp_path / "mixed"
    good = good_images(folder)
    shutil.copy(PHOTOS[3], folder / "plain.jpg")
    bad = bad_images(folder / "bad")
    errors_file = tmp_path / "errors.jsonl"
    r = cli("ingest", "--json", "--workers", "2", "--errors", str(errors_file), str(folder))
    assert r.returncode == 1, r.stderr
    summary = last_json(r)
    assert summary["total"] == len(good) + 1 + len(bad)
    assert summary["added"] == len(good) + 1 and summary["duplicates"] == 0 and summary["failed"] == len(bad)
    codes = {os.path.basename(e["path"]): e["code"] for e in summary["errors"]}
    assert codes == bad
    for e in summary["errors"]:
        assert e["path"] == str((folder / "bad" / os.path.basename(e["path"])).resolve())
        assert os.path.basename(e["path"]) in e["message"]
    lines = [json.loads(line) for line in errors_file.read_text().splitlines()]
    assert sorted(lines, key=lambda e: e["path"]) == sorted(summary["errors"], key=lambda e: e["path"])

    stored = {os.path.basename(r["uri"]): (r["width"], r["height"]) for r in rows(
        db_url, "select u.uri, i.width, i.height from images i join image_uris u on u.image_id = i.id")}
    assert set(stored) == set(good) | {"plain.jpg"}
    for name, size in good.items():
        assert stored[name] == size, name  # the EXIF-rotated one upright
    check_whole(db_url)


def test_the_same_bytes_under_two_paths_is_one_image_with_two_uris(db_url, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(PHOTOS[0], tmp_path / sub / f"copy_{sub}.jpg")
    r = cli("ingest", "--json", str(tmp_path))
    assert r.returncode == 0, r.stderr
    summary = last_json(r)
    assert (summary["added"], summary["duplicates"], summary["failed"]) == (1, 1, 0)
    uris = rows(db_url, "select image_id, uri from image_uris order by uri")
    assert len(uris) == 2 and uris[0]["image_id"] == uris[1]["image_id"]
    assert [u["uri"] for u in uris] == [str((tmp_path / s / f"copy_{s}.jpg").resolve()) for s in ("a", "b")]

    again = last_json(cli("ingest", "--json", str(tmp_path)))  # recorded URIs: skipped, not read
    assert (again["added"], again["duplicates"], again["skipped"]) == (0, 2, 2)
    rechecked = last_json(cli("ingest", "--json", "--recheck", str(tmp_path)))
    assert (rechecked["added"], rechecked["duplicates"], rechecked["skipped"]) == (0, 2, 0)
    assert rows(db_url, "select count(*) as n from image_uris")[0]["n"] == 2


def test_the_same_bytes_at_new_places_are_recognised_before_they_are_fingerprinted(db_url, tmp_path):
    files = variants(tmp_path / "first", 6)
    assert last_json(cli("ingest", "--json", str(tmp_path / "first")))["failed"] == 0
    shutil.copytree(tmp_path / "first", tmp_path / "moved")
    r = cli("ingest", "--json", str(tmp_path / "moved"))
    assert r.returncode == 0, r.stderr
    summary = last_json(r)
    distinct = len({hashlib.sha256(f.read_bytes()).digest() for f in files})
    assert (summary["added"], summary["duplicates"], summary["skipped"]) == (0, len(files), 0)
    assert summary["by_sha256"] == len(files)  # read, hashed, recognised: not fingerprinted
    assert rows(db_url, "select count(*) as n from images")[0]["n"] == distinct
    assert rows(db_url, "select count(*) as n from image_uris")[0]["n"] == 2 * len(files)


def wait_for_images(url: str, at_least: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        n = rows(url, "select count(*) as n from images")[0]["n"]
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before storing {at_least} images")


def live_group_members(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def kill_run(proc: subprocess.Popen) -> list[int]:
    """kill -9 the parent only (as `kill -9 PID` does); returns the processes of its group still
    alive a few seconds later (its workers should have died with it)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while (left := live_group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a safety net for the other tests
    except ProcessLookupError:
        pass
    return left


def test_kill_9_in_the_middle_then_a_rerun_stores_every_image_exactly_once(db_url, tmp_path):
    files = variants(tmp_path / "many", 64)
    shutil.copy(files[0], tmp_path / "many" / "same_bytes.jpg")  # a duplicate in the mix
    # batches of 4: on a fast machine two workers fingerprint a whole default batch (64) in well
    # under a second, and the run ended inside the first commit before it could be killed
    args = [sys.executable, "-m", "engine.cli", "ingest", "--json", "--workers", "2", "--batch-size", "4",
            str(tmp_path / "many")]
    stored_before = []
    for at_least in (4, 20):  # killed twice, at different points
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ), start_new_session=True)
        try:
            wait_for_images(db_url, at_least, proc)
        finally:
            orphans = kill_run(proc)
        assert proc.returncode == -signal.SIGKILL
        assert orphans == [], "worker processes outlived the killed run"
        stored_before.append(rows(db_url, "select count(*) as n from image_uris")[0]["n"])
        check_whole(db_url)
    assert stored_before[-1] < len(files) + 1, "the run finished before it was killed"

    r = cli("ingest", "--json", "--workers", "2", str(tmp_path / "many"))
    assert r.returncode == 0, r.stderr
    summary = last_json(r)
    assert summary["skipped"] == stored_before[-1] and summary["failed"] == 0
    shas = {hashlib.sha256(f.read_bytes()).digest() for f in files}
    assert rows(db_url, "select count(*) as n, count(distinct sha256) as d from images")[0] == {"n": len(shas),
                                                                                               "d": len(shas)}
    stored_shas = {bytes(r["sha256"]) for r in rows(db_url, "select sha256 from images")}
    assert stored_shas == shas
    uris = [r["uri"] for r in rows(db_url, "select uri from image_uris")]
    assert sorted(uris) == sorted(str(p.resolve()) for p in (tmp_path / "many").iterdir())
    check_whole(db_url)


def test_exit_statuses(db_url, tmp_path):
    shutil.copy(PHOTOS[4], tmp_path / "ok.jpg")
    assert cli("ingest", "--json", str(tmp_path / "ok.jpg")).returncode == 0
    (tmp_path / "bad.jpg").write_bytes(b"")
    assert cli("ingest", "--json", str(tmp_path)).returncode == 1
    missing = cli("ingest", "--json", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 1 and last_json(missing)["errors"][0]["code"] == "bad_input"
    # the run itself cannot proceed: 2
    nowhere = cli("ingest", "--json", str(tmp_path), env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/none"})
    assert nowhere.returncode == 2 and "cannot connect" in nowhere.stderr
    no_list = cli("ingest", "--urls", str(tmp_path / "missing.txt"))
    assert no_list.returncode == 2 and "missing.txt" in no_list.stderr
    (tmp_path / "export.csv").write_text("path,title\nok.jpg,x\n")
    no_uri_column = cli("ingest", "--csv", str(tmp_path / "export.csv"))
    assert no_uri_column.returncode == 2 and "uri" in no_uri_column.stderr
    assert cli("ingest").returncode == 2
    assert cli("ingest", "--batch-size", "0", str(tmp_path)).returncode == 2


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    for p in PHOTOS[:3]:
        shutil.copy(p, root / p.name)
    (root / "page.jpg").write_text("<!DOCTYPE html><html><body>not an image</body></html>")
    server = FileServer(root)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.stop()


def test_a_url_list_goes_through_the_safe_fetcher(db_url, tmp_path, web):
    listing = tmp_path / "urls.txt"
    urls = [f"{web}/{p.name}" for p in PHOTOS[:3]]
    listing.write_text("# photos\n" + "\n".join(urls) + f"\n\n{web}/missing.jpg\n{web}/page.jpg\nfile:///etc/passwd\n")
    refused = cli("ingest", "--json", "--urls", str(listing))  # loopback is private: refused by default
    assert refused.returncode == 1
    assert {e["code"] for e in last_json(refused)["errors"]} == {"url_refused"}

    r = cli("ingest", "--json", "--urls", str(listing), env={"IMGSEARCH_ALLOW_PRIVATE_URLS": "1"})
    assert r.returncode == 1, r.stderr
    summary = last_json(r)
    assert summary["added"] == 3 and summary["failed"] == 3
    codes = {e["path"]: e["code"] for e in summary["errors"]}
    assert codes == {f"{web}/missing.jpg": "fetch_error", f"{web}/page.jpg": "decode_error",
                     "file:///etc/passwd": "url_refused"}
    assert sorted(r["uri"] for r in rows(db_url, "select uri from image_uris")) == sorted(urls)


def test_a_csv_export_keeps_its_columns_as_metadata(db_url, tmp_path, web):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(PHOTOS[0], folder / "first.jpg")
    shutil.copy(PHOTOS[0], folder / "same.jpg")
    (folder / "export.csv").write_text(
        "uri,title,license\n"
        f"first.jpg,First,CC0\n"
        f"same.jpg,Second title,\n"
        f"{web}/{PHOTOS[1].name},Remote,CC-BY\n"
        ",no uri,\n")
    r = cli("ingest", "--json", "--csv", str(folder / "export.csv"), env={"IMGSEARCH_ALLOW_PRIVATE_URLS": "1"})
    assert r.returncode == 1, r.stderr
    summary = last_json(r)
    assert (summary["added"], summary["duplicates"], summary["failed"]) == (2, 1, 1)
    assert summary["errors"][0]["code"] == "bad_input" and "empty uri" in summary["errors"][0]["message"]
    meta = {tuple(sorted(r["uris"])): r["metadata"] for r in rows(db_url, """
        select i.metadata, array_agg(u.uri) as uris from images i join image_uris u on u.image_id = i.id
        group by i.id""")}
    local = tuple(sorted(str((folder / n).resolve()) for n in ("first.jpg", "same.jpg")))
    assert meta[local] == {"title": "First", "license": "CC0"}  # the first row's values win
    assert meta[(f"{web}/{PHOTOS[1].name}",)] == {"title": "Remote", "license": "CC-BY"}

    # the same bytes again, later, from another place: new keys join, the stored values stay
    shutil.copy(PHOTOS[0], folder / "third.jpg")
    (folder / "later.csv").write_text("uri,title,source\nthird.jpg,Third,archive\n")
    later = last_json(cli("ingest", "--json", "--csv", str(folder / "later.csv")))
    assert (later["added"], later["duplicates"]) == (0, 1)
    merged = rows(db_url, "select i.metadata from images i join image_uris u on u.image_id = i.id "
                          "where u.uri like '%third.jpg'")
    assert merged == [{"metadata": {"title": "First", "license": "CC0", "source": "archive"}}]


def test_stdin_globs_and_dry_run(db_url, tmp_path):
    folder = tmp_path / "tree"
    (folder / "keep").mkdir(parents=True)
    (folder / "skip").mkdir()
    shutil.copy(PHOTOS[0], folder / "keep" / "a.jpg")
    shutil.copy(PHOTOS[1], folder / "keep" / "b.jpeg")
    shutil.copy(PHOTOS[2], folder / "keep" / "c.png.bak")
    shutil.copy(PHOTOS[3], folder / "skip" / "d.jpg")
    dry = cli("ingest", "--json", "--dry-run", "--exclude", "skip", str(folder))
    assert dry.returncode == 0 and last_json(dry)["to_ingest"] == 2
    assert rows(db_url, "select count(*) as n from images")[0]["n"] == 0

    only = cli("ingest", "--json", "--include", "*.jpg", "--include", "*.bak", "--exclude", "skip/*", str(folder))
    assert only.returncode == 0 and last_json(only)["added"] == 2  # a.jpg and c.png.bak
    r = cli("ingest", "--json", "-", stdin=f"{folder / 'keep'}\n\n{folder / 'skip' / 'd.jpg'}\n")
    assert r.returncode == 0, r.stderr
    summary = last_json(r)
    assert (summary["total"], summary["added"], summary["skipped"]) == (3, 2, 1)  # a.jpg was recorded

    dry = last_json(cli("ingest", "--json", "--dry-run", str(folder), str(tmp_path / "gone.jpg")))
    assert (dry["total"], dry["to_ingest"], dry["skipped"]) == (4, 1, 3)
    assert dry["missing"] == [str((tmp_path / "gone.jpg").resolve())]
    text = cli("ingest", str(folder / "keep"))
    assert text.returncode == 0 and "skipped by URI" in text.stdout and text.stderr == ""  # no bar off a tty


def worker_pids(pid: int) -> list[int]:
    """The ingest's worker processes (spawned children running multiprocessing's spawn_main)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = open(f"/proc/{pid}/task/{task}/children").read().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                if b"spawn_main" in open(f"/proc/{child}/cmdline", "rb").read():
                    out.append(child)
            except OSError:
                continue
    return out


def test_a_worker_killed_mid_run_costs_a_retry_not_an_image(db_url, tmp_path):
    files = variants(tmp_path / "imgs", 48)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "ingest", "--json", "--workers", "2",
                             "--batch-size", "4", str(tmp_path / "imgs")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), start_new_session=True)
    try:
        wait_for_images(db_url, 4, proc)  # the workers are at work: a batch is stored, most inputs are not
        victims = worker_pids(proc.pid)
        assert victims, "no worker process found"
        os.kill(victims[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_run(proc)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    distinct = len({hashlib.sha256(f.read_bytes()).digest() for f in files})
    assert (summary["added"], summary["duplicates"], summary["failed"]) == (distinct, len(files) - distinct, 0)
    assert rows(db_url, "select count(*) as n from images")[0]["n"] == distinct
    assert rows(db_url, "select count(*) as n from image_uris")[0]["n"] == len(files)
    check_whole(db_url)


def test_a_progress_bar_on_a_terminal_only(db_url, tmp_path):
    variants(tmp_path / "imgs", 5)
    master, tty = os.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "ingest", "--workers", "1", str(tmp_path / "imgs")],
                              stdout=subprocess.PIPE, stderr=tty, text=True, env=dict(os.environ), timeout=300)
    finally:
        os.close(tty)
        reader.join(timeout=10)
        os.close(master)
    assert proc.returncode == 0
    assert b"5/5" in shown and b"img/s" in shown  # done/total and rate (ETA while it runs)
    assert "added 5" in proc.stdout


def test_inputs_the_database_cannot_take_fail_alone(db_url, tmp_path):
    """A URI too long for an index, a file name that is not UTF-8, metadata PostgreSQL refuses (NUL):
    each is reported, and the other images of the batch are stored."""
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(PHOTOS[0], folder / "nul_meta.jpg")
    shutil.copy(PHOTOS[1], folder / "fine.jpg")
    shutil.copy(PHOTOS[2], os.path.join(os.fsencode(folder), b"caf\xe9.jpg"))
    long_url = "http://127.0.0.1/" + "a" * 3000 + ".jpg"
    (tmp_path / "export.csv").write_text(f"uri,note\n{folder / 'nul_meta.jpg'},has\x00nul\n{long_url},long\n")
    r = cli("ingest", "--json", "--csv", str(tmp_path / "export.csv"), str(folder))
    assert r.returncode == 1, r.stderr
    summary = last_json(r)
    assert (summary["total"], summary["added"], summary["failed"]) == (4, 1, 3)
    messages = sorted(e["message"] for e in summary["errors"])
    assert any("database refused" in m and "nul_meta.jpg" in m for m in messages)
    assert any("not valid UTF-8" in m for m in messages) and any("longer than" in m for m in messages)
    assert [r["uri"] for r in rows(db_url, "select uri from image_uris")] == [str((folder / "fine.jpg").resolve())]
    check_whole(db_url)
