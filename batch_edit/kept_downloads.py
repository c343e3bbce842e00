"""URL sources' bytes kept on disk while later items of the run still load them.

A job's items run grouped by strength, steps and guidance (so that they share pipeline calls): a sweep of three
strengths over 500 URL sources comes back to each source three times, long after the decoded-image cache has let
it go. Without this, each visit downloads the image again, tripling the traffic to a server that may count it.
The run knows its items in advance, so it knows which sources come back: those are written to a temporary
folder (`TMPDIR`) after their first download, read from there at each later visit, and deleted after the last.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Disk, not memory: what the folder may hold at once. A source that would not fit is downloaded again instead.
KEPT_BYTES = 2 * 1024**3


class KeptDownloads:
    """`load(ref, download)` for every item that loads a source, in the order the items run (`passed(ref)` for
    one whose decoded image was still at hand): each URL is downloaded once while its bytes fit in `max_bytes`."""

    def __init__(self, refs: Iterable, max_bytes: int | None = None):
        self.left = Counter(ref for ref in refs if ref.is_url)  # URL -> items still to load it
        self.max_bytes, self.bytes = KEPT_BYTES if max_bytes is None else max_bytes, 0
        self.kept: dict = {}  # URL -> (path, size)
        self._folder: tempfile.TemporaryDirectory | None = None

    def load(self, ref, download: Callable[[], bytes]) -> bytes:
        data = self._read(ref) if ref in self.kept else None
        if data is None:
            data = download()
            if self.left[ref] > 1:
                self._keep(ref, data)
        self.passed(ref)
        return data

    def passed(self, ref) -> None:
        """One item's visit done: after the last, the kept bytes go."""
        if ref not in self.left:
            return
        self.left[ref] -= 1
        if self.left[ref] <= 0:
            del self.left[ref]
            self._drop(ref)

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        self.kept.clear()

    def _read(self, ref) -> bytes | None:
        path, _ = self.kept[ref]
        try:
            return path.read_bytes()
        except OSError as exc:  # the temporary folder cleaned under the run: download it again
            log.warning("kept download of %s unreadable (%s): downloading it again", ref.key, exc)
            self._drop(ref)
            return None

    def _keep(self, ref, data: bytes) -> None:
        if self.bytes + len(data) > self.max_bytes:
            return
        try:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="batch-edit-downloads-")
            path = Path(self._folder.name) / hashlib.sha256(ref.key.encode()).hexdigest()
            path.write_bytes(data)
        except OSError as exc:  # a full or read-only temporary folder: download again, as without it
            log.warning("cannot keep the download of %s for later items (%s): they download it again", ref.key, exc)
            self.max_bytes = self.bytes  # nothing more is tried
            return
        self.kept[ref] = path, len(data)
        self.bytes += len(data)

    def _drop(self, ref) -> None:
        kept = self.kept.pop(ref, None)
        if kept is not None:
            path, size = kept
            self.bytes -= size
            try:
                os.unlink(path)
            except OSError:
                pass
