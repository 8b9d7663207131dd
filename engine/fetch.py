"""The safe URL fetcher: download one image from a URL a user typed, without becoming an SSRF proxy.

``fetch(url)`` (sync, thread-safe) and ``afetch(url)`` (async, anyio) return a ``Fetched``. Both:

* check every URL against the policy of engine.urlpolicy (``check_url``: http and https only, a
  plain host, ANY non-public address refused unless ``IMGSEARCH_ALLOW_PRIVATE_URLS=1``), which
  resolves the host once;
* connect to the addresses it checked and to nothing else (the network backend is pinned to
  them: no second DNS lookup that could rebind), while the URL keeps its host name, so the Host
  header, TLS SNI and certificate checks are those of the name;
* follow redirects themselves (``Settings.max_redirects``), re-checking all of the above per hop;
* bound every socket operation by a connect / read timeout AND the total deadline
  (``IMGSEARCH_FETCH_TIMEOUT``): a body that drips one byte a second is cut at the deadline;
* bound the body by ``IMGSEARCH_MAX_BYTES``: refused up front on a larger Content-Length, cut while
  streaming otherwise (bytes are counted as received: ``Accept-Encoding: identity``, nothing is
  decompressed).

Environment proxies (HTTP_PROXY...) are ignored on purpose: a proxy would resolve names itself.
The content type is reported, never trusted: the caller decodes the bytes.

Errors: ``URLRefusedError`` (policy), ``ImageTooLargeError`` (size), ``FetchError`` (DNS, network,
timeouts, HTTP status >= 400, too many redirects). Messages name the URL and the reason.
"""

from __future__ import annotations

import functools
import inspect
import ssl
import threading
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread
import httpcore
import httpx

from . import __version__
from .config import Settings, load_settings
from .errors import FetchError, ImageTooLargeError, URLRefusedError
from .urlpolicy import CheckedURL, Resolver, check_url, system_resolve

__all__ = [
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "Fetched",
    "afetch",
    "fetch",
]

CONNECT_TIMEOUT_S = 5.0  # per TCP connect + TLS handshake, capped by the total deadline
READ_TIMEOUT_S = 10.0  # longest silence between two reads, capped by the total deadline
USER_AGENT = f"imgsearch/{__version__} (reverse image search)".encode("ascii")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects (without fragment)
    content: bytes
    content_type: str | None  # as the server said; not trusted
    status: int


# --- limits -------------------------------------------------------------------------------------
class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def cap(self, timeout: float | None, error: type[Exception]) -> float:
        """The timeout for one socket operation: never past the deadline."""
        left = self.remaining()
        if left <= 0:
            raise error(f"total time limit of {self.seconds:g} s exceeded")
        return left if timeout is None else min(timeout, left)


def _bounded(resolve: Resolver, deadline: _Deadline) -> Resolver:
    """``resolve`` in a helper thread, abandoned at the deadline (getaddrinfo has no timeout)."""

    def call(host: str, port: int) -> list[str]:
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["result"] = list(resolve(host, port))
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        worker = threading.Thread(target=run, name=f"imgsearch-resolve {host}", daemon=True)
        worker.start()
        worker.join(max(deadline.remaining(), 0.0))
        if worker.is_alive():
            raise TimeoutError(f"no answer within {deadline.seconds:g} s")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]  # type: ignore[return-value]

    return call


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            try:
                return value.decode("utf-8").strip()
            except UnicodeDecodeError:
                return value.decode("latin-1").strip()
    return None


def _label(target: CheckedURL, first: str) -> str:
    return target.url if target.url == first else f"{target.url} (redirected from {first})"


def _after_headers(target: CheckedURL, first: str, status: int, headers: list, max_bytes: int) -> str | None:
    """Judge a response's head. Returns the next URL for a redirect, None to read the body."""
    label = _label(target, first)
    if status in REDIRECT_STATUSES:
        location = _header(headers, b"location")
        if not location:
            raise FetchError(f"cannot fetch {label}: HTTP {status} redirect without a Location")
        try:
            return str(httpx.URL(target.url).join(location))
        except (httpx.InvalidURL, ValueError) as exc:
            raise URLRefusedError(f"refusing the redirect from {label} to {location!r}: {exc}") from None
    if status >= 400:
        raise FetchError(f"cannot fetch {label}: HTTP {status}")
    if not 200 <= status < 300:
        raise FetchError(f"cannot fetch {label}: unexpected HTTP status {status}")
    declared = _header(headers, b"content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLargeError(
            f"{label}: the server announces {int(declared)} bytes, over the limit of {max_bytes} "
            "(IMGSEARCH_MAX_BYTES)")
    return None


