"""A resolver for the URL tests (test_urlpolicy.py, test_fetch.py): host names answered from a table."""

from __future__ import annotations


def resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A resolver that answers ``table[host]`` and records each host asked for in ``calls``."""
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return table[host]
    return resolve
