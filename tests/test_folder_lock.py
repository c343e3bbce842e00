"""A run removes a job folder it made only while it holds that folder's lock: never one another run locked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_edit import folder_lock, job_files
from batch_edit.errors import OutputBusyError
from batch_edit.outputs import JobOutput

from .conftest import PHOTOS

# Runs batch-edit with a pause at one call of job_files: it touches SIGNAL, then waits for WAIT to exist.
# `made`: the run has just made the job folder and is about to lock it (the scheduler preempting it there).
# `locked`: the run has just locked the job folder and written its pid, before its model loads.
PAUSED_RUN = """
import os, sys, time
from pathlib import Path
from batch_edit import job_files
from batch_edit.cli import entry

signal_file, wait_file, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
hook = {"made": "refuse_unsafe", "locked": "sweep_temporaries"}[where]
original, paused = getattr(job_files, hook), []

def owned(folder):
    try:
        return (folder / ".batch-edit" / "owner").read_text() == f"{os.getpid()} run\\n"
    except OSError:
        return False

def pausing(path, *args, **kwargs):
    result = original(path, *args, **kwargs)
    here = path.name == ".batch-edit" and path.is_dir() if where == "made" else owned(path)
    if here and not paused:
        paused.append(path)
        signal_file.touch()
        deadline = time.monotonic() + 300
        while not wait_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return result

