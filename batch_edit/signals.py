"""SIGINT/SIGTERM during a run: while the pipeline loads, and while batches run. Both restore the previous
handlers on exit, so a caller that stays alive (tests, notebooks) gets its own handlers back."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger("batch_edit.runner")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
AT_ONCE = (
    "stopped at once by a second {name}: the items in progress are lost, every result recorded before is kept "
    "(metadata.csv and failures.csv are rebuilt by the next run); run the same command again to resume"
)


class LoadInterrupted(BaseException):
    """SIGINT or SIGTERM while the pipeline loaded (or Ray started: `during`): nothing was generated, and no job
    folder is left behind."""

    def __init__(self, signum: int, during: str = "loading the pipeline"):
        super().__init__(signum)
        self.signum, self.during = signum, during


class _SignalScope:
    """Handles SIGINT and SIGTERM with `_handle` inside a `with` block; `self.signal` is the first one received."""

    def __enter__(self):
        self.signal: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        raise NotImplementedError


class InterruptibleLoad(_SignalScope):
    """While folders open and the pipeline loads, the first SIGINT or SIGTERM raises LoadInterrupted and later
    ones are ignored, so the clean-up runs to its end however often the user presses Ctrl-C."""

    def _handle(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signum
            raise LoadInterrupted(signum)


class StopOnSignal(_SignalScope):
    """First SIGINT/SIGTERM: say what happens to the work in progress (`doing`: the execution's words), record
    what comes back, stop. Second: exit at once, which is safe because every record is flushed as it is written
    and every image is renamed into place whole."""

    def __init__(self, doing: str):
        self.doing = doing

    def _handle(self, signum: int, frame) -> None:
        if self.signal is not None:  # one line on what is left, written straight to the file: no lock to wait on
            name = signal.Signals(signum).name
            os.write(2, f"{AT_ONCE.format(name=name)}\n".encode())
            os._exit(128 + signum)
        self.signal = signum
        log.warning("%s received: %s (send it again to stop at once)", signal.Signals(signum).name, self.doing)


@contextmanager
def deferred():
    """Clean-up that must run to its end (removing the folders a refused run made): a SIGINT or SIGTERM arriving
    within is held, then handed to the handlers in place before, in order, once the block is done."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    for signum in held:
        signal.raise_signal(signum)


@contextmanager
def held():
    """Start-up that a signal must not cut (Ray starting its processes: a KeyboardInterrupt raised in an at-fork
    hook is swallowed and can leave logging's lock held, hanging the run): a SIGINT or SIGTERM arriving within is
    only noted, in the list yielded, for the caller to act on once the block is done; the handlers in place before
    come back."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
