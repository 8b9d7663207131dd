"""The URL policy of the safe fetcher: is this URL allowed, and where does it resolve to.

``check_url(url, resolve)`` returns a ``CheckedURL`` (the normalised URL, its host, port, request
target and the addresses a connection may go to) or raises. It:

* accepts only ``http`` and ``https`` URLs with a plain host: no user name or password, no zone id,
  no ambiguous numeric host (``2130706433``, ``0x7f.1``, ``127.1``), no control characters;
* resolves the host itself, once, and refuses it if ANY of its addresses is not public
  (``check_address``: private, loopback, link-local, CGNAT, multicast, reserved, documentation,
  unspecified, site-local, unique-local, and IPv4 embedded in IPv6 by mapping, compatibility, NAT64,
  6to4 or Teredo), unless ``allow_private`` (``IMGSEARCH_ALLOW_PRIVATE_URLS=1``).

``check_address`` is pure (no network); ``check_url`` resolves only through the resolver it is
given (the system resolver, ``system_resolve``, by default). The transport that connects to the
checked addresses and nothing else is engine.fetch.

Errors: ``URLRefusedError`` (policy), ``FetchError`` (the name does not resolve). Messages name the
URL and the reason.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from .errors import FetchError, URLRefusedError

__all__ = [
    "CheckedURL",
    "Resolver",
    "check_address",
    "check_url",
    "system_resolve",
]

MAX_URL_LENGTH = 8192
ALLOW_HINT = "set IMGSEARCH_ALLOW_PRIVATE_URLS=1 to allow it"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]
"""``resolve(host, port)`` -> the IP addresses (as strings) to connect to, like getaddrinfo."""


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the policy, with the addresses a connection may go to."""

    url: str  # normalised, without fragment
    scheme: str  # "http" or "https"
    host: str  # ASCII (IDNA) host name, or an IP address (IPv6 without brackets)
    port: int
    target: bytes  # path and query, as sent
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


# --- address policy -----------------------------------------------------------------------------
def _nets(*rows: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in rows)


