"""Ingest: inputs in, fingerprinted in worker processes, written in batches, resumable.

* Inputs (``engine.sources.Item``) whose URI is already recorded are skipped without being
  read: the fast path that makes a re-run after an interruption cheap (``recheck`` turns it off).
* The rest are read (files) or fetched (URLs, with the safe fetcher), decoded and fingerprinted
  in worker processes (default: one per core), which also pack the rows (``store.prepare``).
* The parent writes the results in batches (``store.store_batch``), each one transaction: an
  image is stored whole or not at all, so a run killed at any moment (even ``kill -9``) and
  started again ends with every image exactly once (SHA-256 is unique, URIs unique per image).
* A bad input becomes an error entry (path, code, message) and the run goes on; an unexpected
  exception in a worker too. A worker process that dies (a decoder crash, the OOM killer)
  takes nothing with it: its in-flight inputs are retried one at a time, and only the one that
  kills a worker again is reported (``worker_crashed``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .errors import DatabaseError, ImgsearchError, InputError, ProcessingError, WorkerCrashedError
from .queries import query
from .sources import Item
from .store import Entry, Prepared, prepare, store_batch

BATCH_IMAGES = 64  # a batch is written when it holds this many images ...
BATCH_SECONDS = 1.0  # ... or its first result is this old
IN_FLIGHT_PER_WORKER = 4  # inputs queued per worker process
MAX_ATTEMPTS = 2  # a worker crash is retried once, alone
URI_CHUNK = 5000  # URIs per look-up of already recorded ones
MAX_URI_BYTES = 2000  # a btree entry holds ~2.7 kB: longer URIs are refused up front
# the database refusing one row (bad text, a value too large...): that input fails, not the batch
ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded, psycopg.errors.IntegrityError)


@dataclass(frozen=True)
class Outcome:
    """What a worker made of one input: rows to store, or an error entry."""

    item: Item
    prepared: Prepared | None
    error: dict | None


@dataclass(frozen=True)
class IngestSummary:
    total: int = 0  # inputs of the run
    added: int = 0  # new images stored
    duplicates: int = 0  # inputs whose bytes were stored already (their URI is recorded): includes skipped
    skipped: int = 0  # of the duplicates, those recognised by their URI alone, not read again
    errors: tuple[dict, ...] = ()  # {"path", "code", "message"} per failed input
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.errors)

    def to_json(self) -> dict:
        return {"total": self.total, "added": self.added, "duplicates": self.duplicates, "skipped": self.skipped,
                "failed": self.failed, "seconds": round(self.seconds, 3),
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
def _init_worker() -> None:
    """One worker process per core: OpenCV on one thread each, and die with the parent (so a
    killed run leaves no orphan workers behind)."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # pragma: no cover - other systems: workers see EOF instead
        pass


def process(item: Item) -> Outcome:
    """Read or fetch, fingerprint and pack one input; every failure becomes an error entry."""
    from .fingerprint import fingerprint

    try:
        if item.url:
            from .fetch import fetch

            fp = fingerprint(fetch(item.uri).content, name=item.uri)
        else:
            fp = fingerprint(Path(item.uri))
        return Outcome(item, prepare(fp), None)
    except ImgsearchError as exc:
        return Outcome(item, None, error_entry(item.uri, exc))
    except Exception as exc:  # noqa: BLE001 - a worker must report, never take the batch down
        return Outcome(item, None, error_entry(item.uri, ProcessingError(f"{item.uri}: {type(exc).__name__}: {exc}")))