setattr(job_files, hook, pausing)
sys.argv = ["batch-edit", *sys.argv[4:]]
sys.exit(entry())
"""


def _paused_run(tmp_path: Path, signal: Path, wait: Path, where: str, *args: str) -> subprocess.Popen:
    script = tmp_path / "paused_run.py"
    script.write_text(PAUSED_RUN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(script), str(signal), str(wait), where, *args]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_refused_run_leaves_the_folder_another_run_locked_after_it_made_it(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a, b], width: 32, "
                               "height: 32, strength: 1.0, num_inference_steps: 1}]")  # fmt: skip
    args = ("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    made, locked, refused = tmp_path / "made", tmp_path / "locked", tmp_path / "refused"
    maker = _paused_run(tmp_path, made, locked, "made", *args)  # makes out/j, then waits before locking it
    try:
        _wait_for(made, maker)
        holder = _paused_run(tmp_path, locked, refused, "locked", *args)  # locks out/j, then waits
        try:
            _, maker_err = maker.communicate(timeout=300)  # refused, and cleans up while the other holds out/j
            assert maker.returncode == 2, maker_err
            assert "another batch-edit run" in maker_err and str(tmp_path / "out" / "j") in maker_err
            assert (tmp_path / "out" / "j" / ".batch-edit" / "lock").is_file()
            refused.touch()
            _, holder_err = holder.communicate(timeout=300)
        finally:
            holder.kill()
    finally:
        maker.kill()
    assert holder.returncode == 0, holder_err
    records = (tmp_path / "out" / "j" / ".batch-edit" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["status"] for line in records) == ["ok", "ok"]
    assert len(list((tmp_path / "out" / "j").glob("cat-*.png"))) == 2


def test_a_refused_lock_removes_nothing_the_run_holding_it_needs(tmp_path, monkeypatch):
    """In one process (the lock is per open file): the holder locks the folder the refused one just made."""
    root, holder, refused = tmp_path / "out", JobOutput(tmp_path / "out", "j"), JobOutput(tmp_path / "out", "j")
    original, locking = job_files.refuse_unsafe, []

    def lock_it_meanwhile(path, *args, **kwargs):
        original(path, *args, **kwargs)
        if path == refused.state and path.is_dir() and not locking:  # made, not yet locked
            locking.append(path)
            holder.lock()

    monkeypatch.setattr(job_files, "refuse_unsafe", lock_it_meanwhile)
    with pytest.raises(OutputBusyError):
        refused.lock()
    monkeypatch.undo()
    refused.discard_if_unused()
    assert (holder.state / "lock").is_file() and (holder.state / "owner").read_text() == f"{os.getpid()} run\n"
    holder.start("model: m\n", "abc")  # the holder writes into its folder as if nothing happened
    holder.finish()
    assert (holder.state / "records.jsonl").is_file()
    with pytest.raises(OutputBusyError):
        JobOutput(root, "j").lock()  # still held
    holder.close()


def test_a_released_folder_is_removed_only_once_its_maker_locks_it_again(tmp_path):
    made, other = JobOutput(tmp_path / "out", "j"), JobOutput(tmp_path / "out", "j")
    made.lock()
    made.close()  # released before its clean-up (a run whose readers never ran)
    other.lock()  # another run took the folder meanwhile
    made.discard_if_unused()
    assert other.state.is_dir()
    other.close()
    made.discard_if_unused()  # free again and still unused: what `made` created goes, the output root too
    assert not (tmp_path / "out").exists()


def test_a_folder_with_records_is_kept(tmp_path):
    output = JobOutput(tmp_path / "out", "j")
    output.open("model: m\n")
    output._records.write(b'{"status": "failed"}\n')
    output.discard_if_unused()
    assert (output.state / "records.jsonl").is_file()


def test_a_lock_file_removed_between_its_open_and_its_lock_is_not_taken(tmp_path, monkeypatch):
    """The lock file was opened just before the run that made the folder removed it, and locked just after:
    that lock guards nothing, so the folder is made again and its new lock file locked."""
    remover, late = JobOutput(tmp_path / "out", "j"), JobOutput(tmp_path / "out", "j")
    remover.lock()
    original = job_files.open_file

    def removed_meanwhile(path, *args, **kwargs):
        descriptor = original(path, *args, **kwargs)
        if path == late.state / "lock" and remover._lock.held:
            remover.discard_if_unused()  # removes the folder under its lock, then lets go
            assert not remover.folder.exists()
        return descriptor

    monkeypatch.setattr(job_files, "open_file", removed_meanwhile)
    late.lock()
    monkeypatch.undo()
    lock = late.state / "lock"
    assert lock.is_file()
    assert folder_lock.try_lock(lock) is None  # the file at the path is the one `late` holds
    with pytest.raises(OutputBusyError):
        JobOutput(tmp_path / "out", "j").lock()
    late.discard_if_unused()  # `late` made the folders again: they go with it
    assert not (tmp_path / "out").exists()


def test_a_lock_file_gone_with_its_folder_is_said_so(tmp_path):
    with pytest.raises(folder_lock.LockFileGone):
        folder_lock.try_lock(tmp_path / "gone" / "lock")


def _photos(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    (photos / "album").mkdir(parents=True)
    (photos / "holiday.jpg").write_bytes(b"precious")
    (photos / "album" / "p.jpg").write_bytes(b"precious too")
    (photos / ".batch-edit").mkdir()  # what is kept in the folder emptied first must not be spared either
    (photos / ".batch-edit" / "notes.txt").write_bytes(b"mine")
    return photos


def _listed(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("swapped", ["folder", "state", "root"])
@pytest.mark.parametrize("swap", ["link", "another folder"])
def test_a_folder_swapped_while_the_model_loads_is_not_emptied(tmp_path, swapped, swap):
    """A folder this run made, replaced (moved away, a link or another folder in its place) before the refused
    run removes it: neither what the link points to nor the folder now there loses anything."""
    photos = _photos(tmp_path)
    before = _listed(photos)
    output = JobOutput(tmp_path / "out", "a")
    output.lock()
    path = {"folder": output.folder, "state": output.state, "root": output.folder.parent}[swapped]
    moved = tmp_path / "moved"
    os.rename(path, moved)
    if swap == "link":
        path.symlink_to(photos if swapped != "root" else tmp_path)  # out -> a folder holding a/ (the photos)
        if swapped == "root":
            os.rename(photos, tmp_path / "a")
            photos = tmp_path / "a"
    else:
        shutil.copytree(photos, path if swapped != "root" else path / "a", symlinks=True)
        photos = path if swapped != "root" else path / "a"
    output.discard_if_unused()
    assert _listed(photos) == before
    assert (photos / "holiday.jpg").read_bytes() == b"precious"
    assert not output._lock.held


def test_the_output_root_made_goes_once_the_last_folder_in_it_has(tmp_path):
    """A run refused at the open-file limit removes its folders in two passes: at the second, the first job's
    folder (and its lock file) went at the first, and the output root it made (with the folders above it) goes
    now that the other jobs' folders have."""
    top = tmp_path / "new"
    first, second = JobOutput(top / "out", "a"), JobOutput(top / "out", "b")
    first.lock()
    second.lock()
    first.discard_if_unused()
    assert not first.folder.exists() and second.folder.is_dir()  # the root stays: b is still in it
    second.discard_if_unused()
    assert (top / "out").is_dir() and not any((top / "out").iterdir())
    first.discard_if_unused()
    assert not (top / "out").exists()
    assert not top.exists() and tmp_path.is_dir()  # the folder above the root, made by the run, goes too


def test_an_output_root_that_another_run_fills_meanwhile_stays(tmp_path):
    first, other = JobOutput(tmp_path / "out", "a"), JobOutput(tmp_path / "out", "b")
    first.lock()
    first.discard_if_unused()
    assert not (tmp_path / "out").exists()
    first.lock()
    other.lock()  # another run's job, in the root `first` made again
    first.discard_if_unused()
    first.discard_if_unused()
    assert other.state.is_dir() and (other.state / "lock").is_file()
    other.close()
