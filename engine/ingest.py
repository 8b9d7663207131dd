"""Ingest: files and folders in, fingerprinted in worker processes, stored one image per transaction.

A bad file is reported (path, error code, message) and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .errors import ImgsearchError
from .fingerprint import fingerprint
from .model import Fingerprint
from .queries import query
from .store import store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def iter_image_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively (sorted) for image suffixes."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and sub.suffix.lower() in IMAGE_SUFFIXES:
                    yield sub.resolve()
        else:
            yield path.resolve() if path.exists() else path


@dataclass
class IngestSummary:
    added: int = 0
    duplicates: int = 0  # bytes already stored: the URI was recorded
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"added": self.added, "duplicates": self.duplicates, "failed": len(self.failed),
                "errors": self.failed}


def _init_worker() -> None:
    """One worker process per core: keep OpenCV from starting a thread pool in each of them."""
    import cv2

    cv2.setNumThreads(1)


def _fingerprint_file(path: Path) -> tuple[Path, Fingerprint | None, dict | None]:
    try:
        return path, fingerprint(path), None
    except ImgsearchError as exc:
        return path, None, {"path": str(path), **exc.to_dict()}
    except Exception as exc:  # noqa: BLE001 - a worker must report, never take the batch down
        return path, None, {"path": str(path), "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}


def ingest_files(conn: psycopg.Connection, files: list[Path], workers: int | None = None,
                 progress=None) -> IngestSummary:
    summary = IngestSummary()
    workers = workers or os.cpu_count() or 1

    def results() -> Iterator[tuple[Path, Fingerprint | None, dict | None]]:
        if workers == 1 or len(files) < 4:
            yield from map(_fingerprint_file, files)
            return
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            yield from pool.map(_fingerprint_file, files, chunksize=4)

    for path, fp, error in results():
        if error is None:
            stored = store(conn, fp, str(path))
            if stored.created:
                summary.added += 1
            else:
                summary.duplicates += 1
        else:
            summary.failed.append(error)
        if progress is not None:
            progress(1)
    if summary.added:  # fresh statistics: the word scores' idf reads the planner's image count
        conn.execute(query("analyze_tables"))
        conn.commit()
    return summary