def outcomes(items: Sequence[Item], workers: int, tick: float | None = None) -> Iterator[Outcome | None]:
    """Process items in `workers` processes (in this one when workers is 0), results as they come;
    with `tick`, also None whenever that many seconds pass without a result (time to write a batch)."""
    if workers <= 0:
        yield from map(process, items)
        return
    queue: deque[tuple[Item, int]] = deque((item, 0) for item in items)
    pending: dict[Future, tuple[Item, int]] = {}
    context = multiprocessing.get_context("spawn")  # no inherited database socket or pipe ends
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        while queue or pending:
            # an input that was in flight when a worker died runs alone, to tell who killed it
            suspect_running = any(tries for _, tries in pending.values())
            while queue and not suspect_running and len(pending) < workers * IN_FLIGHT_PER_WORKER:
                if queue[0][1] and pending:
                    break
                item, tries = queue.popleft()
                pending[pool.submit(process, item)] = (item, tries)
                suspect_running = tries > 0
            done, _ = wait(pending, timeout=tick, return_when=FIRST_COMPLETED)
            if not done:
                yield None
                continue
            broken = False
            for future in done:
                item, tries = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken = True
                    if tries + 1 >= MAX_ATTEMPTS:
                        crash = WorkerCrashedError(f"{item.uri}: the worker process died while reading it")
                        yield Outcome(item, None, error_entry(item.uri, crash))
                    else:
                        queue.appendleft((item, tries + 1))
            if broken:  # every other future of the dead pool fails too: requeue them
                for future, (item, tries) in list(pending.items()):
                    if future.done() and not future.cancelled() and future.exception() is None:
                        yield future.result()
                    else:
                        queue.appendleft((item, tries + 1))
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


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


def ingest(conn: psycopg.Connection, items: Sequence[Item], *, workers: int | None = None, recheck: bool = False,
           progress: Callable[[int], object] | None = None, on_error: Callable[[dict], object] | None = None,
           batch_images: int = BATCH_IMAGES, batch_seconds: float = BATCH_SECONDS) -> IngestSummary:
    """Store every item; see the module doc. ``progress(n)``: n more inputs are done (stored,
    skipped or failed); ``on_error(entry)``: an input failed."""
    started = time.perf_counter()
    progress = progress or (lambda n: None)
    on_error = on_error or (lambda e: None)
    workers = (os.cpu_count() or 1) if workers is None else workers
    try:
        run = plan(conn, items, recheck)
        progress(run.skipped)
        added = duplicates = 0
        errors: list[dict] = []
        batch: list[Entry] = []
        batch_started = 0.0

        def flush() -> None:
            nonlocal added, duplicates
            try:
                stored = store_batch(conn, batch)
            except ROW_ERRORS:  # one entry the database refuses: store the others one by one
                stored = []
                for entry in batch:
                    try:
                        stored.extend(store_batch(conn, [entry]))
                    except ROW_ERRORS as exc:
                        fail(error_entry(entry.uri, ProcessingError(f"{entry.uri}: the database refused it "
                                                                    f"({str(exc).strip()})")), count=False)
            created = sum(s.created for s in stored)
            added += created
            duplicates += len(stored) - created
            progress(len(batch))
            batch.clear()

        def fail(entry: dict, count: bool = True) -> None:
            errors.append(entry)
            on_error(entry)
            if count:
                progress(1)

        for entry in run.refused:
            fail(entry)
        todo = run.to_read

        # the parent writes while workers fingerprint; tiny runs are not worth starting processes for
        for outcome in outcomes(todo, workers if len(todo) >= 4 else 0, tick=batch_seconds):
            if outcome is None:  # nothing new for a while: results waiting in the batch get written
                pass
            elif outcome.error is not None:
                fail(outcome.error)
            else:
                if not batch:
                    batch_started = time.perf_counter()
                batch.append(Entry(outcome.prepared, outcome.item.uri, outcome.item.metadata))
            if batch and (len(batch) >= batch_images or time.perf_counter() - batch_started >= batch_seconds):
                flush()
        if batch:
            flush()
        if added:  # fresh statistics: the word scores' idf reads the planner's image count
            conn.execute(query("analyze_tables"))
            conn.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"the database failed during ingest: {str(exc).strip()}") from exc
    return IngestSummary(total=len(items), added=added, duplicates=duplicates + run.skipped, skipped=run.skipped,
                         errors=tuple(errors), seconds=time.perf_counter() - started)
