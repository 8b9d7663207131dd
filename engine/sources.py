"""What an ingest run reads: files, folders, URL lists, CSV exports and stdin, as ``Item``s.

Each input becomes one ``Item`` whose ``uri`` is what gets recorded in ``image_uris``: the
absolute (symlink-resolved) path of a file, or the URL as given. Rules:

* a folder is walked recursively in sorted order; without ``--include`` it yields the files
  with an image suffix (``IMAGE_SUFFIXES``), with ``--include`` the files matching any include
  glob. ``--exclude`` globs drop files and prune whole folders. A glob without ``/`` matches
  the file (or folder) name, one with ``/`` the path relative to the walked folder (fnmatch:
  ``*`` crosses ``/``). Files named explicitly are always taken;
* an ``http://`` or ``https://`` argument is a URL; ``--urls FILE`` lists one URL a line
  (blank lines and ``#`` comments skipped); anything else there is still tried as a URL, and
  the safe fetcher refuses it;
* ``--csv FILE`` needs a ``uri`` column (a URL, or a path relative to the CSV's folder); the
  other non-empty columns become the image's metadata;
* ``-`` reads arguments from stdin, one a line, each like a command-line argument.

The same URI listed twice is one input; metadata is merged, the first value of a key winning.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TextIO

from .errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True, slots=True)
class Item:
    """One input to ingest."""

    uri: str  # recorded in image_uris: an absolute path or a URL
    url: bool = False  # fetch it with the safe fetcher instead of reading a file
    metadata: dict | None = field(default=None, compare=False)  # from a CSV row


@dataclass(frozen=True)
class Listing:
    items: tuple[Item, ...]
    errors: tuple[dict, ...] = ()  # rows that name no input: {"path", "code", "message"}


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _matches(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(rel if "/" in p else name, p) for p in patterns)


def walk(root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Files under root, sorted, filtered by the globs (see the module doc)."""
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not _matches((rel_folder / d).as_posix(), d, exclude))
        for name in sorted(files):
            rel = (rel_folder / name).as_posix()
            if exclude and _matches(rel, name, exclude):
                continue
            if include:
                if not _matches(rel, name, include):
                    continue
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            yield Path(folder) / name  # broken links, sockets...: reading them reports the error


def from_arguments(args: Iterable[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Item]:
    """Items for command-line style arguments: URLs, files and folders."""
    for arg in args:
        if is_url(arg):
            yield Item(arg, url=True)
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            for found in walk(path, include, exclude):
                yield Item(str(found.resolve()))
        else:  # a file, or a missing path: reading it reports the error
            yield Item(str(path.resolve()))


def _open_list(path: str | Path) -> TextIO:
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def from_url_list(path: str | Path) -> Iterator[Item]:
    with _open_list(path) as f:
        try:
            for line in f:
                text = line.strip()
                if text and not text.startswith("#"):
                    yield Item(text, url=True)
        except UnicodeDecodeError:
            raise SourceError(f"{path}: is not UTF-8 text") from None


def from_csv(path: str | Path, errors: list[dict]) -> Iterator[Item]:
    """Items for the rows of a CSV export; rows without a uri are appended to errors."""
    base = Path(path).resolve().parent
    with _open_list(path) as f:
        try:
            reader = csv.DictReader(f)
            columns = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
            if "uri" not in columns:
                raise SourceError(f"{path}: has no 'uri' column (columns: {', '.join(reader.fieldnames or [])})")
            uri_column = columns["uri"]
            for row in reader:
                raw = (row.get(uri_column) or "").strip()
                meta = {k: v for k, v in row.items() if k not in (uri_column, None) and v not in (None, "")}
                if not raw:
                    errors.append({"path": f"{path}:{reader.line_num}", "code": "bad_input",
                                   "message": f"{path}: line {reader.line_num} has an empty uri"})
                elif is_url(raw):
                    yield Item(raw, url=True, metadata=meta or None)
                else:
                    yield Item(str((base / Path(raw).expanduser()).resolve()), metadata=meta or None)
        except UnicodeDecodeError:
            raise SourceError(f"{path}: is not UTF-8 text") from None
        except csv.Error as exc:
            raise SourceError(f"{path}: is not a readable CSV file ({exc})") from None


def collect(args: Sequence[str] = (), *, url_lists: Sequence[str] = (), csv_files: Sequence[str] = (),
            include: Sequence[str] = (), exclude: Sequence[str] = (), stdin: TextIO | None = None) -> Listing:
    """Every input of a run, in order, each URI once."""
    errors: list[dict] = []

    def expanded() -> Iterator[Item]:
        for arg in args:
            if arg == "-":
                stream = stdin if stdin is not None else sys.stdin
                lines = [line.strip() for line in stream]
                yield from from_arguments([ln for ln in lines if ln], include, exclude)
            else:
                yield from from_arguments([arg], include, exclude)
        for path in url_lists:
            yield from from_url_list(path)
        for path in csv_files:
            yield from from_csv(path, errors)

    at: dict[str, int] = {}
    items: list[Item] = []
    for item in expanded():
        if item.uri not in at:
            at[item.uri] = len(items)
            items.append(item)
        elif item.metadata:  # listed again, e.g. in a folder and in a CSV: keep the metadata
            first = items[at[item.uri]]
            items[at[item.uri]] = replace(first, metadata={**item.metadata, **(first.metadata or {})})
    return Listing(tuple(items), tuple(errors))
