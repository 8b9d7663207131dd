"""Ingest: inputs in, fingerprinted in worker processes, written in batches, resumable.

* Inputs (``engine.sources.Item``) whose URI is already recorded are skipped without being
  read: the fast path that makes a re-run after an interruption cheap (``recheck`` turns it off).
* The rest are read (files) or fetched (URLs, with the safe fetcher) in worker processes
  (default: one per core). Bytes already stored (their SHA-256, looked up on the worker's own
  connection) only get the new URI recorded: the same picture at another place costs a read, not
  a fingerprint. The others are decoded, fingerprinted and packed into rows (``store.prepare``).
* The parent writes the results in batches (``store.store_batch``), each one transaction: an
  image is stored whole or not at all, so a run killed at any moment (even ``kill -9``) and
  started again ends with every image exactly once (SHA-256 is unique, URIs unique per image).
* A bad input becomes an error entry (path, code, message) and the run goes on; an unexpected
  exception in a worker too. A worker process that dies (a decoder crash, the OOM killer)
  takes nothing with it (``engine.workpool``): the input it died on is retried once in a fresh
  worker and reported (``worker_crashed``) only if it kills that one too.
* With the optional 'semantic' extra installed (and IMGSEARCH_SEMANTIC not off), each worker also
  embeds the new image's thumbnail for similar images (engine.embedding, one torch thread a worker);
  without it nothing of torch is imported or looked up beyond one check per process.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from .errors import DatabaseError, ImgsearchError, InputError, ProcessingError, WorkerCrashedError
from .queries import query
from .shards import shard_error, sync_statistics
from .sources import Item
from .store import Entry, Prepared, prepare, record_uris, store_batch
from .workpool import imap_unordered

BATCH_IMAGES = 64  # a batch is written when it holds this many images ...
BATCH_SECONDS = 1.0  # ... or its first result is this old
IN_FLIGHT_PER_WORKER = 2  # inputs sent to a worker process at a time (one read, one waiting)
URI_CHUNK = 5000  # URIs per look-up of already recorded ones
MAX_URI_BYTES = 2000  # a btree entry holds ~2.7 kB: longer URIs are refused up front
# the database refusing one row (bad text, a value too large...): that input fails, not the batch
ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded, psycopg.errors.IntegrityError)


@dataclass(frozen=True)
class Outcome:
    """What a worker made of one input: rows to store, bytes stored already (known), or an error entry."""

    item: Item
    prepared: Prepared | None
    error: dict | None
    known: bytes | None = None  # the SHA-256 of bytes stored already: only the URI is to be recorded


@dataclass(frozen=True)
class IngestSummary:
    total: int = 0  # inputs of the run
    added: int = 0  # new images stored
    duplicates: int = 0  # inputs whose bytes were stored already (their URI is recorded): includes skipped
    skipped: int = 0  # of the duplicates, those recognised by their URI alone, not read again
    by_sha256: int = 0  # of the duplicates, those recognised by their bytes' SHA-256, not fingerprinted
    errors: tuple[dict, ...] = ()  # {"path", "code", "message"} per failed input
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.errors)

    def to_json(self) -> dict:
        return {"total": self.total, "added": self.added, "duplicates": self.duplicates, "skipped": self.skipped,
                "by_sha256": self.by_sha256, "failed": self.failed, "seconds": round(self.seconds, 3),
                "rate": round((self.total - self.skipped) / self.seconds, 2) if self.seconds > 0 else None,
                "errors": list(self.errors)}


@dataclass(frozen=True)
class Plan:
    """What a run would do (``--dry-run``): nothing is read, fingerprinted or written."""

    total: int
    to_read: tuple[Item, ...]
    skipped: int  # URIs recorded already
    missing: tuple[str, ...]  # files that do not exist
    refused: tuple[dict, ...] = ()  # URIs that cannot be recorded (too long, NUL, undecodable): error entries

    def to_json(self) -> dict:
        return {"dry_run": True, "total": self.total, "to_ingest": len(self.to_read), "skipped": self.skipped,
                "urls": sum(i.url for i in self.to_read), "files": sum(not i.url for i in self.to_read),
                "missing": list(self.missing), "refused": list(self.refused)}


def error_entry(path: str, exc: ImgsearchError) -> dict:
    return {"path": path, **exc.to_dict()}


def uri_problem(uri: str) -> str | None:
    """Why a URI cannot be recorded, if it cannot."""
    if "\x00" in uri:
        return "contains a NUL character"
    try:
        size = len(uri.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a file name with undecodable bytes?)"
    return f"is longer than {MAX_URI_BYTES} bytes" if size > MAX_URI_BYTES else None


# --- workers ---------------------------------------------------------------------------------
_worker: dict = {}  # per worker process: the conninfo and connection of the stored-bytes check


def _init_worker(conninfo: str | None = None) -> None:
    """One worker process per core: OpenCV (and torch, for embeddings) on one thread each (the pool
    makes it die with the parent). With conninfo, bytes are looked up before they are fingerprinted."""
    import cv2

    from . import embedding

    cv2.setNumThreads(1)
    _worker["conninfo"] = conninfo
    _worker["embed"] = embedding.enabled()
    if _worker["embed"]:
        embedding.set_threads(1)


def _stored_already(sha256: bytes) -> bool:
    """Whether these bytes are stored, on the worker's own connection; if that fails: no."""
    if not _worker.get("conninfo"):
        return False
    try:
        if _worker.get("conn") is None or _worker["conn"].closed:
            _worker["conn"] = psycopg.connect(_worker["conninfo"], autocommit=True, connect_timeout=10)
        return _worker["conn"].execute(query("image_id_by_sha256"), {"sha256": sha256}).fetchone() is not None
    except psycopg.Error:
        _worker["conn"] = None
        return False


