"""`prune` holds every job folder's lock from before it plans to its last move, and makes no folder to lock one:
a run finishing or starting meanwhile, or removing the folders it made, cannot leave a prune half done, planned
from what a run then changed, or recreating what that run removed."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil

import pytest

from batch_edit import cli, folder_lock, prune
from batch_edit.errors import OutputBusyError
from batch_edit.folder_lock import FolderLock
from batch_edit.outputs import JobOutput

from .conftest import PHOTOS, batch_edit

JOB = "{name: %s, sources: a.jpg, prompts: x, strength: %s, seed: 1, num_inference_steps: 2, width: 64, height: 64}"
CHAIN = """jobs:
  - {name: a, sources: [%s], prompts: a, width: 32, height: 32, strength: 1.0, num_inference_steps: 1}
  - {name: b, sources: out/a, prompts: 'b {stem}', width: 32, height: 32, strength: 1.0, num_inference_steps: 1}
"""


def _files(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.name not in ("lock", "owner"))


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


def _two_jobs_one_result_each_to_move(tmp_path, tiny_config) -> tuple[str, ...]:
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', '[0.5, 0.6]')}, {JOB % ('b', '[0.5, 0.6]')}]\n")
    assert batch_edit("run", "m.yaml", *command, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}, {JOB % ('b', 0.5)}]\n")
    return command


def test_a_run_finishing_while_prune_starts_is_planned_with(tmp_path, tiny_config, monkeypatch):
    """A run of the same chain that ends after prune read the manifests but before it locked: the results it made
    in the reading job b, from the new results of job a, are planned, not moved out as not in the plan."""
    for photo in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / photo, tmp_path / photo)
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(CHAIN % "cat.jpg")
    assert batch_edit("run", "m.yaml", *command, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(CHAIN % "cat.jpg, coffee.jpg")  # a source added: one more item in a, then b
    named, runs = cli.job_names, []

    def then_a_run_ends(*args, **kwargs):
        names = named(*args, **kwargs)
        if not runs:  # the run of the same manifest ends in the window, before any lock is taken
            runs.append(batch_edit("run", "m.yaml", *command, cwd=tmp_path))
        return names

    monkeypatch.setattr(cli, "job_names", then_a_run_ends)
    pruned = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    assert runs[0].returncode == 0, runs[0].stdout + runs[0].stderr
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "job b: moved 0, rejected 0, kept 2" in pruned.stdout, pruned.stdout
    assert len(list((tmp_path / "out" / "b").glob("coffee-*.png"))) == 1  # the run's new result stays
    assert not (tmp_path / "out" / "b" / ".batch-edit" / "pruned").exists()
    assert all(record["status"] == "ok" for record in _records(tmp_path / "out" / "b"))
    monkeypatch.undo()
    again = batch_edit("run", "m.yaml", *command, cwd=tmp_path)
    assert again.returncode == 0 and "job b: 0 written, 2 already done" in again.stdout, again.stdout


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_run_cannot_take_a_later_job_folder_while_prune_goes(tmp_path, tiny_config, monkeypatch, dry_run):
    """Every job folder is held from before the first job is pruned (or listed) to the end: a run trying to lock job
    b once job a is done is refused, and the prune does both jobs."""
    command = _two_jobs_one_result_each_to_move(tmp_path, tiny_config)
    pruning, tries = prune.prune_job, []

    def then_a_run_takes_b(plan, *args, **kwargs):
        result = pruning(plan, *args, **kwargs)
        if plan.name == "a":
            run = JobOutput(tmp_path / "out", "b")
            try:
                run.lock()
            except OutputBusyError as exc:
                tries.append(str(exc))
            else:
                tries.append(run)  # it got the folder: held until the prune ended, as a run would hold it
        return result

    monkeypatch.setattr(prune, "prune_job", then_a_run_takes_b)
    flags = ("--dry-run",) if dry_run else ()
    result = batch_edit("prune", "m.yaml", *command, *flags, cwd=tmp_path)
    for taken in tries:
        if isinstance(taken, JobOutput):
            taken.close()
    assert [type(taken) for taken in tries] == [str], "a run took job b's folder while prune was going"
    # a prune names itself in the owner file; a dry run writes none, so the run is told of another process
    held_by = "another batch-edit process" if dry_run else f"another batch-edit prune (pid {os.getpid()})"
    assert held_by in tries[0], tries[0]
    assert result.returncode == 0, result.stdout + result.stderr
    verb = "would move" if dry_run else "moved"
    assert f"job a: {verb} 1" in result.stdout and f"job b: {verb} 1" in result.stdout, result.stdout


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_later_job_folder_that_cannot_be_locked_stops_prune_before_any_job(
    tmp_path, tiny_config, monkeypatch, dry_run
):
    """Job b's folder cannot be locked (a file system without locks there): nothing is pruned in job a either, the
    prune says so and exits 3, and the same prune finishes once it can lock."""
    command = _two_jobs_one_result_each_to_move(tmp_path, tiny_config)
    before = _files(tmp_path / "out")
    b_lock = os.stat(tmp_path / "out" / "b" / ".batch-edit" / "lock")
    locking = fcntl.flock

    def no_locks_in_b(descriptor, operation):
        if os.path.samestat(os.fstat(descriptor), b_lock):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return locking(descriptor, operation)

    monkeypatch.setattr(fcntl, "flock", no_locks_in_b)
    flags = ("--dry-run",) if dry_run else ()
    result = batch_edit("prune", "m.yaml", *command, *flags, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"cannot lock the output folder {tmp_path / 'out' / 'b'}" in result.stderr, result.stderr
    assert "prune stopped at job b: nothing changed in any job" in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert _files(tmp_path / "out") == before  # job a untouched
    monkeypatch.undo()
    pruned = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    assert pruned.returncode == 0 and "job a: moved 1" in pruned.stdout and "job b: moved 1" in pruned.stdout


def test_prune_makes_no_folder_that_a_refused_run_removes(tmp_path, tiny_config, monkeypatch):
    """A run makes job x's folders (and the output root) once prune checked its locks, and removes them (refused:
    nothing written) as prune comes to lock x: prune leaves nothing behind; x had nothing to prune."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('x', 0.5)}]\n")
    root, runs = tmp_path / "new" / "out", []
    pruning, trying = prune.prune_job, FolderLock.try_take

    def a_run_makes_x_first(plan, *args, **kwargs):
        run = JobOutput(root, plan.name)
        run.lock()  # makes new/, new/out/, x/ and its lock, as a run loading its model
        runs.append(run)
        return pruning(plan, *args, **kwargs)

    def refused_as_prune_locks(self, *args, **kwargs):
        writing = kwargs.get("write_owner", args[1] if len(args) > 1 else True)
        if runs and self is not runs[0]._lock and writing:  # the lock prune prunes under: the run goes first
            runs.pop().discard_if_unused()
        return trying(self, *args, **kwargs)

    monkeypatch.setattr(prune, "prune_job", a_run_makes_x_first)
    monkeypatch.setattr(FolderLock, "try_take", refused_as_prune_locks)
    result = batch_edit("prune", "m.yaml", "--pipeline", str(tiny_config), "--output-root", str(root), cwd=tmp_path)
    for run in runs:  # the run, refused, removes what it made
        run.discard_if_unused()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job x: moved 0, rejected 0, kept 0" in result.stdout, result.stdout
    assert not (tmp_path / "new").exists(), _files(tmp_path / "new")


