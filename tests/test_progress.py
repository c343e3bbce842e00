"""Progress as a log file shows it, and what `batch-edit plan` tells before a run."""

from __future__ import annotations

import io
import logging
import re
import sys
import warnings

import tqdm.std

from batch_edit import progress as progress_module
from batch_edit.cli import _configure_logging, _StderrHandler, main
from batch_edit.progress import Progress, format_duration

from .conftest import PHOTOS, batch_edit


def test_a_log_file_gets_plain_lines_not_redraws():
    stream = io.StringIO()  # not a terminal
    with Progress(total=4, every_s=3600, stream=stream) as progress:
        progress.update()
        progress.update(failed=True)
        assert stream.getvalue() == ""  # nothing until the interval passes...
        progress.update()
        progress.update()
    (line,) = stream.getvalue().splitlines()  # ...or the run ends
    assert line.startswith("batch-edit: 4/4 items, 1 failed, ") and "img/s" in line and "ETA 0s" in line
    assert "\r" not in stream.getvalue()


class Terminal(io.StringIO):
    """What tqdm draws its bar on: a terminal, as far as Progress can tell."""

    def isatty(self) -> bool:
        return True


class Clock:
    """time.time for tqdm and time.monotonic for Progress, moved by hand: no test waits on a real clock."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_a_log_line_during_the_bar_comes_out_whole_on_its_own_line_escaped(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _configure_logging(verbose=False)  # the run's console handler, on sys.stderr
    root = logging.getLogger()
    try:
        with Progress(total=3) as progress:
            progress.update()
            logging.getLogger("batch_edit.runner").warning("source \x1b[2Jred.png: not an image")
            progress.update()
            assert not any(isinstance(h, _StderrHandler) for h in root.handlers)  # tqdm's handler in its place
        assert any(isinstance(h, _StderrHandler) for h in root.handlers)  # and back once the bar is gone
    finally:
        for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
            root.removeHandler(handler)
    drawn = terminal.getvalue()
    assert "\x1b" not in drawn  # escaped, not sent to the terminal
    pieces = re.split(r"[\r\n]", drawn)  # what a terminal shows: each piece from the start of a line
    assert "WARNING source \\x1b[2Jred.png: not an image" in pieces, drawn
    before, after = drawn.split("WARNING source", 1)
    assert "0/3" in before and "batch-edit:" in after.split("\n", 1)[1]  # the bar drawn before, and again below


def test_a_library_logging_with_a_console_handler_of_its_own_does_not_tear_the_bar(monkeypatch):
    """diffusers and transformers keep their own stderr handler and do not propagate (what -v shows of them)."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    library = logging.getLogger("batch_edit_test_library")
    library.addHandler(logging.StreamHandler(sys.stderr))
    monkeypatch.setattr(library, "propagate", False)
    try:
        with Progress(total=2) as progress:
            progress.update()
            library.warning("the library's warning")
            progress.update()
        assert [type(h) for h in library.handlers] == [logging.StreamHandler]  # its own handler back
    finally:
        library.handlers.clear()
    assert "the library's warning" in re.split(r"[\r\n]", terminal.getvalue()), terminal.getvalue()


def test_what_is_printed_to_stderr_during_the_bar_comes_out_above_it_whole(monkeypatch):
    """A print to stderr (a warning printed directly, Python's warnings module) while the bar is drawn: each line
    whole, the bar cleared before and drawn again below; a line left unfinished comes out at the end."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with Progress(total=3) as progress:
        progress.update()
        print("warning: printed ", end="", file=sys.stderr)  # a line in two writes, as `print(..., end=" ")` makes
        print("mid-run", file=sys.stderr)
        sys.stderr.write(warnings.formatwarning("a library's warning", UserWarning, "lib.py", 7))  # as `warn` does
        progress.update()
        print("unfinished", end="", file=sys.stderr)
    assert sys.stderr is terminal  # given back once the bar is gone
    drawn = terminal.getvalue()
    pieces = re.split(r"[\r\n]", drawn)  # what a terminal shows: each piece from the start of a line
    assert "warning: printed mid-run" in pieces and "lib.py:7: UserWarning: a library's warning" in pieces, drawn
    before, after = drawn.split("warning: printed mid-run", 1)
    assert "0/3" in before and "1/3" in after.split("\n", 1)[1]  # the bar drawn before, and again below (now)
    assert drawn.endswith("unfinished"), drawn


def test_items_failed_loading_their_source_are_left_out_of_the_rate_and_eta(monkeypatch):
    """A run that starts with 100 unreadable files: they count as done, not in the images per second."""
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    monkeypatch.setattr(tqdm.std, "time", clock)
    for stream in (io.StringIO(), Terminal()):
        with Progress(total=120, every_s=3600, stream=stream) as progress:
            for _ in range(100):  # no model time spent
                progress.update(failed=True, at_load=True)
            clock.now += 1
            shown = str(progress.bar) if progress.bar is not None else progress.line()
            if progress.bar is None:
                assert "100/120 items, 100 failed, 0.00 img/s, elapsed 1s, ETA unknown" in shown, shown
            else:
                assert "100/120 [00:01<?, ?img/s, failed=100]" in shown, shown
            for _ in range(10):  # one image a second
                clock.now += 1
                progress.update()
            shown = str(progress.bar) if progress.bar is not None else progress.line()
            if progress.bar is None:  # 10 images in 11 s: 0.91 img/s, 10 more in 11 s
                assert "110/120 items, 100 failed, 0.91 img/s, elapsed 11s, ETA 11s" in shown, shown
            else:
                assert "110/120 [00:11<00:11,  1.10s/img, failed=100]" in shown, shown


def test_durations_read_naturally():
    assert [format_duration(s) for s in (5, 75, 3725, float("inf"))] == ["5s", "1m15s", "1h02m", "unknown"]


def test_plan_shows_axes_done_items_and_an_estimate_from_earlier_runs(tmp_path, tiny_config, capsys):
    manifest = tmp_path / "sweep.yaml"
    manifest.write_text(
        f"jobs: [{{name: sweep, sources: {PHOTOS / 'cat.jpg'}, prompts: ['a, b', c], strength: [0.5, 0.7], seed: 3,"
        " num_inference_steps: 4, width: 64, height: 64}]\n"
    )
    common = [str(manifest), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    assert main(["plan", *common]) == 0
    before = capsys.readouterr().out
    assert "job sweep: 4 item(s), 0 already done" in before
    assert '  prompts: "a, b", "c"' in before and "  strength: 0.5, 0.7" in before and "seed:" not in before
    assert "estimate: none yet" in before

    assert batch_edit("run", *common).returncode == 0
    manifest.write_text(manifest.read_text().replace("[0.5, 0.7]", "[0.5, 0.7, 0.6]"))
    assert main(["plan", *common]) == 0
    after = capsys.readouterr().out
    assert "job sweep: 6 item(s), 4 already done" in after
    assert "estimate: " in after and "for 2 item(s) at " in after
