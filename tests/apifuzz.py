"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, against a live server.

Used by tests/test_api_fuzz.py (a short run) and scripts/fuzz_api.py (a long one). The server runs
in this process (tests/webserver.py's LiveServer), inside :func:`loopback_only`, so that the URLs
schemathesis invents (``url`` fields, ``GET /api/search?url=``) can never reach the network: no
name is resolved, a URL whose address is not loopback is refused, and any socket connect to an
address other than 127.0.0.1/::1 fails and is recorded.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time

from engine import fetch
from engine.errors import URLRefusedError

LOOPBACK = {"127.0.0.1", "::1"}


@contextlib.contextmanager
def loopback_only():
    """Patch the fetcher and sockets of this process; yields the list of refused connect attempts."""
    refused: list[str] = []
    # patched where the transport looks them up: engine.urlpolicy defines them, engine.fetch calls them
    real_check_url, real_resolve = fetch.check_url, fetch.system_resolve
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def no_resolver(host: str, port: int):
        raise OSError(f"no name resolution while fuzzing ({host!r})")

    def check_url(url, resolve=None, *, allow_private=False):
        checked = real_check_url(url, no_resolver, allow_private=allow_private)
        if any(str(a) not in LOOPBACK for a in checked.addresses):
            raise URLRefusedError(f"{url}: not fetched while fuzzing (only loopback)")
        return checked

    def guarded(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]).split("%")[0] not in LOOPBACK:
                refused.append(str(address))
                raise ConnectionRefusedError(f"no connection to {address!r} while fuzzing")
            return real(self, address)
        return connect

    fetch.check_url, fetch.system_resolve = check_url, no_resolver
    socket.socket.connect, socket.socket.connect_ex = guarded(real_connect), guarded(real_connect_ex)
    try:
        yield refused
    finally:
        fetch.check_url, fetch.system_resolve = real_check_url, real_resolve
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex


def fuzz(base_url: str, key: str, examples: int, seed: int = 0) -> dict:
    """Run every operation of base_url/openapi.json with `examples` generated cases per generation mode
    (valid and invalid inputs), the write key sent on every request. Returns the figures:
    requests, statuses per operation, and the 5xx answers (method, path, status, body)."""
    import hypothesis
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    statuses: dict[str, collections.Counter] = {}
    server_errors: list[tuple] = []
    seconds: dict[str, float] = {}
    lock = threading.Lock()
    headers = {"authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        counter = statuses.setdefault(label, collections.Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = _runner(operation.as_strategy(generation_mode=mode), base_url, headers, examples, seed,
                          lambda case, response, counter=counter, label=label: _record(
                              lock, counter, server_errors, label, case, response))
            started = time.monotonic()
            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # no invalid request exists (no parameters)
                pass
            seconds[label] = seconds.get(label, 0.0) + time.monotonic() - started
    return {"requests": sum(sum(c.values()) for c in statuses.values()),
            "statuses": {k: dict(sorted(v.items())) for k, v in statuses.items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "server_errors": server_errors}


def _record(lock, counter, server_errors, label, case, response) -> None:
    with lock:
        counter[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append((label, case.path_parameters, case.query, response.status_code, response.text[:500]))


def _runner(strategy, base_url: str, headers: dict, examples: int, seed: int, record):
    import hypothesis
    from hypothesis import HealthCheck, Phase

    @hypothesis.given(case=strategy)
    @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
                         suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                         print_blob=False)
    def run(case):
        record(case, case.call(base_url=base_url, headers=headers, timeout=60))

    return hypothesis.seed(seed)(run) if seed else run
