"""Named SQL queries, loaded from ``sql/queries.sql``.

The file is a list of blocks, each introduced by a comment line ``-- name: NAME`` (and an
optional ``-- description``). Python refers to queries by name only; parameters are always
bound (``%(name)s`` placeholders), never formatted into the text.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.M)


def parse(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def all_queries() -> dict[str, str]:
    return parse(resources.files("engine.sql").joinpath("queries.sql").read_text())


def query(name: str) -> str:
    try:
        return all_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None