def test_take_existing_makes_nothing_where_a_run_removes_its_folders_meanwhile(tmp_path, monkeypatch):
    """The folders a run made and removes (refused) just as prune opens the lock file: prune's lock reports the
    folder gone and leaves nothing; a folder never made is gone too, and nothing is made for it."""
    root = tmp_path / "out"
    folder, state = root / "x", root / "x" / ".batch-edit"
    run = FolderLock(folder, state)
    run.take()
    opening = folder_lock.try_lock

    def removed_first(path, *args, **kwargs):
        if run.held:
            run.discard_unused(state / "records.jsonl")  # the run: refused, it removes what it made
        return opening(path, *args, **kwargs)

    monkeypatch.setattr(folder_lock, "try_lock", removed_first)
    pruning = FolderLock(folder, state)
    assert pruning.take_existing(by="prune") is False and not pruning.held
    assert not root.exists()
    assert FolderLock(folder, state).take_existing(by="prune") is False and not root.exists()


def test_take_existing_locks_a_folder_with_records_whose_lock_file_was_deleted(tmp_path):
    folder, state = tmp_path / "x", tmp_path / "x" / ".batch-edit"
    state.mkdir(parents=True)
    (state / "records.jsonl").write_text("")
    pruning = FolderLock(folder, state)
    assert pruning.take_existing(by="prune", write_owner=False) is True and (state / "lock").is_file()
    with pytest.raises(OutputBusyError):
        FolderLock(folder, state).take_existing(by="prune")
    pruning.release()
    emptied = FolderLock(tmp_path / "y", tmp_path / "y" / ".batch-edit")
    (tmp_path / "y" / ".batch-edit").mkdir(parents=True)  # empty: a run's, removing it (the lock file went last)
    assert emptied.take_existing(by="prune") is False and not (tmp_path / "y" / ".batch-edit" / "lock").exists()


def test_a_job_added_to_the_manifest_while_prune_starts_is_locked_before_it_is_pruned(
    tmp_path, tiny_config, monkeypatch
):
    """The manifest edited between prune's first reading and its locks, naming job b too, whose folder a run holds:
    b is locked before it is planned and pruned, so the prune is refused whole and job a is left as it was."""
    command = _two_jobs_one_result_each_to_move(tmp_path, tiny_config)
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}]\n")
    before, named, runs = _files(tmp_path / "out"), cli.job_names, []

    def then_b_added(*args, **kwargs):
        names = named(*args, **kwargs)
        if not runs:
            (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}, {JOB % ('b', 0.5)}]\n")
            runs.append(JobOutput(tmp_path / "out", "b"))
            runs[0].lock()  # a run writing to b
        return names

    monkeypatch.setattr(cli, "job_names", then_b_added)
    try:
        result = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    finally:
        runs[0].close()
    assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr, result.stdout + result.stderr
    assert str(tmp_path / "out" / "b") in result.stderr and result.stdout == ""
    assert _files(tmp_path / "out") == before
