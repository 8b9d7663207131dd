"""Searching a scaled-out database (docs/scale.md): every shard at once, merged; partial when a
shard is down.

A search makes two reads, ``lookup`` (the hash, visual-word and SHA-256 candidates) and
``candidate_details``. Through the coordinator's foreign tables both would work unchanged, but
the word step's per-word count is one remote round trip per query word and per shard (2 s for
2000 words, bench/scale.py), and a shard that is down fails the whole statement. So here the
same two named statements run directly on every shard, in parallel threads, and their rows are
merged: the hits of each shard are its own images', so the union is the single server's answer;
each shard returns its own visual-word postings, voted on separately (``engine.wordvotes``), and
of those candidates the best ``WORD_CANDIDATES`` over all shards are kept, as one server keeps
its best. The word weights are the single server's too: each shard's planner
count of images is the whole collection's (``shards.sync_statistics``), and a shard's count of
a word's postings is at most the collection's, so no word the single server keeps is dropped.

A shard that cannot be reached, or fails while answering, is left out: the search answers from
the others and ``missing`` names it. Every other statement goes to the coordinator.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from . import search as searchmod
from . import shards as shardsmod
from .errors import ShardUnavailableError
from .fingerprint import QueryFingerprint
from .model import Match
from .queries import query

SHARD_CONNECT_TIMEOUT_S = 3
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="imgsearch-shard")
_idle: dict[str, list[psycopg.Connection]] = {}
_idle_lock = threading.Lock()


@dataclass(frozen=True)
class SearchOutcome:
    matches: list[Match]
    shards: tuple[str, ...]  # every shard of the database (empty: one server)
    missing: tuple[str, ...]  # the shards that did not answer

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    def to_json(self) -> dict:
        """The keys a search result gains on a sharded database (none on one server)."""
        return {"partial": self.partial, "missing_shards": list(self.missing)} if self.shards else {}


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True, connect_timeout=SHARD_CONNECT_TIMEOUT_S)


def _take(url: str) -> psycopg.Connection | None:
    """An idle connection to this shard, or None."""
    with _idle_lock:
        idle = _idle.setdefault(url, [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
    return None


def _give_back(url: str, conn: psycopg.Connection) -> None:
    with _idle_lock:
        _idle.setdefault(url, []).append(conn)


def _on_shard(url: str, text: str, params: dict, options: dict) -> list[dict]:
    """Run a statement on one shard. An idle connection that fails (the shard restarted since)
    is dropped and the statement tried once more on a new one."""
    conn = _take(url)
    if conn is not None:
        try:
            rows = conn.execute(text, params, **options).fetchall()
            _give_back(url, conn)
            return rows
        except psycopg.OperationalError:
            conn.close()
    conn = _connect(url)
    try:
        rows = conn.execute(text, params, **options).fetchall()
    except psycopg.Error:
        conn.close()
        raise
    _give_back(url, conn)
    return rows


def _merge_union(parts: list[list[dict]]) -> list[dict]:
    return [r for part in parts for r in part]


_MERGERS = {"lookup": _merge_union, "candidate_details": _merge_union}


class _Rows:
    def __init__(self, rows: list[dict]):
        self._rows = rows

    def fetchall(self) -> list[dict]:
        return self._rows

    def fetchone(self) -> dict | None:
        return self._rows[0] if self._rows else None

    def __iter__(self):
        return iter(self._rows)


class FanoutConnection:
    """A coordinator connection whose search reads run on every shard (the others go to the
    coordinator). ``missing`` collects the shards that did not answer."""

    def __init__(self, conn: psycopg.Connection, shards: list[shardsmod.Shard]):
        self.conn = conn
        self.shards = shards
        self.missing: set[str] = set()
        self._mergers = {query(name): merge for name, merge in _MERGERS.items()}

    def execute(self, text, params=None, **options):
        merge = self._mergers.get(text) if isinstance(text, str) else None
        if merge is None:
            return self.conn.execute(text, params, **options)
        live = [s for s in self.shards if s.name not in self.missing]
        futures = [(s, _executor.submit(_on_shard, s.url, text, params, options)) for s in live]
        parts = []
        for shard, future in futures:
            try:
                parts.append(future.result())
            except psycopg.OperationalError:
                self.missing.add(shard.name)
        if len(self.missing) == len(self.shards):
            raise ShardUnavailableError(f"no shard answers ({', '.join(sorted(self.missing))})")
        return _Rows(merge(parts))

    def __getattr__(self, name):
        return getattr(self.conn, name)


def reads(conn: psycopg.Connection) -> psycopg.Connection | FanoutConnection:
    """The connection to run a search's reads on: ``conn`` itself on one server, on shards a
    FanoutConnection over it (provenance linking uses this, with ``require_complete``)."""
    shards = shardsmod.list_shards(conn)
    return FanoutConnection(conn, shards) if shards else conn


def require_complete(conn: psycopg.Connection | FanoutConnection) -> None:
    """Raise if a shard did not answer: what needs every shard (a link) must not go on without."""
    if isinstance(conn, FanoutConnection) and conn.missing:
        names = ", ".join(sorted(conn.missing))
        raise ShardUnavailableError(f"shard(s) {names} did not answer: the image stays pending, to be linked "
                                    "when every shard answers")


def search(conn: psycopg.Connection, q: QueryFingerprint, **kwargs) -> SearchOutcome:
    """``engine.search.search`` on one server or many; on many, says which shards are missing."""
    shards = shardsmod.list_shards(conn)
    if not shards:
        return SearchOutcome(searchmod.search(conn, q, **kwargs), (), ())
    fan = FanoutConnection(conn, shards)
    matches = searchmod.search(fan, q, **kwargs)
    return SearchOutcome(matches, tuple(s.name for s in shards), tuple(sorted(fan.missing)))
