"""What a person watching (or reading the log the next morning) sees of a run."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("batch_edit")


class Progress:
    """A live bar on a terminal; in a log file, one plain line every `every_s` seconds instead of redraws."""

    def __init__(self, total: int, every_s: float = 60.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.failed, self.every_s = total, 0, 0, every_s
        self.started = self.logged_at = time.monotonic()
        self.closed_at: float | None = None
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm  # here: only a run on a terminal draws the bar (`plan` imports this module too)

            self.bar = tqdm(total=total, unit="img", desc="batch-edit", dynamic_ncols=True, file=self.stream)

    def update(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        if self.bar is not None:
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
        rate = self.done / elapsed if elapsed > 0 else 0.0
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
        else:  # the final line, after the last job's CSVs and sheets too
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def format_duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
