"""The bounded background threads that overlap loading and writing with generation."""

from __future__ import annotations

import threading
import time

import pytest

from batch_edit.background import Prefetch, Writer


def test_prefetch_yields_everything_in_order_and_stays_bounded():
    produced = []

    def source():
        for value in range(10):
            produced.append(value)
            yield value

    prefetch = Prefetch(source(), depth=2)
    iterator = iter(prefetch)
    assert next(iterator) == 0
    time.sleep(0.3)  # the producer may run ahead, but only as far as the queue allows
    assert len(produced) <= 1 + 2 + 1
    assert list(iterator) == list(range(1, 10))
    prefetch.close()


def test_prefetch_hands_errors_to_the_consumer():
    def source():
        yield "first"
        raise ValueError("broken source")

    prefetch = Prefetch(source())
    iterator = iter(prefetch)
    assert next(iterator) == "first"
    with pytest.raises(ValueError, match="broken source"):
        next(iterator)
    prefetch.close()


def test_closing_early_stops_the_producer():
    stopped = threading.Event()

    def endless():
        try:
            while True:
                yield 1
        finally:
            stopped.set()

    prefetch = Prefetch(endless(), depth=1)
    next(iter(prefetch))
    prefetch.close()
    assert not prefetch._thread.is_alive()


def test_writer_reports_completions_in_order_in_the_callers_thread():
    seen = []
    writer = Writer(lambda result: seen.append((result, threading.current_thread().name)), depth=2)
    for value in range(5):
        writer.submit(lambda v: (time.sleep(0.01), v)[1], value)
    writer.drain()
    assert [result for result, _ in seen] == [0, 1, 2, 3, 4]
    assert {thread for _, thread in seen} == {threading.current_thread().name}


def test_a_failed_write_is_raised_and_later_writes_are_cancelled():
    written = []

    def write(value):
        if value == 1:
            raise OSError("disk full")
        time.sleep(0.05)
        written.append(value)
        return value

    writer = Writer(lambda result: None, depth=10)
    with pytest.raises(OSError, match="disk full"):  # at a later submit or at the drain, whichever sees it first
        for value in range(6):
            writer.submit(write, value)
        writer.drain()
    writer.drain()  # what is still pending after the error is cancelled, not written
    assert written[0] == 0 and len(written) < 6