def _embed() -> bool:
    """Whether new images get an embedding: decided once per worker process, at each call in this one."""
    if "embed" in _worker:
        return _worker["embed"]
    from .embedding import enabled

    return enabled()


def process(item: Item) -> Outcome:
    """Read or fetch one input; bytes stored already are only recognised (in a worker that can
    look them up), others are fingerprinted (and embedded, with the extra) and packed. Every
    failure becomes an error entry."""
    from .fingerprint import fingerprint
    from .loading import load_bytes

    try:
        if item.url:
            from .fetch import fetch

            data = fetch(item.uri).content
        else:
            data = load_bytes(item.uri)
        sha256 = hashlib.sha256(data).digest()
        if data and _stored_already(sha256):
            return Outcome(item, None, None, known=sha256)
        fp = fingerprint(data, name=item.uri, with_embedding=_embed())
        return Outcome(item, prepare(fp), None)
    except ImgsearchError as exc:
        return Outcome(item, None, error_entry(item.uri, exc))
    except Exception as exc:  # noqa: BLE001 - a worker must report, never take the batch down
        return Outcome(item, None, error_entry(item.uri, ProcessingError(f"{item.uri}: {type(exc).__name__}: {exc}")))


def _crashed(item: Item) -> Outcome:
    crash = WorkerCrashedError(f"{item.uri}: the worker process died while reading it")
    return Outcome(item, None, error_entry(item.uri, crash))


def outcomes(items: Sequence[Item], workers: int, tick: float | None = None,
             conninfo: str | None = None) -> Iterator[Outcome | None]:
    """Process items in `workers` processes (in this one when workers is 0), results as they come;
    with `tick`, also None whenever that many seconds pass without a result (time to write a batch);
    with `conninfo`, workers recognise bytes stored in that database instead of fingerprinting them."""
    if workers <= 0:
        yield from map(process, items)
        return
    yield from imap_unordered(process, items, workers, crashed=_crashed, initializer=_init_worker,
                              initargs=(conninfo,), depth=IN_FLIGHT_PER_WORKER, tick=tick)


