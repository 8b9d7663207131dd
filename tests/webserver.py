"""Helpers for the web tests: the app under a real uvicorn on loopback, a loopback file server,
and a small JSON-schema check for the OpenAPI document's shapes."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from engine.config import load_settings
from engine.web.app import create_app

WRITE_KEY = "test-write-key-0123456789"
READ_KEY = "test-read-key-0123456789ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """create_app(settings) under uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, **changes):
        self.settings = dataclasses.replace(load_settings(), **changes)
        self.app = create_app(self.settings)
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class FileServer(http.server.ThreadingHTTPServer):
    """Serves a folder on 127.0.0.1 (the URL tests' 'remote' site)."""

    daemon_threads = True

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def validate(value, schema: dict, doc: dict, where: str = "$") -> None:
    """Check value against the subset of JSON Schema the OpenAPI document uses; raise AssertionError."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return validate(value, doc["components"]["schemas"][name], doc, where)
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                return validate(value, option, doc, where)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no option: {errors}")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
                  "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
                  "null": lambda v: v is None}
        assert any(checks[t](value) for t in types), f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            assert key in value, f"{where}: missing {key!r}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, doc, f"{where}.{key}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{where}: too few items"
        assert len(value) <= schema.get("maxItems", 10**9), f"{where}: too many items"
        for i, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], doc, f"{where}[{i}]")
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert value >= schema.get("minimum", float("-inf")), f"{where}: {value} < minimum"
        assert value <= schema.get("maximum", float("inf")), f"{where}: {value} > maximum"
