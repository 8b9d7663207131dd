"""API keys, the request body limit, the request time limit, and per-request metrics.

Keys: a client sends ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Writes need one of
IMGSEARCH_API_KEYS (none set: writes are refused); reads need one of IMGSEARCH_READ_KEYS or
IMGSEARCH_API_KEYS when IMGSEARCH_READ_KEYS is set. Keys are compared as SHA-256 digests with
``hmac.compare_digest``, against every configured key (no early exit), so neither the timing nor
the length of a key leaks. No key -> 401; a key that does not allow the request -> 403.

``Guard`` is a plain ASGI middleware around the whole app: it refuses a body over
IMGSEARCH_MAX_UPLOAD_BYTES (413: by Content-Length before reading, or while streaming), answers
408 when the client has not sent its body within IMGSEARCH_REQUEST_TIMEOUT and 503 when the
answer is not ready by then, and counts every request for /metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time

import anyio

from ..config import Settings
from ..errors import AuthError, ForbiddenError, ImageTooLargeError, ImgsearchError, RequestTimeoutError, ServerBusyError
from .metrics import Metrics

log = logging.getLogger("imgsearch.web")

READ, WRITE, OPEN = "read", "write", "open"
_CONVERTOR = re.compile(r"{([^:}]+):[^}]+}")
KEY_HINT = "send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class Keys:
    def __init__(self, settings: Settings):
        self.write = tuple(_digest(k) for k in settings.api_keys)
        self.read = tuple(_digest(k) for k in settings.read_keys)

    @staticmethod
    def _matches(given: bytes, keys: tuple[bytes, ...]) -> bool:
        found = False
        for key in keys:  # every key is compared: the time does not depend on which one matched
            found |= hmac.compare_digest(given, key)
        return found

    def check(self, access: str, presented: str | None) -> None:
        """Raise AuthError (401) or ForbiddenError (403) unless ``presented`` allows ``access``."""
        if access == OPEN:
            return
        if access == WRITE and not self.write:
            raise ForbiddenError("writes are disabled on this server (set IMGSEARCH_API_KEYS to enable them)")
        if access == READ and not self.read:
            return
        if presented is None:
            raise AuthError(f"this request needs an API key: {KEY_HINT}")
        given = _digest(presented)
        allowed = self.write if access == WRITE else self.read + self.write
        if not self._matches(given, allowed):
            raise ForbiddenError(f"the API key does not allow {'writes' if access == WRITE else 'reads'}")


def presented_key(headers) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return auth.strip()  # a malformed header is a wrong key, not a missing one
    key = headers.get("x-api-key")
    return key.strip() if key is not None else None


def error_body(exc: ImgsearchError, path: str = "") -> bytes:
    from . import tineye  # imports this module

    if tineye.is_tineye(path):  # TinEye's clients read TinEye's error shape
        return json.dumps(tineye.error_body(exc.http_status, exc.message)).encode()
    return json.dumps({"error": exc.to_dict()}).encode()


class Guard:
    def __init__(self, app, settings: Settings, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": None, "body_done": False, "received": 0}
        limit = self.settings.max_upload_bytes

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise ImageTooLargeError(f"the request body is larger than the limit of {limit:,} bytes "
                                             "(IMGSEARCH_MAX_UPLOAD_BYTES)")
                if not message.get("more_body", False):
                    state["body_done"] = True
            return message

        self.metrics.in_flight.inc(amount=1)
        try:
            declared = self._content_length(scope)
            if declared is not None and declared > limit:
                await self._error(scope, send, state, ImageTooLargeError(
                    f"the request body announces {declared:,} bytes, more than the limit of {limit:,} bytes "
                    "(IMGSEARCH_MAX_UPLOAD_BYTES)"), close=True)
                return
            with anyio.move_on_after(self.settings.request_timeout_s) as deadline:
                await self.app(scope, limited_receive, guarded_send)
            if deadline.cancelled_caught and state["status"] is None:
                seconds = f"{self.settings.request_timeout_s:g}"
                if not state["body_done"] and scope["method"] not in ("GET", "HEAD", "DELETE"):
                    exc: ImgsearchError = RequestTimeoutError(
                        f"the request body did not arrive within {seconds} s (IMGSEARCH_REQUEST_TIMEOUT)")
                else:
                    exc = ServerBusyError(f"no answer within {seconds} s (IMGSEARCH_REQUEST_TIMEOUT); "
                                          "the server is busy, try again")
                await self._error(scope, send, state, exc, close=True)
        finally:
            self.metrics.in_flight.inc(amount=-1)
            route = scope.get("route")
            path = _CONVERTOR.sub(r"{\1}", getattr(route, "path", None) or "unmatched")
            self.metrics.requests.inc(scope["method"], path, str(state["status"] or 0))
            self.metrics.latency.observe(time.perf_counter() - started, scope["method"], path)

    @staticmethod
    def _content_length(scope) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    @staticmethod
    async def _error(scope, send, state, exc: ImgsearchError, close: bool = False) -> None:
        body = error_body(exc, scope.get("path", ""))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:  # the body was not read: the connection cannot carry another request
            headers.append((b"connection", b"close"))
        if isinstance(exc, ServerBusyError):
            headers.append((b"retry-after", b"1"))
        state["status"] = exc.http_status
        await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
