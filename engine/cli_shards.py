"""`imgsearch db shards add URL | list | migrate | analyze` and `imgsearch db distribute` (docs/scale.md)."""

from __future__ import annotations

import argparse

from . import db, shards
from .cli import emit
from .errors import InputError


def run(args: argparse.Namespace) -> int:
    if args.action == "distribute":
        from . import citus

        with db.connect() as conn:
            done = citus.distribute(conn, workers=[w for w in args.workers.split(",") if w],
                                    coordinator=args.coordinator_host, dry_run=args.dry_run)
        emit({"statements": done, "dry_run": args.dry_run}, args.json, "\n".join(done))
        return 0
    what, rest = (args.rest[0], args.rest[1:]) if args.rest else ("list", [])
    with db.connect() as conn:
        if what == "add":
            if len(rest) != 1:
                raise InputError("usage: imgsearch db shards add URL [--name NAME]")
            shard = shards.add(conn, rest[0], args.name)
            emit(shard.to_json(), args.json, f"shard {shard.name} added ({shards.redact(shard.url)}), "
                 f"position {shard.position}")
            return 0
        if what == "list":
            found = shards.status(conn)
            lines = [f"{s['name']:<10} {'up' if s['up'] else 'DOWN':<5} images={s.get('images', '?'):<10} {s['url']}"
                     for s in found]
            emit({"shards": found}, args.json, "\n".join(lines) if lines else "no shards: one server")
            return 0 if all(s["up"] for s in found) else 2
        if what == "migrate":
            done = shards.migrate_shards(conn)
            emit({"applied": done}, args.json, "\n".join(f"{k}: {v or 'up to date'}" for k, v in done.items()))
            return 0
        if what == "analyze":
            total = shards.sync_statistics(conn)
            conn.commit()
            emit({"images": total}, args.json, f"shards analyzed: {total} images in the collection")
            return 0
    raise InputError(f"imgsearch db shards: unknown action {what!r} (add URL | list | migrate | analyze)")