class _Body:
    def __init__(self, label: str, max_bytes: int):
        self.label, self.max_bytes = label, max_bytes
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ImageTooLargeError(
                f"{self.label}: the response is larger than the limit of {self.max_bytes} bytes "
                "(IMGSEARCH_MAX_BYTES); download stopped")
        self.parts.append(chunk)

    def content(self) -> bytes:
        return b"".join(self.parts)


def _network_error(exc: Exception, label: str, target: CheckedURL, deadline: _Deadline,
                   connect_timeout: float, read_timeout: float) -> FetchError:
    if isinstance(exc, httpcore.TimeoutException):
        if deadline.expired:
            why = f"gave up after {deadline.seconds:g} s (total time limit, IMGSEARCH_FETCH_TIMEOUT)"
        elif isinstance(exc, httpcore.ConnectTimeout):
            why = f"connecting timed out after {connect_timeout:g} s"
        elif isinstance(exc, httpcore.ReadTimeout):
            why = f"no data for {read_timeout:g} s"
        else:
            why = f"timed out ({type(exc).__name__})"
    elif isinstance(exc, httpcore.ConnectError):
        addresses = ", ".join(map(str, target.addresses))
        why = f"cannot connect to {target.host_header} ({addresses}): {exc or 'refused'}"
    else:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return FetchError(f"cannot fetch {label}: {why}")


_NETWORK_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                   httpcore.UnsupportedProtocol)


@functools.lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    try:
        import certifi  # what httpx verifies against: same trust as the rest of the stack
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _request_parts(target: CheckedURL, connect_timeout: float, read_timeout: float):
    url = httpcore.URL(scheme=target.scheme.encode("ascii"), host=target.host.encode("ascii"),
                       port=target.port, target=target.target)
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", USER_AGENT),
        (b"Accept", b"image/*, */*;q=0.5"),
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    timeouts = {"connect": connect_timeout, "read": read_timeout, "write": read_timeout,
                "pool": connect_timeout}
    return url, headers, {"timeout": timeouts}


def _check_origin(target: CheckedURL, host: str, port: int) -> None:
    if host.strip("[]").lower() != target.host or port != target.port:  # pragma: no cover - defensive
        raise httpcore.ConnectError(f"refusing to connect to {host}:{port}, not the checked origin")


