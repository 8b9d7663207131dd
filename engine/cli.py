"""The ``imgsearch`` command: thin commands over the library.

Every command prints readable text, or JSON with ``--json``. Exit codes: 0 all went well,
1 some inputs were bad (reported, the rest done), 2 the command itself could not proceed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from . import __version__, db
from .config import load_settings
from .embedded import EmbeddedServer
from .errors import ConfigError, ImgsearchError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def emit(obj: dict, as_json: bool, text: str | None = None) -> None:
    if as_json:
        print(json.dumps(obj), flush=True)
    else:
        print(text if text is not None else json.dumps(obj, indent=2), flush=True)


# --- db --------------------------------------------------------------------------------------
@command("db")
def cmd_db(args: argparse.Namespace) -> int:
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
    lines = [
        f"database:        {info['data']}",
        f"server version:  PostgreSQL {info['server_version']}",
        f"pgvector:        {info['pgvector_version']}",
        f"schema version:  {info['schema_version']} (latest {info['latest_schema_version']})",
        *(f"{name + ':':<17}{count}" for name, count in info["counts"].items()),
    ]
    emit(info, args.json, "\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgsearch", description="Reverse image search on PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"imgsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="manage the database: start|stop|status|migrate")
    p.add_argument("action", choices=["start", "stop", "status", "migrate"])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ImgsearchError as exc:
        print(f"imgsearch: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("imgsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
