"""A job folder whose lock is taken but whose `.batch-edit/` cannot be written (read-only, no descriptor left):
`prune` stops before any job changes, with a message and exit 3, not a traceback; a run with nothing to do still
finishes the job, naming itself in the owner file only where it can."""

from __future__ import annotations

import errno
import shutil

import pytest

from batch_edit import folder_lock, job_files, prune

from .conftest import PHOTOS, batch_edit, file_stamps

JOB = "{name: %s, sources: a.jpg, prompts: x, strength: %s, seed: 1, num_inference_steps: 2, width: 64, height: 64}"


@pytest.fixture
def three_jobs(tmp_path, tiny_config):
    """Jobs a, b, c run with two strengths each, then planned with one: prune has one result to move in each."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    jobs = ("a", "b", "c")
    (tmp_path / "m.yaml").write_text("jobs: [" + ", ".join(JOB % (j, "[0.5, 0.6]") for j in jobs) + "]\n")
    first = batch_edit("run", "m.yaml", *command, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (tmp_path / "m.yaml").write_text("jobs: [" + ", ".join(JOB % (j, 0.5) for j in jobs) + "]\n")
    return tmp_path, command


def _failing_for(folder_name: str, error: int, monkeypatch) -> None:
    written = folder_lock.write_owner_file

    def write_owner_file(state, by):
        if state.parent.name == folder_name:
            raise OSError(error, "Operation not permitted" if error == errno.EPERM else "Too many open files")
        written(state, by)

    monkeypatch.setattr(folder_lock, "write_owner_file", write_owner_file)


@pytest.mark.parametrize("dry_run", [False, True])
def test_prune_stops_cleanly_where_a_job_folder_cannot_name_its_holder(three_jobs, monkeypatch, dry_run):
    tmp_path, command = three_jobs
    root = tmp_path / "out"
    before = file_stamps(root)
    _failing_for("c", errno.EPERM, monkeypatch)
    result = batch_edit("prune", "m.yaml", *command, *(("--dry-run",) if dry_run else ()), cwd=tmp_path)
    if dry_run:  # a dry run writes no owner file: it lists the changes
        assert result.returncode == 0, result.stdout + result.stderr
        assert "would move 1" in result.stdout
        return
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"error: cannot write to the output folder {root / 'c'}: Operation not permitted" in result.stderr
    assert "prune stopped at job c: nothing changed in any job" in result.stderr, result.stderr
    assert file_stamps(root) == before
    assert not any((root / job / ".batch-edit" / "owner").exists() for job in "abc")  # every lock let go


@pytest.mark.parametrize("dry_run", [False, True])
def test_prune_out_of_open_files_while_locking_stops_cleanly(three_jobs, monkeypatch, dry_run):
    """Out of descriptors while writing the owner file (a prune), or while checking the folder (a dry run)."""
    tmp_path, command = three_jobs
    root = tmp_path / "out"
    before = file_stamps(root)
    _failing_for("b", errno.EMFILE, monkeypatch)
    checked, holding, locking = job_files.refuse_unsafe, prune.hold_job_folders, []

    def refuse_unsafe(path, *args, **kwargs):
        if locking and (root / "b" in path.parents or path == root / "b"):
            raise OSError(errno.EMFILE, "Too many open files")
        return checked(path, *args, **kwargs)

    def hold_job_folders(*args, **kwargs):
        locking.append(True)
        return holding(*args, **kwargs)

    monkeypatch.setattr(prune, "hold_job_folders", hold_job_folders)
    if dry_run:
        monkeypatch.setattr(job_files, "refuse_unsafe", refuse_unsafe)
    result = batch_edit("prune", "m.yaml", *command, *(("--dry-run",) if dry_run else ()), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"error: too many open files at {root / 'b'}: a prune holds one open file per job" in result.stderr
    assert "prune stopped at job b: nothing changed in any job" in result.stderr, result.stderr
    assert file_stamps(root) == before


def test_prune_refuses_before_locking_where_the_open_file_limit_cannot_hold_every_job(three_jobs, monkeypatch):
    tmp_path, command = three_jobs
    root = tmp_path / "out"
    before = file_stamps(root)
    # one open file short of a lock for each of the three jobs and the files a prune needs besides
    monkeypatch.setattr(
        folder_lock, "open_file_limit", lambda: folder_lock._open_now() + 3 + folder_lock.PRUNE_RESERVE - 1
    )
    took = []
    monkeypatch.setattr(folder_lock, "try_lock", lambda *args, **kwargs: took.append(args) or None)
    result = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "too many open files: a prune holds one open file per job until it ends" in result.stderr, result.stderr
    assert "prune stopped before locking any job folder: nothing changed in any job" in result.stderr
    assert "prune the jobs in parts" in result.stderr
    assert not took  # refused before any folder was locked
    assert file_stamps(root) == before


def test_a_rerun_with_nothing_to_do_finishes_a_job_whose_state_folder_is_read_only(three_jobs, monkeypatch):
    tmp_path, command = three_jobs
    root = tmp_path / "out"
    (tmp_path / "m.yaml").write_text("jobs: [" + ", ".join(JOB % (j, "[0.5, 0.6]") for j in "abc") + "]\n")
    (root / "c" / "metadata.csv").unlink()  # what the rerun writes again
    _failing_for("c", errno.EPERM, monkeypatch)
    result = batch_edit("run", "m.yaml", *command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout and "error" not in result.stderr, result.stdout + result.stderr
    assert (root / "c" / "metadata.csv").exists()
