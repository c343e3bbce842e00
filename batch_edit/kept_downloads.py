"""URL sources downloaded ahead of their items, several at once, and kept on disk while later items load them.

The run knows its items in advance, in the order they run. Two things follow for URL sources:
- Ahead: the next URL sources not yet downloaded are fetched by a few threads while earlier items are prepared
  and generated. A slow or dead server (a 30 s deadline) no longer delays the downloads behind it, so several
  cost about one wait, not one each, and the GPU does not wait on downloads one after another.
- Kept: a job's items run grouped by strength, steps and guidance (so that they share pipeline calls), so a sweep
  of three strengths over 500 URL sources comes back to each source three times, long after the decoded-image
  cache has let it go. The bytes of a source that later items load again wait in a temporary folder (`TMPDIR`)
  until the last of them, instead of being downloaded at each visit.
Items are still prepared one by one in their order, so batches, results and failures are as without either.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .fetch import Cancellation

log = logging.getLogger(__name__)

# Disk, not memory: what the folder may hold at once. A source that would not fit is downloaded again instead.
KEPT_BYTES = 2 * 1024**3
FOLDER_PREFIX = "batch-edit-downloads-"  # then the process id: a folder whose process is gone was abandoned
# First downloads of URL sources running or done ahead of their items (their bytes are held until then), and how
# many run at once (to one server, as a browser's connections would).
AHEAD = 12
DOWNLOADERS = 6


class KeptDownloads:
    """`load(ref)` for every item that loads a source, in the order the items run (`passed(ref)` for one whose
    decoded image was still at hand): `download(ref)` gives a source's bytes; each URL is downloaded once while
    its bytes fit in `max_bytes`. A source not among `refs` is only passed through to `download`."""

    def __init__(self, refs: Iterable, download: Callable, max_bytes: int | None = None):
        urls = [ref for ref in refs if ref.is_url]
        self.download = download
        self.left = Counter(urls)  # URL -> items still to load it
        self.firsts = deque(dict.fromkeys(urls))  # URLs not yet downloaded, in the order items first load them
        self.ahead: dict = {}  # URL -> Future of its bytes
        self.max_bytes, self.bytes = KEPT_BYTES if max_bytes is None else max_bytes, 0
        self.kept: dict = {}  # URL -> (path, size)
        self._folder: tempfile.TemporaryDirectory | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._cancel: Cancellation | None = None

    def load(self, ref) -> bytes:
        if ref not in self.left:  # a file, or an item of no known order
            return self.download(ref)
        self._download_ahead()
        try:
            data = self._read(ref) if ref in self.kept else None
            if data is None:
                future = self.ahead.pop(ref, None)
                data = future.result() if future is not None else self.download(ref)
                if self.left[ref] > 1:
                    self._keep(ref, data)
            return data
        finally:  # a download that failed is a visit too
            self.passed(ref)

    def passed(self, ref) -> None:
        """One item's visit done: after the last, the kept bytes go."""
        if ref not in self.left:
            return
        self.left[ref] -= 1
        if self.left[ref] <= 0:
            del self.left[ref]
            self._drop(ref)

    def close(self) -> None:
        """Downloads still running are cut, those not started dropped, the kept bytes deleted."""
        if self._cancel is not None:
            self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.ahead.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        self.kept.clear()

    def _download_ahead(self) -> None:
        while self.firsts and len(self.ahead) < AHEAD:
            ref = self.firsts.popleft()
            if self._pool is None:
                # A stop of the thread preparing items (closing its prefetch) cuts these downloads too
                current = Cancellation.current()
                self._cancel = current.child() if current is not None else Cancellation()
                self._pool = ThreadPoolExecutor(max_workers=DOWNLOADERS, thread_name_prefix="batch-edit-download")
            self.ahead[ref] = self._pool.submit(self._downloaded, ref)

    def _downloaded(self, ref) -> bytes:
        with self._cancel.applies():
            return self.download(ref)

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
                remove_abandoned(Path(tempfile.gettempdir()))
                self._folder = tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
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


def remove_abandoned(folder: Path) -> None:
    """The kept downloads of runs killed outright (kill -9, the OOM killer), found by their process id: one that
    no longer runs. A folder of another machine sharing TMPDIR may look abandoned here; its run then downloads
    again what it kept (a kept file that cannot be read is downloaded again)."""
    for path in folder.glob(f"{FOLDER_PREFIX}*-*"):
        pid = path.name[len(FOLDER_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        log.info("removing %s, the kept downloads of a run that is gone (process %s)", path, pid)
        shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM), or a pid the system does not take: leave it alone
        return True
    return True
