"""SIGINT/SIGTERM during `prune`: the file move in progress and its record finish, the job's CSVs are rewritten
for what moved (no row names a file moved out), a line says what was done and what is left, exit 130/143 without
a traceback; the same prune run again finishes. The signal is sent from inside the first move (a fault-timing
injector: the move itself is the real one)."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from batch_edit.outputs import JobOutput

from .conftest import batch_edit, sweep_manifest

FOUR = "[0.5, 0.6, 0.7, 0.8]"


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_stop_during_prune_finishes_the_move_rewrites_the_csvs_and_says_what_is_left(
    tmp_path, tiny_config, monkeypatch, signum, status
):
    def command(name: str, strengths: str):
        (tmp_path / "m.yaml").write_text(sweep_manifest(strengths=strengths))
        return batch_edit(name, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)

    assert command("run", FOUR).returncode == 0
    folder = tmp_path / "out" / "sweep"
    real, moves = JobOutput.move_to_pruned, []

    def signalled_move(self, *args, **kwargs):
        moved = real(self, *args, **kwargs)
        moves.append(moved)
        if len(moves) == 1:
            os.kill(os.getpid(), signum)
        return moved

    monkeypatch.setattr(JobOutput, "move_to_pruned", signalled_move)
    stopped = command("prune", "[0.5]")  # three results to move out
    assert stopped.returncode == status, stopped.stderr
    assert len(moves) == 1  # the move in progress finished, no other began
    assert "Traceback" not in stopped.stderr
    assert "job sweep: moved 1," in stopped.stdout
    assert (
        f"prune stopped by {signum.name} in job sweep (2 file(s) there at most still to move; its metadata.csv "
        "lists what stays): nothing was deleted; run the same prune again to finish"
    ) in stopped.stderr
    listed = pd.read_csv(folder / "metadata.csv")["file_name"].tolist()
    assert len(listed) == 3 and all((folder / name).is_file() for name in listed)

    monkeypatch.setattr(JobOutput, "move_to_pruned", real)
    again = command("prune", "[0.5]")
    assert again.returncode == 0, again.stderr
    assert "job sweep: moved 2," in again.stdout
    listed = pd.read_csv(folder / "metadata.csv")["file_name"].tolist()
    assert len(listed) == 1 and (folder / listed[0]).is_file()
