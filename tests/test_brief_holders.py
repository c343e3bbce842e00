"""Two runs with nothing to do started at once: one finishing a job (its `refresh`) or checking it holds the job
folder a moment, and the other waits for it instead of refusing; a holder writing items still refuses at once,
and so does a brief holder that does not let go in time."""

from __future__ import annotations

import os
import shutil

import pytest

from batch_edit import brief_holders, folder_lock

from .conftest import PHOTOS, batch_edit

JOB = "{name: %s, sources: a.jpg, prompts: x, seed: 1, num_inference_steps: 2, width: 64, height: 64}"


@pytest.fixture
def done_job(tmp_path, tiny_config):
    """Jobs a and done run to their end; the command that runs them again (nothing to do)."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % 'a'}, {JOB % 'done'}]\n")
    command = ("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    first = batch_edit(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    return tmp_path, command


def _held_by(tmp_path, owner: str | None):
    """Job done's folder locked as another process would (a descriptor of its own), `owner` written; a function
    that lets it go as that holder would (its owner file removed first)."""
    state = tmp_path / "out" / "done" / ".batch-edit"
    descriptor = folder_lock.try_lock(state / folder_lock.LOCK_NAME)
    assert descriptor is not None
    if owner is not None:
        folder_lock.write_owner_file(state, owner)
    held = [descriptor]

    def let_go():
        if held:
            folder_lock.unlock(held.pop(), state if owner is not None else None)

    return let_go


@pytest.mark.parametrize("owner", [f"run {brief_holders.IDLE}", None], ids=["finishing", "checking"])
def test_a_run_with_nothing_to_do_waits_for_another_finishing_or_checking_the_job(done_job, monkeypatch, owner):
    tmp_path, command = done_job
    let_go, waited = _held_by(tmp_path, owner), []
    # the other run lets go while this one waits: at its first pause
    monkeypatch.setattr(brief_holders.time, "sleep", lambda seconds: waited.append(seconds) or let_go())
    try:
        result = batch_edit(*command, cwd=tmp_path)
    finally:
        let_go()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout and waited, result.stdout + result.stderr


def test_a_run_writing_items_there_refuses_at_once(done_job, monkeypatch):
    tmp_path, command = done_job
    let_go, waited = _held_by(tmp_path, "run"), []
    monkeypatch.setattr(brief_holders.time, "sleep", waited.append)
    try:
        result = batch_edit(*command, cwd=tmp_path)
    finally:
        let_go()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"another batch-edit run (pid {os.getpid()}) is writing to" in result.stderr
    assert not waited


def test_a_run_finishing_the_job_that_does_not_let_go_in_time_refuses(done_job, monkeypatch):
    tmp_path, command = done_job
    let_go = _held_by(tmp_path, f"run {brief_holders.IDLE}")
    monkeypatch.setattr(brief_holders, "BRIEF_HOLD_WAIT_S", 0.2)
    try:
        result = batch_edit(*command, cwd=tmp_path)
    finally:
        let_go()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"another batch-edit run (pid {os.getpid()}) is writing to" in result.stderr


def test_a_run_finishing_a_job_with_nothing_to_do_names_itself_so(done_job, monkeypatch):
    tmp_path, command = done_job
    (tmp_path / "out" / "done" / "metadata.csv").unlink()  # what finishing it writes again
    written, write = [], folder_lock.write_owner_file
    monkeypatch.setattr(folder_lock, "write_owner_file", lambda state, by: written.append(by) or write(state, by))
    result = batch_edit(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert written == [f"run {brief_holders.IDLE}"] * 2
    assert brief_holders.held_briefly(tmp_path / "out" / "done" / ".batch-edit")  # no owner file left: none runs
