"""A run refused on a file system without locks removes the folders it made, without the lock it could not take:
only an empty lock file alone in a `.batch-edit/` it made, and the folders it made that are empty then."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil

import pytest

from .conftest import PHOTOS, batch_edit

JOB = "{name: %s, sources: a.jpg, prompts: x, strength: 0.5, seed: 1, num_inference_steps: 2, width: 64, height: 64}"
NO_LOCKS = "its file system does not support file locks"
OLD = 10**18  # a lock file's modification time (ns) that one made by the run cannot have


def _no_locks(monkeypatch, code: int, meanwhile=None) -> None:
    """flock refused as a file system without locks refuses it; `meanwhile(descriptor)` runs first, once."""
    calls = []

    def refused(descriptor, operation):
        calls.append(operation)
        if meanwhile is not None and len(calls) == 1:
            meanwhile(descriptor)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)


def _run(tmp_path, tiny_config, root="out"):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % 'a'}, {JOB % 'b'}]\n")
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", root, cwd=tmp_path)
    assert result.returncode == 2 and NO_LOCKS in result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def _tree(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_refused_run_leaves_no_folder_it_made(tmp_path, tiny_config, monkeypatch, code):
    """The output root and the folders above it that the run made go too."""
    _no_locks(monkeypatch, code)
    _run(tmp_path, tiny_config, root="deep/out")
    assert not (tmp_path / "deep").exists()


def test_an_existing_output_root_and_job_folder_stay_as_they_were(tmp_path, tiny_config, monkeypatch):
    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "mine.txt").write_text("kept")
    _no_locks(monkeypatch, errno.ENOLCK)
    _run(tmp_path, tiny_config)
    assert _tree(tmp_path / "out") == ["a", "a/mine.txt"]  # the .batch-edit/ it made went, with its lock file


def test_an_existing_state_folder_keeps_its_lock_file(tmp_path, tiny_config, monkeypatch):
    """A `.batch-edit/` the run did not make is not its to empty, even holding only a lock file."""
    (tmp_path / "out" / "a" / ".batch-edit").mkdir(parents=True)
    (tmp_path / "out" / "a" / ".batch-edit" / "lock").touch()
    _no_locks(monkeypatch, errno.ENOLCK)
    _run(tmp_path, tiny_config)
    assert _tree(tmp_path / "out") == ["a", "a/.batch-edit", "a/.batch-edit/lock"]


def test_a_file_written_meanwhile_keeps_the_folders(tmp_path, tiny_config, monkeypatch):
    """Something written into the new `.batch-edit/` (or a lock file with something in it) is not the run's: it
    stays, and so do the folders holding it."""
    state = tmp_path / "out" / "a" / ".batch-edit"

    def other(descriptor):
        (state / "other").write_text("not the run's")

    _no_locks(monkeypatch, errno.ENOLCK, other)
    _run(tmp_path, tiny_config)
    assert _tree(tmp_path / "out") == ["a", "a/.batch-edit", "a/.batch-edit/lock", "a/.batch-edit/other"]
    shutil.rmtree(tmp_path / "out")
    _no_locks(monkeypatch, errno.ENOLCK, lambda descriptor: os.write(descriptor, b"x"))
    _run(tmp_path, tiny_config)
    assert _tree(tmp_path / "out") == ["a", "a/.batch-edit", "a/.batch-edit/lock"]


def test_a_folder_swapped_in_meanwhile_stays(tmp_path, tiny_config, monkeypatch):
    """A `.batch-edit/` moved away and replaced by another folder holding an empty lock file, or by a link to
    one, is not the folder the run made: neither it nor what the link points to is touched."""
    state, elsewhere = tmp_path / "out" / "a" / ".batch-edit", tmp_path / "elsewhere"

    def swapped(descriptor):
        state.rename(tmp_path / "moved")
        state.mkdir()
        (state / "lock").touch()
        os.utime(state / "lock", ns=(OLD, OLD))

    _no_locks(monkeypatch, errno.ENOLCK, swapped)
    _run(tmp_path, tiny_config)
    assert _tree(tmp_path / "out") == ["a", "a/.batch-edit", "a/.batch-edit/lock"]
    assert (state / "lock").stat().st_mtime_ns == OLD  # that lock file, not one made again after its removal
    shutil.rmtree(tmp_path / "out")
    elsewhere.mkdir()
    (elsewhere / "lock").touch()
    os.utime(elsewhere / "lock", ns=(OLD, OLD))

    def linked(descriptor):
        shutil.rmtree(state)
        state.symlink_to(elsewhere)

    _no_locks(monkeypatch, errno.ENOLCK, linked)
    _run(tmp_path, tiny_config)
    assert (state.is_symlink(), _tree(elsewhere)) == (True, ["lock"])
    assert (elsewhere / "lock").stat().st_mtime_ns == OLD
