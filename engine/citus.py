"""`imgsearch db distribute`: a migrated schema on a Citus coordinator becomes distributed tables
co-located by image id (docs/scale.md). The statements are in sql/citus.sql.

Citus cannot run on our machines: this is tested for the statements it would run, not against
a cluster (tests/test_citus.py). ``dry_run`` returns them without running any.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import psycopg

from .errors import FeatureUnavailableError, InputError
from .queries import parse

DEFAULT_PORT = 5432


@cache
def statements() -> dict[str, str]:
    return parse(resources.files("engine.sql").joinpath("citus.sql").read_text())


def steps() -> list[tuple[str, str]]:
    """The distributing statements, in order: (name, SQL)."""
    return sorted((name, text) for name, text in statements().items() if name.startswith("step_"))


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.partition(":")
    if not host or (port and not port.isdigit()):
        raise InputError(f"a Citus node is HOST or HOST:PORT, not {node!r}")
    return host, int(port or DEFAULT_PORT)


def distribute(conn: psycopg.Connection, *, workers: list[str] = (), coordinator: str | None = None,
               dry_run: bool = False) -> list[str]:
    """Register the nodes (if given) and distribute the tables; returns the statements run (or,
    with dry_run, that would be run), the node registrations with their bound values."""
    plan: list[tuple[str, dict]] = []
    if coordinator:
        host, port = _host_port(coordinator)
        plan.append((statements()["add_coordinator"], {"host": host, "port": port}))
    for node in workers:
        host, port = _host_port(node)
        plan.append((statements()["add_worker"], {"host": host, "port": port}))
    shown = [text.replace("%(host)s", repr(p["host"])).replace("%(port)s", str(p["port"])) for text, p in plan]
    plan.extend((text, {}) for _, text in steps())
    shown.extend(text for _, text in steps())
    if dry_run:
        return shown
    if not conn.execute(statements()["citus_available"]).fetchone()["available"]:
        raise FeatureUnavailableError("this PostgreSQL server has no Citus extension: run `imgsearch db distribute` "
                                      "on a Citus coordinator (docker/compose.citus.yaml), or --dry-run to see "
                                      "the statements")
    with conn.transaction():
        for text, params in plan:
            conn.execute(text, params or None)
    return shown
