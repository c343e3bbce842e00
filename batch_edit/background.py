"""Work that overlaps the GPU: preparing the next batches and writing the last ones, in bounded threads.

Both queues are bounded, so memory stays flat however long the run; errors raised in a background thread
come back to the caller's thread, where they are recorded or stop the run like any other. A stop is seen while
the caller waits for the next batch, and closing the prefetch cuts the download in progress: a slow server does
not hold the run's end.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

from .fetch import Cancellation

_END, _VALUE, _ERROR = "end", "value", "error"


class Prefetch:
    """Iterate `source` in a background thread, at most `depth` values ahead of the consumer. Iterating ends early
    once `stopped()` is true (checked while waiting, every `poll_s`); `close()` cuts the thread's downloads."""

    def __init__(self, source: Iterator, depth: int = 2, stopped: Callable[[], bool] = lambda: False):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._cancelled = Cancellation()
        self._stopped = stopped
        self._thread = threading.Thread(target=self._fill, args=(source,), name="batch-edit-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        with self._cancelled.applies():  # a download of this thread is cut by close()
            try:
                for value in source:
                    if not self._put((_VALUE, value)):
                        return
                self._put((_END, None))
            except BaseException as exc:  # handed to the consumer, which decides what it means
                self._put((_ERROR, exc))

    def _put(self, message: tuple) -> bool:
        while not self._cancelled.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    poll_s = 0.1

    def __iter__(self):
        while True:
            try:
                kind, value = self._queue.get(timeout=self.poll_s)
            except queue.Empty:
                if self._stopped():
                    return
                continue
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value

    def close(self) -> None:
        self._cancelled.set()
        self._thread.join(timeout=60)


class Writer:
    """One background thread running writes in order; at most `depth` pending. `done(result)` runs in the
    caller's thread as each write finishes; a write's exception is raised in the caller's thread."""

    def __init__(self, done: Callable[[object], None], depth: int):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-edit-write")
        self._pending: deque[Future] = deque()
        self._done, self._depth = done, depth

    def submit(self, write: Callable, *args) -> None:
        self._pending.append(self._pool.submit(write, *args))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._collect()

    def _collect(self) -> None:
        future = self._pending.popleft()
        self._done(future.result())

    def drain(self) -> None:
        """Wait for every pending write; if one failed, cancel the rest and raise its error."""
        try:
            while self._pending:
                self._collect()
        finally:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
