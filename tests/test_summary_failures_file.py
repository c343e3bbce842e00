"""The run's summary names the failures.csv of each job with failed items: where each item's error is; and
an item failed at loading its source counts as done but not in the progress line's rate."""

from __future__ import annotations

import csv
from pathlib import Path

from .conftest import PHOTOS, batch_edit

STEPS = "num_inference_steps: 2, strength: 0.5, width: 32, height: 32, seed: 1"


def test_the_summary_names_the_failures_csv_of_each_job_with_failures(tmp_path, tiny_config):
    cat, gone = PHOTOS / "cat.jpg", tmp_path / "gone.jpg"
    (tmp_path / "m.yaml").write_text(
        "jobs:\n"
        f"  - {{name: bad, sources: [{cat}, {gone}], prompts: x, {STEPS}}}\n"
        f"  - {{name: good, sources: {cat}, prompts: x, {STEPS}}}\n"
    )
    out = tmp_path / "out"
    result = batch_edit("run", str(tmp_path / "m.yaml"), "--pipeline", str(tiny_config), "--output-root", str(out))
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("failed items")]
    assert line == f"failed items, each with its error: {out / 'bad' / 'failures.csv'}", result.stdout
    with Path(line.split(": ", 1)[1]).open() as handle:  # the file named holds the item's whole error
        assert [row["error"] for row in csv.DictReader(handle)] == [f"file not found: {gone}"]

    again = batch_edit("run", str(tmp_path / "m.yaml"), "--pipeline", str(tiny_config), "--output-root", str(out))
    assert "failed items" in again.stdout  # the missing file fails again
    # at loading its source, no model time spent: not in the rate (the line's ETA once its run is over: 0s)
    assert "batch-edit: 1/1 items, 1 failed, 0.00 img/s, " in again.stderr, again.stderr

    gone.write_bytes(cat.read_bytes())
    fixed = batch_edit("run", str(tmp_path / "m.yaml"), "--pipeline", str(tiny_config), "--output-root", str(out))
    assert fixed.returncode == 0 and "failed items" not in fixed.stdout, fixed.stdout
