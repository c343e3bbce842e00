"""The Ray driver's receiving loop: a worker error that comes back once the run's own stop signal arrived is that
signal's doing (a SIGTERM to the whole process group stops Ray's processes too): the run stops as signalled,
recording what came back, not as a lost cluster (exit 1)."""

from __future__ import annotations

import queue
import signal

import pytest

from batch_edit.ray_run import RayExecution, WorkersLost
from batch_edit.signals import StopOnSignal


class _SignalDuringWait(queue.Queue):
    """Results whose wait the signal cuts, as the driver's is: its handler runs, then the workers' error is there."""

    def __init__(self, stop: StopOnSignal | None, items: list):
        super().__init__()
        self.stop = stop
        for item in items:
            self.put(item)

    def get(self, block=True, timeout=None):
        item = super().get(block, timeout)
        if item[0] == "error" and self.stop is not None:
            self.stop.signal = signal.SIGTERM
        return item


def _results(stop: StopOnSignal | None) -> queue.Queue:
    lost = WorkersLost("the Ray workers stopped (the cluster went away)")
    return _SignalDuringWait(stop, [("result", "a"), ("error", lost), ("result", "b"), ("end", None)])


def test_an_error_after_the_stop_signal_ends_the_run_as_stopped_recording_what_came_back():
    recorded = []
    with StopOnSignal("stopping") as stop:
        assert RayExecution._receive(_results(stop), recorded.append, stop) == 2
    assert recorded == ["a", "b"] and stop.signal == signal.SIGTERM


def test_an_error_without_a_stop_signal_still_ends_the_run_as_lost_workers():
    recorded = []
    with StopOnSignal("stopping") as stop, pytest.raises(WorkersLost):
        RayExecution._receive(_results(None), recorded.append, stop)
    assert recorded == ["a"]
