"""The safe URL fetcher: end-to-end fetches (the address/URL policy itself: test_urlpolicy.py).

NETWORK RULE: nothing here may send a packet anywhere but 127.0.0.1 / ::1. Public addresses are
only *checked* (injected resolvers, no connection). End-to-end tests talk to HTTP servers started
on loopback (tests/helpers_loopback.py). An autouse guard fails any test that resolves a name
through the system resolver or connects a socket to anything but loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from helpers_loopback import PNG, LoopbackServer
from helpers_urls import resolver

from engine import urlpolicy
from engine.config import Settings, load_settings
from engine.errors import ConfigError, FetchError, ImageTooLargeError, URLRefusedError
from engine.fetch import Fetched, afetch, fetch

LOOPBACK = {"127.0.0.1", "::1"}


# --- the network guard ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def network_guard(monkeypatch):
    """Fail on any system name lookup of a non-numeric-loopback host and any non-loopback connect."""
    connects: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            raise AssertionError(f"a test tried to resolve {name!r} with the system resolver")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded(real):
        def connect(self, address):
            host = address[0] if isinstance(address, tuple) else address
            if self.family in (socket.AF_INET, socket.AF_INET6):
                connects.append(host)
                if str(host).split("%")[0] not in LOOPBACK:
                    raise AssertionError(f"a test tried to connect to {address!r}")
            return real(self, address)
        return connect

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    return connects


def settings(**changes) -> Settings:
    base = Settings(database_url=None, home=Path("/nonexistent"), max_pixels=90_000_000, max_bytes=100_000,
                    allow_private_urls=True, fetch_timeout_s=3.0)
    return dataclasses.replace(base, **changes)


# --- settings ------------------------------------------------------------------------------------------
def test_settings_from_environment(monkeypatch):
    for name in ("IMGSEARCH_ALLOW_PRIVATE_URLS", "IMGSEARCH_FETCH_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    got = load_settings()
    assert (got.allow_private_urls, got.fetch_timeout_s, got.max_redirects) == (False, 10.0, 5)
    for raw, value in (("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("off", False)):
        monkeypatch.setenv("IMGSEARCH_ALLOW_PRIVATE_URLS", raw)
        assert load_settings().allow_private_urls is value
    monkeypatch.setenv("IMGSEARCH_ALLOW_PRIVATE_URLS", "maybe")
    with pytest.raises(ConfigError, match="IMGSEARCH_ALLOW_PRIVATE_URLS"):
        load_settings()
    monkeypatch.delenv("IMGSEARCH_ALLOW_PRIVATE_URLS")
    monkeypatch.setenv("IMGSEARCH_FETCH_TIMEOUT", "2.5")
    assert load_settings().fetch_timeout_s == 2.5
    for bad in ("abc", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("IMGSEARCH_FETCH_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="IMGSEARCH_FETCH_TIMEOUT"):
            load_settings()


# --- the loopback HTTP server (tests/helpers_loopback.py), one per module -------------------------------
@pytest.fixture(scope="module")
def module_server():
    server = LoopbackServer()
    yield server
    server.stop()


@pytest.fixture
def server(module_server):
    module_server.requests.clear()
    return module_server


# --- end to end, on loopback, with private URLs allowed ----------------------------------------------------
def test_fetch_an_image(server, network_guard):
    got = fetch(server.url("/img.png"), settings())
    assert got == Fetched(server.url("/img.png"), PNG, "image/png", 200)
    (path, headers), = server.requests
    assert path == "/img.png" and headers["Accept-Encoding"] == "identity"
    assert headers["User-Agent"].startswith("imgsearch/") and headers["Host"] == f"127.0.0.1:{server.port}"
    assert "Authorization" not in headers and "Cookie" not in headers
    assert network_guard == ["127.0.0.1"]


def test_allow_private_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_ALLOW_PRIVATE_URLS", "1")
    assert fetch(server.url("/img.png")).content == PNG
    monkeypatch.setenv("IMGSEARCH_ALLOW_PRIVATE_URLS", "0")
    with pytest.raises(URLRefusedError):
        fetch(server.url("/img.png"))


def test_content_type_is_reported_not_trusted(server):
    got = fetch(server.url("/lies"), settings())
    assert got.content == PNG and got.content_type == "text/html; charset=utf-8"


def test_redirect_chain_is_followed(server):
    got = fetch(server.url("/redirect/5#top"), settings())  # exactly max_redirects hops
    assert got.content == PNG and got.status == 200 and got.url == server.url("/redirect/0")
    assert [path for path, _ in server.requests] == [f"/redirect/{n}" for n in range(5, -1, -1)]


def test_too_many_redirects(server):
    with pytest.raises(FetchError, match=r"more than 5 redirects") as info:
        fetch(server.url("/redirect/6"), settings())
    assert server.url("/redirect/6") in info.value.message
    assert len(server.requests) == 6  # and the 7th URL was never requested
    with pytest.raises(FetchError, match="more than 2 redirects"):
        fetch(server.url("/redirect/3"), settings(max_redirects=2))


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/",
                                      "data:image/png;base64,iVBORw0KGgo=", "http://user:pw@127.0.0.1/x",
                                      "http://2130706433/", "http://127.0.0.1\\@example.com/"])
def test_redirect_to_a_refused_url(server, location):
    with pytest.raises(URLRefusedError, match="redirected from"):
        fetch(server.url("/to?" + urllib.parse.urlencode({"u": location})), settings())
    assert len(server.requests) == 1


def test_redirect_without_location_and_odd_statuses(server):
    with pytest.raises(FetchError, match="without a Location"):
        fetch(server.url("/to"), settings())
    with pytest.raises(FetchError, match="unexpected HTTP status 304"):
        fetch(server.url("/status/304"), settings())


@pytest.mark.parametrize("code", [400, 403, 404, 410, 500, 503])
def test_http_errors(server, code):
    url = server.url(f"/status/{code}")
    with pytest.raises(FetchError, match=f"HTTP {code}") as info:
        fetch(url, settings())
    assert url in info.value.message and not isinstance(info.value, URLRefusedError)


@pytest.mark.parametrize("mode", ["length", "chunked", "close"])
def test_byte_limit_boundary(server, mode):
    got = fetch(server.url(f"/bytes/1000?mode={mode}"), settings(max_bytes=1000))
    assert got.content == b"x" * 1000
    with pytest.raises(ImageTooLargeError, match="IMGSEARCH_MAX_BYTES"):
        fetch(server.url(f"/bytes/1001?mode={mode}"), settings(max_bytes=1000))


@pytest.mark.parametrize("mode", ["chunked", "close"])
def test_endless_body_without_content_length_is_cut_while_streaming(server, mode):
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError, match="download stopped") as info:
        fetch(server.url(f"/endless?mode={mode}"), settings(max_bytes=100_000))
    assert time.monotonic() - started < 2 and info.value.http_status == 413


def test_large_content_length_is_refused_before_reading(server):
    started = time.monotonic()  # the server stalls after the headers: reading the body would time out
    with pytest.raises(ImageTooLargeError, match="announces 1000000000 bytes"):
        fetch(server.url("/declared/1000000000"), settings(max_bytes=100_000))
    assert time.monotonic() - started < 1


def test_lying_content_length(server):
    # too short: the framing is the declared length; the rest of the megabyte is never read
    got = fetch(server.url("/short-lie"), settings(max_bytes=1000))
    assert got.content == b"s" * 100
    # too long: the body ends early, a protocol error
    with pytest.raises(FetchError, match="long-lie"):
        fetch(server.url("/long-lie"), settings())


def test_slow_drip_is_cut_by_the_total_deadline(server):
    started = time.monotonic()
    with pytest.raises(FetchError, match="total time limit") as info:
        fetch(server.url("/drip"), settings(fetch_timeout_s=1.0))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed
    assert server.url("/drip") in info.value.message


def test_silent_server_is_cut_by_the_deadline_and_the_read_timeout(server):
    started = time.monotonic()
    with pytest.raises(FetchError, match="total time limit"):
        fetch(server.url("/mute"), settings(fetch_timeout_s=0.8))
    assert time.monotonic() - started < 1.8
    started = time.monotonic()
    with pytest.raises(FetchError, match="no data for 0.3 s"):
        fetch(server.url("/stall"), settings(fetch_timeout_s=5.0), read_timeout=0.3)
    assert time.monotonic() - started < 1.3


def test_slow_resolver_is_cut_by_the_deadline():
    release = threading.Event()

    def hanging(host, port):
        release.wait(5)
        return ["127.0.0.1"]

    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="cannot resolve 'slow.example'"):
            fetch("http://slow.example/a.png", settings(fetch_timeout_s=0.5), resolve=hanging)
        assert time.monotonic() - started < 1.5
    finally:
        release.set()


def test_connection_refused():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/a.png", settings())


# --- pinning: one lookup per hop, the Host header and SNI of the name, the checked address only -------------
def test_host_name_is_resolved_once_and_pinned(server, network_guard):
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["10.9.8.7"]])  # a rebinding resolver: the second answer must never be used

    def rebinding(host, port):
        calls.append(host)
        return next(answers)

    got = fetch(f"http://images.test:{server.port}/host", settings(), resolve=rebinding)
    assert got.content == f"images.test:{server.port}".encode()  # Host header of the name, not the address
    assert calls == ["images.test"] and network_guard == ["127.0.0.1"]


def test_every_hop_is_resolved_once(server):
    calls: list[str] = []
    names = resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]}, calls)
    target = f"http://b.test:{server.port}/img.png"
    got = fetch(f"http://a.test:{server.port}/to?" + urllib.parse.urlencode({"u": target}), settings(), resolve=names)
    assert got.url == target and got.content == PNG and calls == ["a.test", "b.test"]


def test_addresses_are_tried_in_order(server, network_guard):
    # nothing listens on [::1]:port (the server is IPv4 only), so the second checked address serves
    got = fetch(f"http://two.test:{server.port}/img.png", settings(),
                resolve=resolver({"two.test": ["::1", "127.0.0.1"]}))
    assert got.content == PNG and network_guard == ["::1", "127.0.0.1"]


# --- policy on: loopback is refused before any connection -------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "images.test"])
def test_loopback_refused_before_connecting(server, network_guard, host):
    names = resolver({"localhost": ["127.0.0.1"], "images.test": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(URLRefusedError, match="loopback"):
        fetch(server.url("/img.png", host), settings(allow_private_urls=False), resolve=names)
    assert server.requests == [] and network_guard == []


def test_redirect_to_a_private_address_is_refused(server, network_guard, monkeypatch):
    """Every hop is re-checked: here loopback plays a public host, and its redirect points inside."""
    real = urlpolicy.check_address

    def loopback_is_public(ip):
        if str(ip) != "127.0.0.1":
            real(ip)

    monkeypatch.setattr(urlpolicy, "check_address", loopback_is_public)
    names = resolver({"cdn.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]})
    for inside in ("http://internal.test/secret", "http://169.254.169.254/latest/meta-data/",
                   "http://[::ffff:10.0.0.1]/", f"http://[::1]:{server.port}/img.png"):
        server.requests.clear()
        network_guard.clear()
        first = f"http://cdn.test:{server.port}/to?" + urllib.parse.urlencode({"u": inside})
        with pytest.raises(URLRefusedError, match="redirected from") as info:
            fetch(first, settings(allow_private_urls=False), resolve=names)
        assert first in info.value.message
        assert len(server.requests) == 1 and network_guard == ["127.0.0.1"]


# --- IPv6 loopback and TLS ---------------------------------------------------------------------------------
def test_ipv6_loopback():
    try:
        v6 = LoopbackServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        got = fetch(v6.url("/host"), settings())
        assert got.content == f"[::1]:{v6.port}".encode()
        with pytest.raises(URLRefusedError, match="loopback"):
            fetch(v6.url("/img.png"), settings(allow_private_urls=False))
    finally:
        v6.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
                   check=True, capture_output=True)
    return key, cert


def test_https_pins_the_address_but_verifies_the_name(tls_files, network_guard):
    key, cert = tls_files
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_side.sni_callback = lambda sock, name, context: sni.append(name)
    tls = LoopbackServer(tls=server_side)
    client = ssl.create_default_context(cafile=str(cert))
    names = resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    try:
        got = fetch(f"https://images.test:{tls.port}/host", settings(), resolve=names, ssl_context=client)
        assert got.content == f"images.test:{tls.port}".encode() and sni == ["images.test"]
        assert network_guard == ["127.0.0.1"]
        with pytest.raises(FetchError, match="cannot connect"):  # certificate is for images.test
            fetch(f"https://other.test:{tls.port}/host", settings(), resolve=names, ssl_context=client)
        with pytest.raises(FetchError, match="cannot connect"):  # default trust store: self-signed refused
            fetch(f"https://images.test:{tls.port}/host", settings(), resolve=names)
    finally:
        tls.stop()


# --- the async variant shares policy and limits ------------------------------------------------------------
def test_afetch(server, network_guard):
    got = asyncio.run(afetch(server.url("/redirect/2"), settings()))
    assert got.content == PNG and got.url == server.url("/redirect/0")
    with pytest.raises(ImageTooLargeError):
        asyncio.run(afetch(server.url("/endless"), settings()))
    with pytest.raises(FetchError, match="HTTP 404"):
        asyncio.run(afetch(server.url("/status/404"), settings()))
    with pytest.raises(FetchError, match="more than 5 redirects"):
        asyncio.run(afetch(server.url("/redirect/6"), settings()))
    started = time.monotonic()
    with pytest.raises(FetchError, match="total time limit"):
        asyncio.run(afetch(server.url("/drip"), settings(fetch_timeout_s=1.0)))
    assert time.monotonic() - started < 2.0
    server.requests.clear()
    network_guard.clear()
    with pytest.raises(URLRefusedError, match="loopback"):
        asyncio.run(afetch(server.url("/img.png"), settings(allow_private_urls=False)))
    assert server.requests == [] and network_guard == []
    calls: list[str] = []
    got = asyncio.run(afetch(f"http://images.test:{server.port}/host", settings(),
                             resolve=resolver({"images.test": ["127.0.0.1"]}, calls)))
    assert got.content == f"images.test:{server.port}".encode() and calls == ["images.test"]


def test_fetch_from_threads(server):
    results: list[bytes] = []
    workers = [threading.Thread(target=lambda: results.append(fetch(server.url("/img.png"), settings()).content))
               for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert results == [PNG] * 8