_V4_REFUSED = _nets(
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT (shared, 100.64/10) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved (or broadcast) address"),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

_UNSPECIFIED_V6 = ipaddress.IPv6Address("::")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
_V6_REFUSED = _nets(
    ("::ffff:0:0:0/96", "an IPv4-translated (SIIT) address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/23", "an IETF protocol assignment address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "an SRv6 SID address"),
    ("fc00::/7", "a unique-local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)


def _v4_refusal(addr: ipaddress.IPv4Address) -> str | None:
    for net, reason in _V4_REFUSED:
        if addr in net:
            return reason
    if not addr.is_global:  # whatever this Python knows beyond our table
        return "not a globally routable address"
    return None


def _v6_refusal(addr: ipaddress.IPv6Address) -> str | None:
    if addr.scope_id:
        return "a scoped (zone id) address"
    if addr == _UNSPECIFIED_V6:
        return "an unspecified address"
    if addr == _LOOPBACK_V6:
        return "a loopback address"
    if addr.ipv4_mapped is not None:
        v4 = addr.ipv4_mapped
        reason = _v4_refusal(v4)
        return f"an IPv4-mapped form of {v4}, {reason}" if reason else None
    if addr in _NAT64:  # public IPv4 through a NAT64 gateway (DNS64 networks) is fine
        v4 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        reason = _v4_refusal(v4)
        return f"a NAT64 form of {v4}, {reason}" if reason else None
    if addr in _V4_COMPATIBLE:
        v4 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        reason = _v4_refusal(v4)
        return f"an IPv4-compatible form of {v4}" + (f", {reason}" if reason else " (deprecated)")
    if addr in _TEREDO:
        server, client = addr.teredo  # type: ignore[misc]
        for v4 in (client, server):
            reason = _v4_refusal(v4)
            if reason:
                return f"a Teredo address embedding {v4}, {reason}"
        return "a Teredo tunnelling address"
    if addr in _SIXTOFOUR:
        v4 = addr.sixtofour
        reason = _v4_refusal(v4)  # type: ignore[arg-type]
        return f"a 6to4 address embedding {v4}, {reason}" if reason else "a 6to4 tunnelling address (deprecated)"
    for net, reason in _V6_REFUSED:
        if addr in net:
            return reason
    if addr not in _GLOBAL_UNICAST:
        return "a reserved address (not global unicast)"
    if addr.is_multicast or addr.is_link_local or addr.is_site_local or addr.is_loopback or addr.is_private:
        return "not a globally routable address"
    return None


def _refusal(addr: IPAddress) -> str | None:
    return _v4_refusal(addr) if addr.version == 4 else _v6_refusal(addr)  # type: ignore[arg-type]


def _as_address(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    try:
        return ipaddress.ip_address(str(ip).strip().strip("[]"))
    except ValueError:
        raise URLRefusedError(f"{ip!r} is not an IP address") from None


def check_address(ip: str | IPAddress) -> None:
    """Raise URLRefusedError unless ``ip`` is a public unicast address. Pure: no network."""
    addr = _as_address(ip)
    reason = _refusal(addr)
    if reason:
        raise URLRefusedError(f"{addr} is {reason}")


# --- URL policy -----------------------------------------------------------------------------------
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def _refuse(url: str, why: str) -> URLRefusedError:
    return URLRefusedError(f"refusing {url!r}: {why}")


def _parse(url: str) -> tuple[httpx.URL, str, int, IPAddress | None]:
    """Syntax checks. Returns (URL, ASCII host, port, the host as an address if it is one)."""
    if not isinstance(url, str):
        raise URLRefusedError(f"a URL must be text, not {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(url[:80] + "...", f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise _refuse(url, "it contains spaces, control characters or backslashes")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise _refuse(url, f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        what = f"{parsed.scheme}:" if parsed.scheme else "a URL without a scheme"
        raise _refuse(url, f"only http and https URLs are fetched, not {what}")
    authority = _AUTHORITY.match(url)
    if authority is None or not parsed.raw_host:
        raise _refuse(url, "it has no host")
    if "@" in authority.group(1) or parsed.userinfo:
        raise _refuse(url, "user names and passwords in URLs are not accepted")
    host = parsed.raw_host.decode("ascii").lower()
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise _refuse(url, f"port {port} is out of range")
    if ":" in host:  # an IPv6 literal (httpx validated the brackets)
        if "%" in host:
            raise _refuse(url, "IPv6 zone ids are not accepted")
        return parsed, host, port, ipaddress.IPv6Address(host)
    try:
        return parsed, host, port, ipaddress.IPv4Address(host)
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise _refuse(url, f"{host!r} is an ambiguous numeric host; write the IPv4 address as a.b.c.d")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _refuse(url, f"{host!r} is not a valid host name")
    return parsed, host, port, None


def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo), TCP addresses in its preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [info[4][0] for info in infos]


def check_url(url: str, resolve: Resolver | None = None, *, allow_private: bool = False) -> CheckedURL:
    """Check ``url`` against the policy and resolve its host (once) with ``resolve``.

    Raises URLRefusedError for a refused URL or address, FetchError when the name does not resolve.
    ``resolve`` defaults to the system resolver; tests inject their own (no network).
    """
    parsed, host, port, literal = _parse(url)
    clean = str(parsed.copy_with(fragment=None))
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        try:
            answers = list((resolve or system_resolve)(host, port))
        except OSError as exc:
            why = "no answer in time" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise FetchError(f"cannot fetch {clean}: cannot resolve {host!r}: {why}") from None
        seen: dict[IPAddress, None] = {}
        for answer in answers:
            try:
                seen.setdefault(ipaddress.ip_address(str(answer)), None)
            except ValueError:
                raise _refuse(clean, f"{host!r} resolved to {answer!r}, not an IP address") from None
        if not seen:
            raise FetchError(f"cannot fetch {clean}: {host!r} resolved to no address")
        addresses = tuple(seen)
    if not allow_private:
        for addr in addresses:
            try:
                check_address(addr)
            except URLRefusedError as exc:
                where = "" if literal is not None else f"{host!r} resolves to {addr}: "
                raise _refuse(clean, f"{where}{exc.message}; {ALLOW_HINT}") from None
    target = parsed.raw_path or b"/"
    return CheckedURL(clean, parsed.scheme, host, port, target, addresses)

