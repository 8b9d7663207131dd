"""The URL policy (engine.urlpolicy): which URLs and addresses are refused. Pure: no network.

check_address is a table of addresses; check_url gets injected resolvers (or none, for literals)
and only *checks* public addresses, it never connects. An autouse guard fails any test that
resolves a name through the system resolver or opens a connection at all. The same policy end to
end, through the fetcher on loopback, is in test_fetch.py.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest
from helpers_urls import resolver

from engine.errors import FetchError, URLRefusedError
from engine.urlpolicy import check_address, check_url


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail on any system name lookup and any socket connect: the policy never needs the network."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a policy test touched the network: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def never_resolve(host: str, port: int):
    raise AssertionError(f"resolver called for {host!r}")


# --- check_address: a table, no network -------------------------------------------------------------
REFUSED = {
    # IPv4
    "0.0.0.0": "unspecified", "0.1.2.3": "unspecified",
    "10.0.0.1": "private", "172.16.5.4": "private", "172.31.255.255": "private", "192.168.1.1": "private",
    "127.0.0.1": "loopback", "127.255.255.254": "loopback",
    "169.254.169.254": "link-local", "169.254.0.1": "link-local",
    "100.64.0.1": "carrier-grade NAT", "100.127.255.254": "carrier-grade NAT",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast",
    "240.0.0.1": "reserved", "255.255.255.255": "broadcast",
    "192.0.2.1": "documentation", "198.51.100.7": "documentation", "203.0.113.9": "documentation",
    "198.18.0.1": "benchmarking", "192.0.0.8": "IETF",
    # IPv6
    "::": "unspecified", "::1": "loopback",
    "fe80::1": "link-local", "febf:ffff::1": "link-local", "fec0::1": "site-local", "feff::1": "site-local",
    "fc00::1": "unique-local", "fd12:3456:789a::1": "unique-local",
    "ff02::1": "multicast", "ff0e::1": "multicast", "2001:db8::1": "documentation",
    "100::1": "discard", "4000::1": "reserved", "::ffff:0:7f00:1": "IPv4-translated",
    # IPv4 hidden in IPv6
    "::ffff:127.0.0.1": "IPv4-mapped form of 127.0.0.1, a loopback",
    "::ffff:10.0.0.1": "IPv4-mapped form of 10.0.0.1, a private",
    "::ffff:169.254.169.254": "link-local", "::ffff:100.64.0.1": "carrier-grade NAT",
    "::127.0.0.1": "IPv4-compatible form of 127.0.0.1, a loopback",
    "::8.8.8.8": "IPv4-compatible form of 8.8.8.8 (deprecated)",
    "64:ff9b::127.0.0.1": "NAT64 form of 127.0.0.1", "64:ff9b::192.168.0.1": "NAT64 form of 192.168.0.1",
    "64:ff9b:1::1": "local-use NAT64",
    "2002:7f00:1::1": "6to4 address embedding 127.0.0.1", "2002:a00:1::": "6to4 address embedding 10.0.0.1",
    "2002:a9fe:a9fe::1": "embedding 169.254.169.254", "2002:808:808::1": "6to4 tunnelling",
    # Teredo: server 65.54.227.120, client 127.0.0.1 (stored inverted: 0x80ff:0xfffe)
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo address embedding 127.0.0.1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7": "Teredo",  # client 8.8.8.8: still a tunnel, refused
    "fe80::1%eth0": "zone id",
}
ALLOWED = [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1", "169.253.255.255",
    "2606:2800:220:1:248:1893:25c8:1946", "2a00:1450:4001:80b::200e", "::ffff:93.184.216.34",
    "64:ff9b::93.184.216.34",  # NAT64 of a public address (DNS64 networks)
]


@pytest.mark.parametrize("ip, reason", sorted(REFUSED.items()))
def test_check_address_refuses(ip, reason):
    with pytest.raises(URLRefusedError, match=re.escape(reason)) as info:
        check_address(ip)
    assert info.value.code == "url_refused" and info.value.http_status == 400


@pytest.mark.parametrize("ip", ALLOWED)
def test_check_address_allows_public(ip):
    assert check_address(ip) is None
    assert check_address(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize("junk", ["", "example.com", "999.1.1.1", "1.2.3", "[::1"])
def test_check_address_refuses_non_addresses(junk):
    with pytest.raises(URLRefusedError):
        check_address(junk)


# --- check_url: schemes, userinfo, hosts, ports; injected resolvers, no network ---------------------------
PUBLIC = resolver({"images.example": ["93.184.216.34"], "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
                   "xn--bcher-kva.example": ["93.184.216.34"], "dual.example": ["93.184.216.34",
                                                                                 "2606:2800:220:1:248:1893:25c8:1946"]})


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://images.example/a.jpg", "data:image/png;base64,iVBORw0KGgo=", "gopher://images.example/",
    "javascript:alert(1)", "ws://images.example/", "images.example/a.jpg", "//images.example/a.jpg", "/a.jpg",
    "http:images.example", "http:///a.jpg", "", "   ",
])
def test_check_url_refuses_schemes_and_schemeless(url):
    with pytest.raises(URLRefusedError):
        check_url(url, never_resolve)


@pytest.mark.parametrize("url", [
    "http://user@images.example/", "http://user:pw@images.example/", "http://@images.example/",
    "http://images.example@127.0.0.1/", "http://images.example:80@127.0.0.1/",
    "http://127.0.0.1\\@images.example/", "http://127.0.0.1%5C@images.example/",
    "https://a%40b@images.example/",
])
def test_check_url_refuses_userinfo_tricks(url):
    with pytest.raises(URLRefusedError):
        check_url(url, never_resolve, allow_private=True)


@pytest.mark.parametrize("url, why", [
    ("http://images.example:0/", "port 0"), ("http://images.example:65536/", "port 65536"),
    ("http://images.example:99999999/", "out of range"), ("http://images.example:abc/", "valid URL"),
    ("http://2130706433/", "ambiguous numeric"), ("http://0x7f000001/", "ambiguous numeric"),
    ("http://0x7f.0.0.1/", "ambiguous numeric"), ("http://127.1/", "ambiguous numeric"),
    ("http://017700000001/", "ambiguous numeric"), ("http://127.000.000.001/", "valid URL"),
    ("http://[fe80::1%25eth0]/", "zone id"), ("http://%6c%6fcalhost/", "not a valid host name"),
    ("http://images.example\t/", "control characters"), ("http://images .example/", "spaces"),
    ("http://images.example/a\nb", "control characters"), ("http://" + "a" * 9000 + ".example/", "longer than"),
    ("http://exa$mple.com/", "not a valid host name"),
])
def test_check_url_refuses_bad_hosts_and_ports(url, why):
    with pytest.raises(URLRefusedError, match=why):
        check_url(url, never_resolve, allow_private=True)


def test_check_url_accepts_public_hosts_and_ports():
    got = check_url("HTTPS://Images.Example:8443/a/b.jpg?x=1&y=%20#frag", PUBLIC)
    assert (got.scheme, got.host, got.port, got.target) == ("https", "images.example", 8443, b"/a/b.jpg?x=1&y=%20")
    assert got.url == "https://images.example:8443/a/b.jpg?x=1&y=%20"  # no fragment
    assert got.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert got.host_header == "images.example:8443"
    assert check_url("http://images.example:80/", PUBLIC).host_header == "images.example"
    assert check_url("http://images.example:/", PUBLIC).port == 80
    assert check_url("http://bücher.example/x", PUBLIC).host == "xn--bcher-kva.example"  # IDNA, resolved as such
    dotted = check_url("http://images.example./x", resolver({"images.example.": ["93.184.216.34"]}))
    assert dotted.host == "images.example." and dotted.host_header == "images.example."


def test_check_url_literals_do_not_resolve():
    got = check_url("http://93.184.216.34:8080/x.png", never_resolve)
    assert got.addresses == (ipaddress.ip_address("93.184.216.34"),) and got.host_header == "93.184.216.34:8080"
    got = check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/x.png", never_resolve)
    assert got.host == "2606:2800:220:1:248:1893:25c8:1946"
    assert got.host_header == "[2606:2800:220:1:248:1893:25c8:1946]"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.0.0.1:8000/x", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[fe80::1]/", "http://[fd00::1]/",
    "http://0.0.0.0/", "http://100.64.1.1/", "http://[2002:7f00:1::1]/",
])
def test_check_url_refuses_private_literals_without_resolving(url):
    with pytest.raises(URLRefusedError, match="IMGSEARCH_ALLOW_PRIVATE_URLS"):
        check_url(url, never_resolve)
    assert check_url(url, never_resolve, allow_private=True).addresses  # the switch lets them through


def test_check_url_refuses_a_host_with_any_private_address():
    for mix in (["93.184.216.34", "10.0.0.1"], ["127.0.0.1", "93.184.216.34"],
                ["2606:2800:220:1:248:1893:25c8:1946", "::1"], ["93.184.216.34", "::ffff:169.254.169.254"]):
        with pytest.raises(URLRefusedError, match="'mixed.example' resolves to"):
            check_url("http://mixed.example/a.jpg", resolver({"mixed.example": mix}))
    names = resolver({"localhost": ["127.0.0.1", "::1"], "metadata.example": ["169.254.169.254"]})
    for url in ("http://localhost/", "http://metadata.example/computeMetadata/v1/"):
        with pytest.raises(URLRefusedError):
            check_url(url, names)
    both = check_url("http://dual.example/", PUBLIC)
    assert [str(a) for a in both.addresses] == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def test_check_url_resolver_failures_are_fetch_errors():
    def broken(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(FetchError, match="cannot resolve 'nowhere.example'") as info:
        check_url("http://nowhere.example/", broken)
    assert not isinstance(info.value, URLRefusedError)
    with pytest.raises(FetchError, match="no address"):
        check_url("http://empty.example/", resolver({"empty.example": []}))
    with pytest.raises(URLRefusedError, match="not an IP address"):
        check_url("http://junk.example/", resolver({"junk.example": ["not-an-ip"]}))

