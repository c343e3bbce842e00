"""`prune` where a run holds one of its jobs' folders: refused before any job is pruned or listed."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

import pytest
from filelock import FileLock

from .conftest import PHOTOS, batch_edit

JOB = "{name: %s, sources: a.jpg, prompts: x, strength: %s, seed: 1, num_inference_steps: 2, width: 64, height: 64}"


def _files(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.name not in ("lock", "owner"))


def test_prune_refuses_before_any_job_where_a_later_jobs_folder_is_held(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('free', '[0.5, 0.6]')}, {JOB % ('held', '[0.5, 0.6]')}]\n")
    assert batch_edit("run", "m.yaml", *command, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('free', 0.5)}, {JOB % ('held', 0.5)}]\n")  # one result each out
    state = tmp_path / "out" / "held" / ".batch-edit"
    (state / "owner").write_text(str(os.getpid()))
    before = _files(tmp_path / "out")
    with FileLock(state / "lock").acquire(timeout=0):  # a run writing to the second job's folder
        for flags in (("--dry-run",), ()):
            result = batch_edit("prune", "m.yaml", *command, *flags, cwd=tmp_path)
            assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr, result.stdout + result.stderr
            assert "held" in result.stderr and result.stdout == ""  # no line for the free job first
            assert _files(tmp_path / "out") == before  # nothing moved in the free job either
    pruned = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    assert pruned.returncode == 0 and "job free: moved 1" in pruned.stdout and "job held: moved 1" in pruned.stdout


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EROFS])
def test_prune_stops_cleanly_where_a_jobs_folder_cannot_be_locked(tmp_path, tiny_config, monkeypatch, code):
    """A file system without locks (ENOLCK, EOPNOTSUPP, ENOSYS: a network mount, say) or mounted read-only: each
    prune stops at the first job, naming the folder and the reason, and advising what fixes that reason; nothing
    changed; no traceback."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', '[0.5, 0.6]')}]\n")
    assert batch_edit("run", "m.yaml", *command, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}]\n")  # one result to move out
    before = _files(tmp_path / "out")

    def refused(descriptor, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)
    folder = tmp_path / "out" / "a"
    no_locks = code != errno.EROFS
    for flags in (("--dry-run",), ()):
        result = batch_edit("prune", "m.yaml", *command, *flags, cwd=tmp_path)
        assert result.returncode == 3, result.stdout + result.stderr
        if no_locks:
            assert (
                f"cannot lock the output folder {folder}: its file system does not support file locks "
                f"({os.strerror(code)})" in result.stderr
            ), result.stderr
            assert "copy the output root to a local file system, or enable file locking" in result.stderr
            assert "run the same prune again to finish" in result.stderr and "writable" not in result.stderr
        else:
            assert f"cannot lock the output folder {folder}: {os.strerror(code)}" in result.stderr, result.stderr
            assert "Make the output folder writable and run the same prune again" in result.stderr
        assert "prune stopped at job a: nothing changed" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert _files(tmp_path / "out") == before
    monkeypatch.undo()
    pruned = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    assert pruned.returncode == 0 and "job a: moved 1" in pruned.stdout, pruned.stdout + pruned.stderr


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_run_where_the_file_system_has_no_locks_says_so_and_what_to_do(tmp_path, tiny_config, monkeypatch, code):
    """The same lock refused to a run: refused before anything runs, saying why and where to write instead."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}]\n")

    def refused(descriptor, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"cannot lock the output folder {tmp_path / 'out' / 'a'}: its file system does not support file locks "
        f"({os.strerror(code)})" in result.stderr
    ), result.stderr
    assert "give --output-root a folder on a local file system" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # the folders it made (and their lock file) went again
