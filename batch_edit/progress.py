"""What a person watching (or reading the log the next morning) sees of a run."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time

log = logging.getLogger("batch_edit")


class Progress:
    """A live bar on a terminal; in a log file, one plain line every `every_s` seconds instead of redraws.

    The rate and ETA count only the items that spent model time: an item whose source could not be loaded (a
    missing or unreadable file) fails in an instant, and a run starting with a hundred of those would otherwise
    show a huge rate and an ETA of seconds. Such items still count as done."""

    def __init__(self, total: int, every_s: float = 60.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.failed, self.every_s = total, 0, 0, every_s
        self.untimed = 0  # of `done`, the items failed at loading their source: out of the rate and ETA
        self.started = self.logged_at = time.monotonic()
        self.closed_at: float | None = None
        self.bar = None
        self._drawing = contextlib.ExitStack()
        if self.stream.isatty():
            # here: only a run on a terminal draws the bar (`plan` imports this module too)
            from tqdm.contrib.logging import logging_redirect_tqdm

            bar_class = _bar_class()
            self.bar = bar_class(total=total, unit="img", desc="batch-edit", dynamic_ncols=True, file=self.stream)
            # While the bar is drawn, log records go through tqdm.write: the bar is cleared, the line written
            # whole, the bar drawn again below it (a warning written past the bar would tear it). The console
            # handler's formatter, escaping included, is kept; the handlers are put back at close.
            loggers = [logging.root, *_own_console_loggers()]
            self._drawing.enter_context(logging_redirect_tqdm(loggers, tqdm_class=bar_class))
            if self.stream is sys.stderr:  # what is printed to stderr meanwhile (a warning, Python's warnings)
                self._drawing.enter_context(_printed_above(bar_class, self.stream))  # too

    def update(self, failed: bool = False, at_load: bool = False) -> None:
        """One item finished; `at_load`: it failed loading its source (or mask), no model time spent."""
        self.done += 1
        self.failed += failed
        self.untimed += at_load
        if self.bar is not None:
            self.bar.untimed = self.untimed
            if failed:
                self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.logged_at >= self.every_s:
            self.logged_at = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def grow(self, items: int) -> None:
        """More items to come: a job reading another's results, listed again once those are made."""
        self.total += items
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    @property
    def elapsed(self) -> float:
        """Seconds since the start; frozen at close, so the last line and the run's summary give the same time."""
        return (self.closed_at or time.monotonic()) - self.started

    def line(self) -> str:
        elapsed = self.elapsed
        rate = (self.done - self.untimed) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (
            f"batch-edit: {self.done}/{self.total} items, {self.failed} failed, {rate:.2f} img/s, "
            f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
        )

    def close(self) -> None:
        if self.closed_at is not None:
            return
        self.closed_at = time.monotonic()
        if self.bar is not None:
            self.bar.close()
            self._drawing.close()  # the console's log handler back
        else:  # the final line, after the last job's CSVs and sheets too
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def _printed_above(bar_class, stream):
    """sys.stderr replaced by `_AboveBar` while the bar is drawn; a line left unfinished is written at the end."""
    above = _AboveBar(bar_class, stream)
    try:
        with contextlib.redirect_stderr(above):
            yield
    finally:
        if above.pending:
            stream.write(above.pending)


class _AboveBar:
    """A stand-in for stderr: each whole line written above the bar (tqdm.write clears it, writes the line, draws
    it again), the rest of a write kept until its line ends; anything else asked of it goes to `stream`."""

    def __init__(self, bar_class, stream):
        self.bar_class, self.stream, self.pending = bar_class, stream, ""

    def write(self, text: str) -> int:
        lines, newline, self.pending = (self.pending + text).rpartition("\n")
        if newline:
            self.bar_class.write(lines, file=self.stream)
        return len(text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding...
        return getattr(self.stream, name)


def _own_console_loggers() -> list[logging.Logger]:
    """The loggers writing to the console with a handler of their own, not through the root's: diffusers' and
    transformers' (what `-v` shows of them) keep one and do not propagate."""
    return [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
        and not logger.propagate
        and any(
            isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)
            for handler in logger.handlers
        )
    ]


@functools.cache
def _bar_class():
    """tqdm's bar, its rate and ETA over the items that spent model time (`untimed`: those that did not)."""
    from tqdm import tqdm

    class Bar(tqdm):
        untimed = 0

        @property
        def format_dict(self):
            shown = super().format_dict
            # tqdm's rate without an override is (n - initial) / elapsed: the items failed at loading their source
            # are left out as the items counted before the start are (`initial`); its smoothed rate would count them
            shown.update(rate=None, initial=shown.get("initial", 0) + self.untimed)
            return shown

    return Bar


def format_duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
