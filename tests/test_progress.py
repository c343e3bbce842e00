"""Progress as a log file shows it, and what `batch-edit plan` tells before a run."""

from __future__ import annotations

import io

from batch_edit.cli import main
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
