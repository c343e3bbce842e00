"""Fetching: an http(s) URL in, its bytes out, or `FetchError` with a short reason a user can act on.

Hazards handled here, because a manifest may list thousands of URLs from anywhere and runs unattended:
- one deadline for the whole download (connect, every redirect hop, every retry, the body): requests' own
  timeout bounds each socket read only, so a server sending a byte a second would never trip it;
- a byte cap enforced while streaming;
- redirects followed by hand, http and https only on every hop;
- retries with exponential backoff for what may pass (a stalled attempt, HTTP 5xx, a dropped connection), never
  for 4xx, never past the deadline;
- no loopback, private, link-local... addresses unless allowed: the check runs on the address each socket is
  actually connected to, so a public name resolving (or rebinding) to 127.0.0.1 gets no further than connect();
- a stop: the downloads of a thread working under `Cancellation.applies()` are cut once it is set (a run stopping
  does not wait for a slow server).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.poolmanager import PoolManager

from .fetch_options import PRIVATE_ADDRESS, FetchError, FetchOptions, human_bytes

# identity: the byte cap then counts real bytes, with no decompression in between (images are compressed).
_HEADERS = {"Accept-Encoding": "identity"}
_CHUNK = 64 * 1024


def fetch_url(url: str, options: FetchOptions = FetchOptions()) -> bytes:
    """The body of an http(s) URL, within options' deadline, size cap, redirect and address rules."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise FetchError("only http:// and https:// URLs can be fetched")
    download = _Download(options)
    cancellation = getattr(_local, "cancellation", None)
    if cancellation is not None:
        cancellation.track(download)
    # The per-read timeouts below cannot bound a server that drips its headers or TLS handshake byte by byte:
    # at the deadline this watchdog shuts every socket of the download, which ends whatever read is blocked.
    watchdog = threading.Timer(min(options.timeout_s, threading.TIMEOUT_MAX), download.cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        return _with_retries(url, download)
    finally:
        watchdog.cancel()
        download.close()
        if cancellation is not None:
            cancellation.untrack(download)


_local = threading.local()


class Cancellation:
    """A stop for downloads: those of a thread inside `with cancellation.applies():` are cut (their sockets shut)
    once `set()` is called from any thread, and any started after it fails at once, with "download stopped"."""

    def __init__(self):
        self._set = threading.Event()
        self._lock = threading.Lock()
        self._downloads: set[_Download] = set()
        self._children: list[Cancellation] = []

    def is_set(self) -> bool:
        return self._set.is_set()

    def set(self) -> None:
        with self._lock:
            self._set.set()
            downloads, children = list(self._downloads), list(self._children)
        for download in downloads:
            download.cancel()
        for child in children:
            child.set()

    def child(self) -> Cancellation:
        """A cancellation set with this one, and also on its own: for downloads other threads make on behalf of
        one this one applies to."""
        child = Cancellation()
        with self._lock:
            self._children.append(child)
            cancelled = self._set.is_set()
        if cancelled:
            child.set()
        return child

    @staticmethod
    def current() -> Cancellation | None:
        """The one that applies to this thread's downloads, if any."""
        return getattr(_local, "cancellation", None)

    @contextmanager
    def applies(self):
        previous = getattr(_local, "cancellation", None)
        _local.cancellation = self
        try:
            yield
        finally:
            _local.cancellation = previous

    def track(self, download: _Download) -> None:
        with self._lock:
            self._downloads.add(download)
            cancelled = self._set.is_set()
        if cancelled:
            download.cancel()

    def untrack(self, download: _Download) -> None:
        with self._lock:
            self._downloads.discard(download)


# ---------------------------------------------------------------- addresses


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast IP address (an IPv6 one wrapping an IPv4 one is judged by that)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone: fe80::1%eth0
    except ValueError:
        return False
    if ip.version == 6:
        # ::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket; 6to4 and NAT64 embed an IPv4 address too.
        embedded = ip.ipv4_mapped or ip.sixtofour or _nat64_ipv4(ip)
        if embedded is not None:
            return is_public_address(str(embedded))
    odd = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    return ip.is_global and not odd  # is_global alone lets global-scope multicast and some reserved ranges through


def refused_unfetched(url: str, options: FetchOptions) -> str | None:
    """Why `url` is refused whenever it is fetched, known without a request ("a private address": its host is one
    written out, or localhost, and private URLs are not allowed). None otherwise (a name may resolve anywhere)."""
    if options.allow_private:
        return None
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or _literal_private(host):
        return PRIVATE_ADDRESS
    return None


def _literal_private(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return not is_public_address(host)


def _nat64_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class PrivateAddressRefused(Exception):
    """Raised inside urllib3 at connect time; deliberately not an OSError, so nothing on the way retries it."""

    def __init__(self, address: str):
        super().__init__(f"private address {address} refused (--allow-private-urls allows it)")
        self.address = address


# ---------------------------------------------------------------- one download's state


class _Download:
    """Options, deadline and open sockets of one download; shared with the connections it opens."""

    def __init__(self, options: FetchOptions):
        self.options = options
        self.deadline = time.monotonic() + options.timeout_s
        self.last_wait_capped = False  # was the socket timeout handed out last cut short by the deadline?
        self.cancelled = False  # cut by a stop (`Cancellation`), not by the deadline
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._dups: list[socket.socket] = []  # duplicates, so the watchdog can shut a socket TLS has wrapped

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self._cut.is_set() or self.remaining() <= 0

    def socket_timeout(self) -> float:
        """One stall at most, and never past the deadline."""
        remaining, stall = self.remaining(), self.options.stall_timeout_s
        self.last_wait_capped = remaining < stall
        return max(0.001, min(stall, remaining))

    def timed_out(self) -> FetchError:
        if self.cancelled:
            return FetchError("download stopped", "stopped")
        return FetchError(f"timed out after {self.options.timeout_s:g} s", "timed out")

    def admit(self, sock: socket.socket) -> None:
        """Called with each new socket, connected but before a byte is sent: refuse it or track it."""
        peer = sock.getpeername()[0]
        if not self.options.allow_private and not is_public_address(peer):
            sock.close()
            raise PrivateAddressRefused(peer)
        with self._lock:
            self._dups.append(sock.dup())
            if self._cut.is_set():
                _shut(self._dups[-1])

    def cancel(self) -> None:
        self.cancelled = True
        self.cut()

    def wait(self, seconds: float) -> None:
        """A backoff that a cut ends early."""
        self._cut.wait(seconds)

    def cut(self) -> None:
        with self._lock:
            self._cut.set()
            for dup in self._dups:
                _shut(dup)

    def close(self) -> None:
        with self._lock:
            self._cut.set()  # a late watchdog finds nothing left to do
            for dup in self._dups:
                dup.close()
            self._dups.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer or by us
        pass


# ---------------------------------------------------------------- requests plumbing


class _PeerCheck:
    """Connection mixin: the peer address check, in _new_conn, which both HTTP and HTTPS connect() call first.

    There the socket is connected but nothing was sent: no request line, no TLS ClientHello.
    """

    def __init__(self, *args, download: _Download, **kwargs):
        super().__init__(*args, **kwargs)
        self.download = download

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.download.admit(sock)
        return sock


class GuardedHTTPConnection(_PeerCheck, HTTPConnection):
    pass


class GuardedHTTPSConnection(_PeerCheck, HTTPSConnection):
    pass


class _GuardedPoolManager(PoolManager):
    def __init__(self, download: _Download, **kwargs):
        super().__init__(**kwargs)
        self.download = download

    def _new_pool(self, scheme, host, port, request_context=None):
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = GuardedHTTPSConnection if scheme == "https" else GuardedHTTPConnection
        # Set here rather than in connection_pool_kw, whose keys must all be fields of urllib3's PoolKey.
        pool.conn_kw["download"] = self.download
        return pool


class GuardedAdapter(HTTPAdapter):
    def __init__(self, download: _Download):
        self.download = download  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)  # retries are ours: they must count against the deadline

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = _GuardedPoolManager(
            self.download, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # A proxy's pools would use urllib3's own connections, and the peer would be the proxy anyway.
        raise FetchError("downloads through a proxy are not supported")


def new_session(download: _Download) -> requests.Session:
    session = requests.Session()
    # No proxies from the environment: through a proxy the peer would be the proxy, and the address check moot.
    session.trust_env = False
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = GuardedAdapter(download)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ---------------------------------------------------------------- attempts, redirects, body


class _Retryable(Exception):
    """One attempt failed in a way the next may not; str() says why, without the attempt count; `reason` as
    FetchError's."""

    def __init__(self, message: str, reason: str | None = None, stalled: bool = False):
        super().__init__(message)
        self.reason = reason or message
        self.stalled = stalled


def _with_retries(url: str, download: _Download) -> bytes:
    options = download.options
    attempt = 0
    while True:
        attempt += 1
        try:
            with new_session(download) as session:
                return _attempt(session, url, download)
        except _Retryable as exc:
            if download.expired() or (exc.stalled and download.last_wait_capped):
                raise download.timed_out() from exc
            delay = options.backoff_s * 2 ** (attempt - 1)
            if attempt > options.retries or delay >= download.remaining():
                plural = "s" if attempt > 1 else ""
                raise FetchError(f"{exc} ({attempt} attempt{plural})", exc.reason) from exc
            download.wait(delay)
            if download.expired():
                raise download.timed_out() from exc


def _attempt(session: requests.Session, url: str, download: _Download) -> bytes:
    try:
        return _follow(session, url, download)
    except PrivateAddressRefused as exc:
        raise FetchError(str(exc), "private address refused") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _classify(exc, download) from exc


def _follow(session: requests.Session, url: str, download: _Download) -> bytes:
    max_redirects = download.options.max_redirects
    for _ in range(max_redirects + 1):
        timeout = download.socket_timeout()
        response = session.get(url, stream=True, allow_redirects=False, timeout=(timeout, timeout), headers=_HEADERS)
        with response as resp:
            target = session.get_redirect_target(resp)
            if target is None:
                _check_status(resp.status_code)
                return _read_body(resp, download)
        url = urljoin(url, target)
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            refused = "redirect refused (only http and https)"
            raise FetchError(f"redirect to {scheme}:// refused (only http and https)", refused)
    raise FetchError(f"too many redirects (more than {max_redirects})", "too many redirects")


def _check_status(status: int) -> None:
    if status >= 500:
        raise _Retryable(f"HTTP {status}")
    if not 200 <= status < 300:
        raise FetchError(f"HTTP {status}")


def _read_body(resp: requests.Response, download: _Download) -> bytes:
    cap = download.options.max_bytes
    too_big = FetchError(f"larger than {human_bytes(cap)}")
    declared = resp.headers.get("Content-Length", "").strip()
    expected = int(declared) if declared.isdigit() else None
    if expected is not None and expected > cap:
        raise too_big  # refused before reading a byte
    body = bytearray()
    try:
        while True:
            _bound_next_read(resp, download)
            chunk = resp.raw.read1(_CHUNK)  # whatever one socket read gave: a drip can't hide the deadline
            if not chunk:
                break
            body += chunk
            if len(body) > cap:
                raise too_big
            if download.expired():
                raise download.timed_out()
    except (urllib3.exceptions.TimeoutError, TimeoutError):
        raise  # a stall or the deadline: _classify tells which
    except (urllib3.exceptions.ProtocolError, http.client.HTTPException, OSError) as exc:
        raise _Retryable(_dropped(len(body), expected), "connection dropped") from exc
    if download.expired():  # the watchdog's cut can look like the end of a body (or of the headers)
        raise download.timed_out()
    if expected is not None and len(body) < expected:
        raise _Retryable(_dropped(len(body), expected), "connection dropped")
    if not body:
        raise FetchError("empty response")
    return bytes(body)


def _bound_next_read(resp: requests.Response, download: _Download) -> None:
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(download.socket_timeout())


def _dropped(got: int, expected: int | None) -> str:
    of_expected = f" of {expected}" if expected else ""
    return f"connection dropped after {got}{of_expected} bytes"


_DROPPED = (
    urllib3.exceptions.ProtocolError,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
_NO_CONNECTION = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError)


def _classify(exc: BaseException, download: _Download) -> Exception:
    """An exception from requests/urllib3 -> FetchError (final) or _Retryable."""
    if download.expired():
        return download.timed_out()
    chain = _chain(exc)
    if any(isinstance(e, _NO_CONNECTION) for e in chain):  # refused, no such host (urllib3 files them as timeouts)
        return FetchError(f"could not connect: {reason(exc)}", "could not connect")
    if any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)) for e in chain):
        return _Retryable(f"timed out: no data for {download.options.stall_timeout_s:g} s", "timed out", stalled=True)
    if any(isinstance(e, _DROPPED) for e in chain):
        return _Retryable(f"connection dropped: {reason(exc)}", "connection dropped")
    if isinstance(exc, requests.ConnectionError):  # a TLS failure...
        return FetchError(f"could not connect: {reason(exc)}", "could not connect")
    return FetchError(f"download failed: {reason(exc)}", "download failed")


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and what it wraps: requests and urllib3 nest the real cause in args, .reason or __cause__."""
    found: list[BaseException] = []
    current: object = exc
    while isinstance(current, BaseException) and current not in found and len(found) < 10:
        found.append(current)
        wrapped = getattr(current, "reason", None) if isinstance(current, urllib3.exceptions.MaxRetryError) else None
        if wrapped is None and current.args and isinstance(current.args[-1], BaseException):
            wrapped = current.args[-1]
        current = wrapped if wrapped is not None else (current.__cause__ or current.__context__)
    return found


def reason(exc: BaseException) -> str:
    """The innermost cause in words: 'Connection refused', not three layers of pool and retry wrappers."""
    inner = _chain(exc)[-1]
    text = str(inner) or type(inner).__name__
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    text = re.sub(r" \(_ssl\.c:\d+\)$", "", text)
    return text[:200]