# --- sync: a pinned, deadline-bounded network backend for httpcore ------------------------------
class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline):
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      self._deadline.cap(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the checked addresses of the checked origin, whatever the URL's host."""

    def __init__(self, target: CheckedURL, deadline: _Deadline):
        self._target, self._deadline = target, deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        _check_origin(self._target, host, port)
        error: Exception = httpcore.ConnectError("no address to connect to")
        for addr in self._target.addresses:
            try:
                stream = self._inner.connect_tcp(str(addr), port, self._deadline.cap(timeout, httpcore.ConnectTimeout),
                                                 local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise httpcore.ConnectError("unix sockets are not used by the fetcher")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - used only for retries, which are off
        time.sleep(seconds)


def fetch(url: str, settings: Settings | None = None, *, resolve: Resolver | None = None,
          connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
          ssl_context: ssl.SSLContext | None = None) -> Fetched:
    """GET ``url`` under the policy and limits above. Blocking; safe to call from any thread."""
    settings = settings or load_settings()
    deadline = _Deadline(settings.fetch_timeout_s)
    resolver = _bounded(resolve or system_resolve, deadline)
    context = ssl_context or default_ssl_context()
    first = current = url
    for _ in range(settings.max_redirects + 1):
        target = _check_hop(current, first, resolver, settings)
        label = _label(target, first)
        request_url, headers, extensions = _request_parts(target, connect_timeout, read_timeout)
        try:
            with httpcore.ConnectionPool(ssl_context=context, network_backend=_PinnedBackend(target, deadline),
                                         max_connections=1, retries=0) as pool:
                with pool.stream("GET", request_url, headers=headers, extensions=extensions) as response:
                    following = _after_headers(target, first, response.status, response.headers, settings.max_bytes)
                    if following is None:
                        body = _Body(label, settings.max_bytes)
                        for chunk in response.iter_stream():
                            body.add(chunk)
                        return Fetched(target.url, body.content(), _header(response.headers, b"content-type"),
                                       response.status)
        except _NETWORK_ERRORS as exc:
            raise _network_error(exc, label, target, deadline, connect_timeout, read_timeout) from None
        current = following
    raise FetchError(f"cannot fetch {first}: more than {settings.max_redirects} redirects (next: {current})")


def _check_hop(current: str, first: str, resolver: Resolver, settings: Settings) -> CheckedURL:
    try:
        return check_url(current, resolver, allow_private=settings.allow_private_urls)
    except URLRefusedError as exc:
        if current == first:
            raise
        raise URLRefusedError(f"{exc.message} (redirected from {first})") from None


# --- async: the same over anyio ---------------------------------------------------------------------
class _AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, deadline: _Deadline):
        self._inner, self._deadline = inner, deadline

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, self._deadline.cap(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, self._deadline.cap(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname,
                                            self._deadline.cap(timeout, httpcore.ConnectTimeout))
        return _AsyncDeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, target: CheckedURL, deadline: _Deadline):
        self._target, self._deadline = target, deadline
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        _check_origin(self._target, host, port)
        error: Exception = httpcore.ConnectError("no address to connect to")
        for addr in self._target.addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(addr), port, self._deadline.cap(timeout, httpcore.ConnectTimeout), local_address,
                    socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _AsyncDeadlineStream(stream, self._deadline)
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise httpcore.ConnectError("unix sockets are not used by the fetcher")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover
        await anyio.sleep(seconds)


# abandon a hung resolver thread at the deadline (the keyword is "cancellable" before anyio 4.1)
_ABANDON = {"abandon_on_cancel" if "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters
            else "cancellable": True}


async def afetch(url: str, settings: Settings | None = None, *, resolve: Resolver | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 ssl_context: ssl.SSLContext | None = None) -> Fetched:
    """``fetch`` for async code (asyncio or trio through anyio): same policy, limits and errors."""
    settings = settings or load_settings()
    deadline = _Deadline(settings.fetch_timeout_s)
    resolver = resolve or system_resolve
    context = ssl_context or default_ssl_context()
    first = current = url
    for _ in range(settings.max_redirects + 1):
        hop = functools.partial(_check_hop, current, first, resolver, settings)
        try:
            with anyio.fail_after(max(deadline.remaining(), 0.0)):
                target = await anyio.to_thread.run_sync(hop, **_ABANDON)
        except TimeoutError:
            raise FetchError(f"cannot fetch {current}: gave up after {deadline.seconds:g} s resolving its host "
                             "(total time limit, IMGSEARCH_FETCH_TIMEOUT)") from None
        label = _label(target, first)
        request_url, headers, extensions = _request_parts(target, connect_timeout, read_timeout)
        try:
            async with httpcore.AsyncConnectionPool(ssl_context=context,
                                                    network_backend=_AsyncPinnedBackend(target, deadline),
                                                    max_connections=1, retries=0) as pool:
                async with pool.stream("GET", request_url, headers=headers, extensions=extensions) as response:
                    following = _after_headers(target, first, response.status, response.headers, settings.max_bytes)
                    if following is None:
                        body = _Body(label, settings.max_bytes)
                        async for chunk in response.aiter_stream():
                            body.add(chunk)
                        return Fetched(target.url, body.content(), _header(response.headers, b"content-type"),
                                       response.status)
        except _NETWORK_ERRORS as exc:
            raise _network_error(exc, label, target, deadline, connect_timeout, read_timeout) from None
        current = following
    raise FetchError(f"cannot fetch {first}: more than {settings.max_redirects} redirects (next: {current})")
