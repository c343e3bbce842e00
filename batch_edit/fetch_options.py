"""What a download is allowed (`FetchOptions`) and how it fails (`FetchError`), without the HTTP machinery: the
modules that plan and read sources name them, and importing requests and urllib3 (`fetch`) is left to a source that
is a URL, a tenth of `batch-edit plan`'s time spared otherwise."""

from __future__ import annotations

from dataclasses import dataclass

PRIVATE_ADDRESS = "a private address"  # a URL refused before any request (see fetch.refused_unfetched)


class FetchError(Exception):
    """A download failed; str() is a short reason the user can act on, `reason` the same without what varies from
    URL to URL (an address, a count of bytes, the network's words): what a run's summary groups failures by."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float = 30.0  # the whole download: connect, redirects, retries, backoff, body
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2  # further attempts after a stalled attempt, an HTTP 5xx or a dropped connection
    backoff_s: float = 0.5  # wait before retry n: backoff_s * 2 ** (n - 1)
    stall_timeout_s: float = 10.0  # the longest wait for a connect or one read before the attempt counts as stalled
    allow_private: bool = False  # loopback, private, link-local... addresses (a local test server, an intranet)

    def __post_init__(self):
        for name in ("timeout_s", "max_bytes", "stall_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FetchOptions.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_redirects", "retries", "backoff_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"FetchOptions.{name} must be zero or more, got {getattr(self, name)!r}")


def human_bytes(n: int) -> str:
    mib = 1024 * 1024
    return f"{n / mib:g} MB" if n >= mib else f"{n} bytes"
