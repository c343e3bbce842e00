"""What a stopped `run --overwrite` says a rerun does: nothing marks an item as redone, so the same command
starts over and one without --overwrite keeps the earlier results of the items not redone ("run the same command
again to resume" would be untrue)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from batch_edit import runner
from batch_edit.run_summary import print_stops
from tests.conftest import batch_edit, image_file


def _stops(capsys, overwrite: bool, error=None, unwritten=(), stopped_by="SIGINT") -> str:
    result = SimpleNamespace(error=error, unwritten=list(unwritten))
    print_stops(result, stopped_by, overwrite)
    return capsys.readouterr().err


def test_a_signal_after_overwrite_says_what_a_rerun_does(capsys):
    said = _stops(capsys, overwrite=True)
    assert "resume" not in said
    assert "with --overwrite redoes every item again" in said
    assert "without --overwrite" in said and "keep their earlier results" in said
    assert "run the same command again to resume" in _stops(capsys, overwrite=False)


def test_exit_3_after_overwrite_says_what_a_rerun_does(capsys):
    said = _stops(capsys, overwrite=True, error="cannot write x", stopped_by=None)
    assert "to resume" not in said and "redoes every item again" in said and "keep their earlier results" in said
    said = _stops(capsys, overwrite=True, unwritten=["cannot write metadata.csv"], stopped_by=None)
    assert "re-run the same command without --overwrite: it writes them without redoing any item" in said
    said = _stops(capsys, overwrite=False, unwritten=["cannot write metadata.csv"], stopped_by=None)
    assert "re-run the same command: it writes them without redoing any item" in said


@pytest.mark.parametrize("overwrite", [True, False])
def test_an_interrupt_outside_the_batches_says_what_a_rerun_does(tmp_path, tiny_config, monkeypatch, overwrite):
    """A Ctrl-C caught by `run` itself (outside the batches' own handler): faked where the run is driven."""
    image_file(tmp_path / "a.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - name: j\n    sources: a.png\n    prompts: p\n    num_inference_steps: 2\n    width: 64\n"
        "    height: 64\n"
    )

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "drive", interrupted)
    command = ["run", str(manifest), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    result = batch_edit(*command, *(["--overwrite"] if overwrite else []))
    assert result.returncode == 130, result.stderr
    if overwrite:
        assert "to resume" not in result.stderr and "with --overwrite redoes every item again" in result.stderr
    else:
        assert "run the same command again to resume" in result.stderr
