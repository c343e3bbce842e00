"""A SIGINT arriving while a finished job's contact sheets are drawn cuts the drawing at the next sheet (README:
a stop draws no contact sheet, to exit within a container's grace period); the sheets' stamp stays stale and the
next run draws them all. Real tiny pipeline and real sheets; the signal is timed by a hook on saving a sheet."""

from __future__ import annotations

import os
import signal
import threading

from batch_edit import sheets
from batch_edit.engine import Engine
from batch_edit.manifest import load_manifests
from batch_edit.outputs import JobOutput
from batch_edit.pipeline_config import load_pipeline_config
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run
from batch_edit.signals import StopOnSignal

from .conftest import image_file

SOURCES = 6  # one sheet each


def plans(tmp_path, config, settings: str = ""):
    for index in range(SOURCES):
        image_file(tmp_path / "src" / f"p{index}.png", color=30 * index)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"jobs: [{{name: a, sources: {tmp_path / 'src'}, prompts: [a tiger], num_inference_steps: 2,"
        f" width: 32, height: 32{settings}}}]\n"
    )
    (loaded,) = load_manifests([manifest])
    return plan_jobs(list(loaded.jobs), config.identity())


def drawn(tmp_path) -> int:
    return len(list((tmp_path / "out" / "a").glob(f"{sheets.SHEET_PREFIX}*.png")))


def test_a_stop_while_sheets_are_drawn_cuts_them_and_the_next_run_draws_them(tmp_path, tiny_config, monkeypatch):
    (tmp_path / "src").mkdir()
    config = load_pipeline_config(tiny_config)
    handled = threading.Event()
    handle, save = StopOnSignal._handle, sheets._save

    def handling(self, signum, frame):
        handle(self, signum, frame)
        handled.set()

    def save_then_stop(image, path):  # SIGINT once the first sheet is saved, as a user's Ctrl-C would come
        saved = save(image, path)
        if not handled.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            assert handled.wait(10)
        return saved

    monkeypatch.setattr(StopOnSignal, "_handle", handling)
    monkeypatch.setattr(sheets, "_save", save_then_stop)
    result = run(plans(tmp_path, config), config, tmp_path / "out", Engine.load, RunOptions())
    assert result.interrupted_by == signal.SIGINT
    assert result.jobs[0].done == SOURCES  # every item was back before the sheets were drawn
    assert drawn(tmp_path) == 1, "the drawing went on after the stop"
    output = JobOutput(tmp_path / "out", "a")
    assert not output.sheets_current()  # the stamp says they are not complete

    monkeypatch.setattr(sheets, "_save", save)
    again = run(plans(tmp_path, config), config, tmp_path / "out", Engine.load, RunOptions())
    assert again.interrupted_by is None and not again.loaded_model  # nothing to generate: only finished
    assert drawn(tmp_path) == SOURCES and output.sheets_current()


def test_a_stop_in_a_job_drawing_no_sheets_says_none_are_left(tmp_path, tiny_config, monkeypatch, caplog):
    """`contact_sheets: false`: a SIGINT during the job leaves no sheet for the next run to draw, and says none."""
    (tmp_path / "src").mkdir()
    config = load_pipeline_config(tiny_config)
    generate = Engine.generate

    def stop_after_one(self, *args, **kwargs):
        images = generate(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return images

    monkeypatch.setattr(Engine, "generate", stop_after_one)
    options = RunOptions()
    result = run(plans(tmp_path, config, ", contact_sheets: false"), config, tmp_path / "out", Engine.load, options)
    assert result.interrupted_by == signal.SIGINT and result.jobs[0].done > 0
    assert drawn(tmp_path) == 0 and "contact sheets" not in caplog.text, caplog.text
