"""A loopback HTTP server that misbehaves on request, for tests of URL downloads.

    with LoopbackServer() as server:
        load_image(source_ref(server.url("/flaky"), base), FetchOptions(allow_private=True))
        assert server.hits["/flaky"] == 3

or as a pytest fixture: `from tests.http_fixtures import loopback_server` in a test module (function scope: every
test gets fresh hit counters). It listens on 127.0.0.1 only, so downloads from it need `allow_private=True`.

Routes (the query string is ignored when counting hits):
    /ok.png          the image given at construction (default: an 8x6 PNG of (0, 128, 255)), image/png
    /404, /500       that status, every time (unknown paths are 404 too)
    /flaky           503 for the first `flaky_failures` hits, then /ok.png
    /hang            reads the request, never answers until the server stops
    /drip            200 with Content-Length `drip_bytes`, then one byte every `drip_interval` seconds (10 s in all)
    /drip-headers    a status line, then a header one byte every `drip_interval` seconds (10 s), then the image
    /big             `big_size` bytes with a Content-Length; /big-no-length: the same, close-delimited
    /huge-length     claims Content-Length 1 GiB, sends no body, holds the connection until the server stops
    /empty           200 with an empty body
    /html            an HTML page as text/html; /lie: the same page as image/jpeg
    /png-as-text     the real image served as text/plain
    /bomb            a tiny PNG whose header claims 40000x40000
    /redirect-file   302 to file:///etc/passwd; /redirect-ftp: 302 to ftp://127.0.0.1/x.png
    /redirect-ok     302 to /ok.png; /redirect?to=URL: 302 to URL (another server, a relative path...)
    /loop            302 to itself
    /chain/N         N redirects in a row (/chain/2 -> /chain/1 -> /chain/0), then the image
    /drop            Content-Length `drop_total`, sends `drop_after` bytes, then closes the connection
    /reset           reads the request, then resets the connection (RST) without answering

Every handler that waits watches the server's stop event, so stop() (and test teardown) never blocks.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import zlib
from collections import Counter
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

HTML = b"<html><body>Sign in to view this image</body></html>"


def png_bytes(color=(0, 128, 255), size=(8, 6)) -> bytes:
    buf = BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height (CRCs right), a tiny IDAT and IEND: opens, never decodes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def self_signed_cert(folder: Path) -> tuple[Path, Path] | None:
    """(cert, key) for 127.0.0.1 made with the openssl command, or None where openssl is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class LoopbackServer:
    def __init__(
        self,
        image: bytes | None = None,
        *,
        flaky_failures: int = 2,
        big_size: int = 20_000,
        drip_bytes: int = 50,
        drip_interval: float = 0.2,
        drop_total: int = 1000,
        drop_after: int = 100,
        tls: tuple[Path, Path] | None = None,
    ):
        self.image = image if image is not None else png_bytes()
        self.flaky_failures, self.big_size = flaky_failures, big_size
        self.drip_bytes, self.drip_interval = drip_bytes, drip_interval
        self.drop_total, self.drop_after = drop_total, drop_after
        self.hits: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            # No handshake inside accept(): a client that never speaks TLS must not stall the accept loop.
            listener = self._httpd.socket
            self._httpd.socket = context.wrap_socket(listener, server_side=True, do_handshake_on_connect=False)
        self.port = self._httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases /hang, /drip, /drip-headers, /huge-length
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@pytest.fixture
def loopback_server():
    with LoopbackServer() as server:
        yield server


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer

    def handle_error(self, request, client_address):  # clients hanging up mid-response is the point here
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server.owner
        parts = urlsplit(self.path)
        srv.count(parts.path)
        route = _ROUTES.get(parts.path)
        if route is not None:
            route(self, srv)
        elif parts.path.startswith("/chain/") and parts.path[7:].isdigit():
            left = int(parts.path[7:])
            self.redirect(f"/chain/{left - 1}") if left else self.send_body(srv.image)
        elif parts.path == "/redirect":
            self.redirect(parse_qs(parts.query).get("to", ["/ok.png"])[0])
        else:
            self.send_error(404)

    # ---- building blocks

    def send_body(self, body: bytes, ctype: str = "image/png", length: bool = True, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def trickle(self, srv: LoopbackServer, data: bytes) -> None:
        """Write one byte per drip_interval until done, the client hangs up, or the server stops."""
        try:
            for byte in data:
                if srv.stopping.wait(srv.drip_interval):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:  # the client gave up: that is the point
            pass

    # ---- routes

    def ok(self, srv):
        self.send_body(srv.image)

    def flaky(self, srv):
        if srv.hits["/flaky"] <= srv.flaky_failures:
            self.send_error(503)
        else:
            self.send_body(srv.image)

    def hang(self, srv):
        srv.stopping.wait()

    def drip(self, srv):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(srv.drip_bytes))
        self.end_headers()
        self.wfile.flush()
        self.trickle(srv, b"\0" * srv.drip_bytes)

    def drip_headers(self, srv):
        self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        self.wfile.flush()
        self.trickle(srv, b"a" * srv.drip_bytes)
        if not srv.stopping.is_set():
            self.wfile.write(b"\r\nContent-Length: %d\r\n\r\n" % len(srv.image) + srv.image)

    def big(self, srv):
        self.send_body(b"\0" * srv.big_size)

    def big_no_length(self, srv):
        self.send_body(b"\0" * srv.big_size, length=False)

    def huge_length(self, srv):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        self.wfile.flush()
        srv.stopping.wait()

    def drop(self, srv):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(srv.drop_total))
        self.end_headers()
        self.wfile.write(srv.image[: srv.drop_after].ljust(srv.drop_after, b"\0"))
        self.wfile.flush()
        self.close_connection = True  # returning closes the socket mid-body

    def reset(self, srv):
        # SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


_ROUTES = {
    "/ok.png": _Handler.ok,
    "/404": lambda h, s: h.send_error(404),
    "/500": lambda h, s: h.send_error(500),
    "/flaky": _Handler.flaky,
    "/hang": _Handler.hang,
    "/drip": _Handler.drip,
    "/drip-headers": _Handler.drip_headers,
    "/big": _Handler.big,
    "/big-no-length": _Handler.big_no_length,
    "/huge-length": _Handler.huge_length,
    "/empty": lambda h, s: h.send_body(b""),
    "/html": lambda h, s: h.send_body(HTML, "text/html"),
    "/lie": lambda h, s: h.send_body(HTML, "image/jpeg"),
    "/png-as-text": lambda h, s: h.send_body(s.image, "text/plain"),
    "/bomb": lambda h, s: h.send_body(png_header(40000, 40000)),
    "/redirect-file": lambda h, s: h.redirect("file:///etc/passwd"),
    "/redirect-ftp": lambda h, s: h.redirect("ftp://127.0.0.1/x.png"),
    "/redirect-ok": lambda h, s: h.redirect("/ok.png"),
    "/loop": lambda h, s: h.redirect("/loop"),
    "/drop": _Handler.drop,
    "/reset": _Handler.reset,
}
