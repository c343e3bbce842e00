"""`run --dry-run`: refused saying that `plan` is the dry run, before anything is read or written."""

from __future__ import annotations

import pytest

from batch_edit.cli import main


@pytest.mark.parametrize("flag", ["--dry-run", "--dry"])
def test_run_dry_run_points_at_plan(tmp_path, capsys, flag):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path / "jobs.yaml"), "--output-root", str(out), flag])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("batch-edit run: error: run has no --dry-run: 'batch-edit plan' with the same manifests")
    assert "unrecognized" not in error
    assert not out.exists()


def test_run_help_does_not_offer_it(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--dry-run" not in capsys.readouterr().out