# --- the run ---------------------------------------------------------------------------------
def recorded_uris(conn: psycopg.Connection, uris: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for at in range(0, len(uris), URI_CHUNK):
        rows = conn.execute(query("recorded_uris"), {"uris": list(uris[at:at + URI_CHUNK])}).fetchall()
        found.update(row["uri"] for row in rows)
    conn.commit()
    return found


def plan(conn: psycopg.Connection, items: Sequence[Item], recheck: bool = False) -> Plan:
    refused = []
    for item in items:
        if problem := uri_problem(item.uri):
            label = item.uri.encode("utf-8", "backslashreplace").decode()[:300].replace("\x00", "\\0")
            refused.append(error_entry(label, InputError(f"{label}: {problem}")))
    valid = [i for i in items if not uri_problem(i.uri)] if refused else list(items)
    known = set() if recheck else recorded_uris(conn, [i.uri for i in valid])
    todo = tuple(i for i in valid if i.uri not in known)
    missing = tuple(i.uri for i in todo if not i.url and not os.path.lexists(i.uri))
    return Plan(len(items), todo, len(valid) - len(todo), missing, tuple(refused))


def _conninfo(conn: psycopg.Connection) -> str:
    """How a worker reaches the same database (the password too: dsn leaves it out)."""
    from psycopg.conninfo import make_conninfo

    password = conn.info.password
    return make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


@dataclass
class _Written:
    """What writing one batch did (in the writer thread); the caller applies it (counts, errors,
    progress) in its own thread."""

    inputs: int  # entries and known outcomes of the batch
    created: int = 0  # new images
    stored_again: int = 0  # entries whose bytes another entry (or an earlier batch) stored
    recorded: int = 0  # known outcomes whose URI was recorded
    refused: list[tuple[str, Exception]] = field(default_factory=list)  # (uri, the database's error)
    redo: list[Item] = field(default_factory=list)  # recognised, but deleted before the URI was recorded


def _write_batch(conn: psycopg.Connection, batch: Sequence[Entry], known: Sequence[Outcome]) -> _Written:
    """Store a batch (one transaction; if the database refuses one entry, the others one by one)
    and record the URIs of bytes stored already (likewise)."""
    done = _Written(inputs=len(batch) + len(known))
    try:
        stored = store_batch(conn, batch)
    except ROW_ERRORS:  # one entry the database refuses: store the others one by one
        stored = []
        for entry in batch:
            try:
                stored.extend(store_batch(conn, [entry]))
            except ROW_ERRORS as exc:
                done.refused.append((entry.uri, exc))
    done.created = sum(s.created for s in stored)
    done.stored_again = len(stored) - done.created
    rows = [(o.known, o.item.uri, o.item.metadata) for o in known]
    try:
        found = record_uris(conn, rows)
        status = ["ok" if o.known in found else "redo" for o in known]
    except ROW_ERRORS:  # one the database refuses: the others one by one
        status = []
        for outcome, row in zip(known, rows, strict=True):
            try:
                status.append("ok" if outcome.known in record_uris(conn, [row]) else "redo")
            except ROW_ERRORS as exc:
                done.refused.append((outcome.item.uri, exc))
                status.append("failed")
    done.recorded = status.count("ok")
    done.redo = [o.item for o, st in zip(known, status, strict=True) if st == "redo"]
    return done


def ingest(conn: psycopg.Connection, items: Sequence[Item], *, workers: int | None = None, recheck: bool = False,
           progress: Callable[[int], object] | None = None, on_error: Callable[[dict], object] | None = None,
           batch_images: int = BATCH_IMAGES, batch_seconds: float = BATCH_SECONDS) -> IngestSummary:
    """Store every item; see the module doc. ``progress(n)``: n more inputs are done (stored,
    skipped or failed); ``on_error(entry)``: an input failed.

    Batches are written by a writer thread while this one keeps the worker processes fed: a
    worker has only a couple of inputs in flight, so writing here would idle them for as long as
    a batch takes to store (at 1M stored images ~0.45 s a batch: docs/benchmarks.md, "Ingest").
    One batch is written at a time, in order; callbacks and counts stay in this thread."""
    started = time.perf_counter()
    progress = progress or (lambda n: None)
    on_error = on_error or (lambda e: None)
    workers = (os.cpu_count() or 1) if workers is None else workers
    added = duplicates = by_sha256 = 0
    errors: list[dict] = []
    batch: list[Entry] = []
    known: list[Outcome] = []  # bytes stored already: their URIs are recorded with the batch
    redo: list[Item] = []  # recognised, but the image was deleted before its URI was recorded
    writing: Future | None = None  # the batch being written, in the writer thread

    def fail(entry: dict, count: bool = True) -> None:
        errors.append(entry)
        on_error(entry)
        if count:
            progress(1)

    def settle() -> None:
        """Wait for the batch being written, and count what it did (its errors re-raised here)."""
        nonlocal writing, added, duplicates, by_sha256
        if writing is None:
            return
        done, writing = writing.result(), None
        for uri, exc in done.refused:
            fail(error_entry(uri, ProcessingError(f"{uri}: the database refused it ({str(exc).strip()})")),
                 count=False)
        added += done.created
        duplicates += done.stored_again + done.recorded
        by_sha256 += done.recorded
        redo.extend(done.redo)
        progress(done.inputs - len(done.redo))

    def write() -> None:
        nonlocal writing, batch, known
        settle()  # one batch at a time, in order, on the one connection
        writing = writer.submit(_write_batch, conn, batch, known)
        batch, known = [], []

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
    try:
        run = plan(conn, items, recheck)
        progress(run.skipped)
        for entry in run.refused:
            fail(entry)
        # the parent writes while workers fingerprint; tiny runs are not worth starting processes for
        parallel = workers if len(run.to_read) >= 4 else 0
        results = outcomes(run.to_read, parallel, tick=batch_seconds, conninfo=_conninfo(conn) if parallel else None)
        batch_started = 0.0
        while True:
            for outcome in results:
                if outcome is None:  # nothing new for a while: results waiting in the batch get written
                    pass
                elif outcome.error is not None:
                    fail(outcome.error)
                else:
                    if not batch and not known:
                        batch_started = time.perf_counter()
                    if outcome.known is not None:
                        known.append(outcome)
                    else:
                        batch.append(Entry(outcome.prepared, outcome.item.uri, outcome.item.metadata))
                pending = len(batch) + len(known)
                if pending and (pending >= batch_images or time.perf_counter() - batch_started >= batch_seconds):
                    write()
            if batch or known:
                write()
            settle()
            if not redo:
                break
            results = outcomes(list(redo), 0)  # rare: fingerprint them here
            redo.clear()
        if added:  # fresh statistics: the word scores' idf reads the planner's image count
            conn.execute(query("analyze_tables"))
            conn.commit()
            sync_statistics(conn)  # on shards, the same count (docs/scale.md)
            conn.commit()
    except psycopg.Error as exc:
        raise shard_error(exc) or DatabaseError(f"the database failed during ingest: {str(exc).strip()}") from exc
    finally:
        writer.shutdown(wait=True)  # interrupted: the batch in flight commits or fails whole first
    return IngestSummary(total=len(items), added=added, duplicates=duplicates + run.skipped, skipped=run.skipped,
                         by_sha256=by_sha256, errors=tuple(errors), seconds=time.perf_counter() - started)
