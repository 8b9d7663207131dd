"""The ``imgsearch`` command: thin commands over the library.

Every command prints readable text, or JSON with ``--json``. Exit codes: 0 all went well,
1 some inputs were bad (reported, the rest done), 2 the command itself could not proceed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg

from . import __version__, db
from .config import load_settings
from .embedded import EmbeddedServer
from .errors import ConfigError, DatabaseError, DatabaseUnavailableError, ImgsearchError
from .shards import shard_error

Configure = Callable[[argparse.ArgumentParser], None]
COMMANDS: dict[str, tuple[str, Configure, Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, configure: Configure = lambda p: None):  # noqa: A002 - argparse's word
    """Register a subcommand: its help line, a function adding its arguments, and the function
    that runs it. Commands of other areas live in their own modules (``cli_*.py``) and register
    themselves the same way; ``build_parser`` imports them."""
    def register(fn):
        COMMANDS[name] = (help, configure, fn)
        return fn
    return register


def json_flag(p: argparse.ArgumentParser, help: str = "machine-readable output") -> None:  # noqa: A002
    p.add_argument("--json", action="store_true", help=help)


def emit(obj: dict, as_json: bool, text: str | None = None) -> None:
    if as_json:
        print(json.dumps(obj), flush=True)
    else:
        print(text if text is not None else json.dumps(obj, indent=2), flush=True)


def answer_each(queries: list[str], as_json: bool, answer: Callable[[str], tuple[dict, str]]) -> int:
    """Print one answer per query: ``answer(arg)`` gives its JSON object and its text. A query that
    fails with one of our errors prints its error on its line and the others go on; a database
    error stops the command. Exit status 1 when any query failed, else 0."""
    failed = 0
    for arg in queries:
        try:
            obj, text = answer(arg)
        except ImgsearchError as exc:
            if isinstance(exc, DatabaseError):
                raise
            failed += 1
            emit({"query": arg, "error": exc.to_dict()}, as_json, f"{arg}: error {exc.code}: {exc.message}")
            continue
        emit(obj, as_json, text)
    return 1 if failed else 0


# --- db --------------------------------------------------------------------------------------
def _db_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "stop", "status", "migrate", "shards", "distribute"])
    p.add_argument("rest", nargs="*", help="shards: add URL | list | migrate | analyze (docs/scale.md)")
    p.add_argument("--name", help="shards add: the shard's name (default s1, s2, ...)")
    p.add_argument("--dry-run", action="store_true", help="distribute: print the Citus statements, run none")
    p.add_argument("--workers", default="", help="distribute: Citus workers to register, HOST[:PORT],...")
    p.add_argument("--coordinator-host", help="distribute: the coordinator's own HOST[:PORT] as the workers see it")
    json_flag(p)


@command("db", "manage the database: start|stop|status|migrate, shards add URL|list|migrate|analyze, distribute",
         _db_arguments)
def cmd_db(args: argparse.Namespace) -> int:
    if args.action in ("shards", "distribute"):
        from . import cli_shards

        return cli_shards.run(args)
    settings = load_settings()
    if args.action in ("start", "stop") and not settings.embedded:
        raise ConfigError(f"DATABASE_URL is set: 'imgsearch db {args.action}' manages only the embedded "
                          "server; start and stop your own server with its own tools")
    server = EmbeddedServer(settings.home)
    if args.action == "start":
        server.ensure_running()
        emit({"running": True, "home": str(settings.home)}, args.json,
             f"embedded PostgreSQL running, data in {server.pgdata}")
        return 0
    if args.action == "stop":
        stopped = server.stop()
        emit({"stopped": stopped}, args.json, "stopped" if stopped else "was not running")
        return 0
    with db.connect(settings, migrate_schema=False) as conn:
        applied = db.migrate(conn)
        if args.action == "migrate":
            emit({"applied": applied}, args.json,
                 f"applied migrations {applied}" if applied else "schema is up to date")
            return 0
        info = db.status(conn)
    info["data"] = str(server.pgdata) if settings.embedded else "external (DATABASE_URL)"
    info["embedded"] = settings.embedded
    rows = [
        ("database", info["data"]),
        ("server version", f"PostgreSQL {info['server_version']}"),
        ("pgvector", info["pgvector_version"]),
        ("schema version", f"{info['schema_version']} (latest {info['latest_schema_version']})"),
        *((name.replace("_", " "), count) for name, count in info["counts"].items()),
    ]
    lines = [f"{label + ':':<24}{value}" for label, value in rows]
    emit(info, args.json, "\n".join(lines))
    return 0


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def read_source(arg: str) -> tuple[Path | bytes, str]:
    """A file path, or an http(s) URL fetched with the safe fetcher."""
    if is_url(arg):
        from .fetch import fetch

        return fetch(arg).content, arg
    return Path(arg), arg


# --- hash ------------------------------------------------------------------------------------
@command("hash", "print the fingerprint of image files or URLs", lambda p: (
    p.add_argument("files", nargs="+"), json_flag(p, "one JSON object per line")))
def cmd_hash(args: argparse.Namespace) -> int:
    from .fingerprint import fingerprint, to_json

    failed = 0
    for arg in args.files:
        try:
            source, name = read_source(arg)
            obj = to_json(fingerprint(source, name=name), arg)
        except ImgsearchError as exc:
            failed += 1
            obj = {"file": arg, "error": exc.to_dict()}
        if args.json:
            emit(obj, True)
        elif "error" in obj:
            print(f"{arg}: error {obj['error']['code']}: {obj['error']['message']}")
        else:
            print(f"{arg}: {obj['width']}x{obj['height']} {obj['format']} phash={obj['phash']} "
                  f"pdq={obj['pdq'][:16]}... q={obj['pdq_quality']} regions={len(obj['regions'])} "
                  f"keypoints={obj['keypoints']}")
    return 1 if failed else 0


# --- search ----------------------------------------------------------------------------------
def _match_line(m) -> str:
    box = ",".join(f"{v:.2f}" for v in m.target_box)
    flags = "".join([" mirrored" if m.mirrored else "", " rotated" if m.rotated else ""])
    return f"  {m.score:>3}  {m.relation + flags:<26} id={m.id:<6} at [{box}]  {m.uri}"


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("queries", nargs="+")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--min-score", type=int, default=0)
    p.add_argument("--radius", type=int, default=None, help="Hamming radius for pHash look-ups (default 10)")
    json_flag(p, "one JSON object per query per line")


@command("search", "find stored images related to image files or URLs", _search_arguments)
def cmd_search(args: argparse.Namespace) -> int:
    from .fanout import search
    from .fingerprint import query_fingerprint
    from .search import DEFAULT_RADIUS

    with db.connect() as conn:
        def answer(arg: str) -> tuple[dict, str]:
            source, name = read_source(arg)
            outcome = search(conn, query_fingerprint(source, name=name), limit=args.limit,
                             min_score=args.min_score, radius=args.radius or DEFAULT_RADIUS)
            matches = outcome.matches
            obj = {"query": arg, "matches": [m.to_json() for m in matches], **outcome.to_json()}
            partial = f" (partial: shard(s) {', '.join(outcome.missing)} did not answer)" if outcome.partial else ""
            return obj, f"{arg}: {len(matches)} match(es){partial}" + "".join("\n" + _match_line(m) for m in matches)

        return answer_each(args.queries, args.json, answer)


# --- demo ------------------------------------------------------------------------------------
@command("demo", "ingest the bundled sample photos and search with crops, mirrors, composites")
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    found, total = run_demo()
    print(f"\n{found} of {total} demo queries found exactly what they should")
    return 0


# Modules holding the commands of other areas (each registers itself with @command on import).
AREA_MODULES: tuple[str, ...] = ("cli_ops", "cli_web", "cli_lineage", "cli_shards", "cli_semantic")


def build_parser() -> argparse.ArgumentParser:
    for module in AREA_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    parser = argparse.ArgumentParser(prog="imgsearch", description="Reverse image search on PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"imgsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_line, configure, _run) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_line, description=help_line))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except ImgsearchError as exc:
        print(f"imgsearch: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except psycopg.OperationalError as exc:  # the database (or one shard of it) went away mid-command
        error = shard_error(exc) or DatabaseUnavailableError(f"the database went away: {str(exc).strip()}")
        print(f"imgsearch: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("imgsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m engine.cli` runs this file as __main__; the cli_* modules register their commands
    # with engine.cli, so run that module's main
    from engine import cli

    sys.exit(cli.main())
