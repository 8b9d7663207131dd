"""A loopback-only HTTP server for the fetcher's end-to-end tests (test_fetch.py).

It must only ever bind 127.0.0.1 or ::1: nothing in those tests may send a packet anywhere else. Each path
names a route (``/img.png``, ``/redirect/3``, ``/bytes/1000?mode=chunked``, ``/drip``...) that plays one way
a server can behave, good or hostile; ``server.requests`` records what was asked.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
import urllib.parse

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.server.requests.append((self.path, dict(self.headers)))
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        try:
            getattr(self, "route_" + parts[0].split(".")[0].replace("-", "_"), self.route_missing)(*parts[1:], **query)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True  # the client hung up, as it should in several tests

    def send(self, status, body=b"", content_type="application/octet-stream", headers=(), length=True):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_missing(self, *args, **kwargs):
        self.send(404, b"not here", "text/plain")

    def route_img(self, *args):
        self.send(200, PNG, "image/png")

    def route_lies(self, *args):  # content type is passed along, not trusted
        self.send(200, PNG, "text/html; charset=utf-8")

    def route_host(self, *args):
        self.send(200, self.headers["Host"].encode(), "text/plain")

    def route_status(self, code):
        self.send(int(code), b"status body", "text/plain")

    def route_redirect(self, n):  # a chain of n redirects, alternating relative and absolute Locations
        n = int(n)
        if n == 0:
            return self.route_img()
        location = f"/redirect/{n - 1}" if n % 2 else f"http://{self.headers['Host']}/redirect/{n - 1}#frag"
        self.send(302, headers=[("Location", location)])

    def route_to(self, *args, u="", status="302"):
        self.send(int(status), headers=[("Location", u)] if u else [])

    def route_bytes(self, n, mode="length"):
        body = b"x" * int(n)
        if mode == "length":
            return self.send(200, body)
        if mode == "chunked":
            self.send(200, headers=[("Transfer-Encoding", "chunked")], length=False)
            for i in range(0, len(body), 4096):
                piece = body[i:i + 4096]
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.close_connection = True  # mode == "close": the body ends when the connection does
        self.send(200, headers=[("Connection", "close")], length=False)
        self.wfile.write(body)

    def route_endless(self, mode="chunked"):  # far more than any limit, stops when the client hangs up
        self.close_connection = True
        chunk = b"y" * 65536
        if mode == "chunked":
            self.send(200, headers=[("Transfer-Encoding", "chunked")], length=False)
            for _ in range(320):  # 20 MiB at most
                self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.send(200, headers=[("Connection", "close")], length=False)
            for _ in range(320):
                self.wfile.write(chunk)

    def route_declared(self, n):  # announces n bytes, then stalls: only an early refusal is fast
        self.close_connection = True
        self.send(200, headers=[("Content-Length", n)], length=False)
        self.wfile.write(b"z" * 10)
        self.wfile.flush()
        time.sleep(2)

    def route_short_lie(self, *args):  # says 100 bytes, sends a megabyte
        self.close_connection = True
        self.send(200, headers=[("Content-Length", "100")], length=False)
        self.wfile.write(b"s" * 1_000_000)

    def route_long_lie(self, *args):  # says 500 bytes, sends 100 and hangs up
        self.close_connection = True
        self.send(200, headers=[("Content-Length", "500")], length=False)
        self.wfile.write(b"l" * 100)

    def route_drip(self, *args):  # one byte every 50 ms: no read ever times out
        self.close_connection = True
        self.send(200, headers=[("Content-Length", "100000")], length=False)
        for _ in range(80):  # 4 s at most
            self.wfile.write(b"d")
            self.wfile.flush()
            time.sleep(0.05)

    def route_stall(self, *args):  # headers, then silence
        self.close_connection = True
        self.send(200, headers=[("Content-Length", "1000")], length=False)
        self.wfile.flush()
        time.sleep(3)

    def route_mute(self, *args):  # not even headers
        self.close_connection = True
        time.sleep(3)


class LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, host="127.0.0.1", tls: ssl.SSLContext | None = None):
        if host not in ("127.0.0.1", "::1"):
            raise ValueError(f"a loopback server binds 127.0.0.1 or ::1 only, not {host!r}")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), Handler)
        self.requests: list[tuple[str, dict]] = []
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str | None = None) -> str:
        host = host or (f"[{self.server_address[0]}]" if ":" in self.server_address[0] else self.server_address[0])
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self):
        self.shutdown()
        self.server_close()
