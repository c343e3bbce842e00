"""A run that ends with its Ray workers lost prints the summary lines (what was written, what is left for later),
then the error (README: every run that got as far as generating ends with them). Real tiny pipeline in process;
the loss of the workers is the fault simulated: raised once two results are recorded."""

from __future__ import annotations

import re

import pandas as pd

from batch_edit.ray_run import WorkersLost
from batch_edit.runner import InProcess

from .conftest import PHOTOS, batch_edit, write_pipeline_config

LOST = "the Ray workers stopped (the cluster went away); every finished item is recorded: run the same command again"


def test_workers_lost_end_the_run_with_its_summary_then_the_error(tmp_path, tiny_model, monkeypatch):
    run = InProcess.run

    def losing_the_workers(self, tasks, pipeline, record, stop):
        recorded = []

        def recording(result):
            record(result)
            recorded.append(result)
            if len(recorded) == 2:
                raise WorkersLost(LOST)

        run(self, tasks, pipeline, recording, stop)

    monkeypatch.setattr(InProcess, "run", losing_the_workers)
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, batch_size=2)
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a tiger, a cat], seed: [1, 2],"
        " num_inference_steps: 2, width: 32, height: 32}]\n"
    )
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "o", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {LOST}"
    line = re.search(r"job j: (\d) written, 0 already done, 0 failed, (\d) left for later \(stopped by an error\)",
                     result.stdout)  # fmt: skip
    assert line, result.stdout
    written, left = int(line.group(1)), int(line.group(2))
    assert written >= 2 and written + left == 4
    assert len(pd.read_csv(tmp_path / "o" / "j" / "metadata.csv")) == written
    assert re.search(r"^total: ", result.stdout, re.M), result.stdout
