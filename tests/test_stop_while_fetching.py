"""A SIGINT/SIGTERM while the prefetch thread downloads a slow URL and no batch is in progress: the run stops at
once (the driver's wait for the next batch sees the stop; the download is cut), not when the download's deadline
ends it. Real tiny pipeline, real downloads from a loopback server whose /hang never answers."""

from __future__ import annotations

import os
import signal
import threading
import time

from batch_edit.background import Prefetch
from batch_edit.engine import Engine
from batch_edit.fetch import FetchError, FetchOptions, fetch_url
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import load_pipeline_config
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run

from .conftest import PHOTOS, write_pipeline_config
from .http_fixtures import loopback_server  # noqa: F401 (fixture)

SLOW = FetchOptions(timeout_s=60, stall_timeout_s=60, allow_private=True)  # the deadline a stop must not wait for


def when(condition, then, timeout: float = 120) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_closing_the_prefetch_cuts_its_download_and_a_stop_ends_the_wait(loopback_server):  # noqa: F811
    got: list = []
    stop = threading.Event()

    def source():
        try:
            yield fetch_url(loopback_server.url("/hang"), SLOW)
        except FetchError as exc:
            got.append(exc)
            raise

    prefetch = Prefetch(source(), depth=1, stopped=stop.is_set)
    when(lambda: loopback_server.hits["/hang"], stop.set)
    started = time.monotonic()
    assert list(prefetch) == []  # the wait ends with the stop, nothing handed out
    prefetch.close()
    assert not prefetch._thread.is_alive()
    assert time.monotonic() - started < SLOW.timeout_s / 4, "the stop waited for the download"
    assert [str(exc) for exc in got] == ["download stopped"]


def test_a_signal_while_a_url_downloads_stops_the_run_without_waiting_for_it(
    tmp_path,
    tiny_model,
    loopback_server,  # noqa: F811
):
    manifest = tmp_path / "m.yaml"
    hang = loopback_server.url("/hang")
    manifest.write_text(
        f"jobs: [{{name: s, sources: [{PHOTOS / 'cat.jpg'}, '{hang}'], prompts: [a tiger], seed: [1, 2],"
        " num_inference_steps: 2, width: 32, height: 32}]\n"
    )
    (loaded,) = load_manifests([manifest])
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, batch_size=2))
    plans = plan_jobs(list(loaded.jobs), config.identity())
    sent: list[float] = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    when(lambda: loopback_server.hits["/hang"], interrupt)
    result = run(plans, config, tmp_path / "out", Engine.load, RunOptions(fetch=SLOW))
    stopped_in = time.monotonic() - sent[0]
    assert result.interrupted_by == signal.SIGINT
    (job,) = result.jobs
    # the local items' batch (2) made or left for later, the URL's left for later: no download recorded as failed
    assert job.failed == 0 and job.done in (0, 2) and job.done + job.not_run == 4
    assert stopped_in < SLOW.timeout_s / 4, f"{stopped_in:.1f} s from the signal to the end of the run"
