"""A run whose job has nothing left to do, in a folder another run holds (remaking it with --overwrite, say), is
refused whole as one whose job has items to run is: before anything is written to any job folder, and without
a folder made for a job that has none."""

from __future__ import annotations

import os
import shutil

import pytest

from batch_edit.outputs import JobOutput

from .conftest import PHOTOS, batch_edit, file_stamps

JOB = "{name: %s, sources: a.jpg, prompts: %s, seed: 1, num_inference_steps: 2, width: 64, height: 64}"


@pytest.fixture
def done_jobs(tmp_path, tiny_config):
    """Jobs `done` and `long` run to their end; the command to run a manifest against their output root."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    (tmp_path / "first.yaml").write_text(f"jobs: [{JOB % ('done', 'x')}, {JOB % ('long', 'y')}]\n")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    first = batch_edit("run", "first.yaml", *command, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (tmp_path / "out" / "done" / "metadata.csv").unlink()  # what a refresh of job done would write again

    def run(*jobs: str, extra: tuple[str, ...] = ()):
        (tmp_path / "two.yaml").write_text("jobs: [" + ", ".join(jobs) + "]\n")
        return batch_edit("run", "two.yaml", *command, *extra, cwd=tmp_path)

    return tmp_path / "out", run


@pytest.fixture
def long_held(done_jobs):
    """Job long's folder held by another run (this process, through the lock API), as long as the test runs."""
    root, _ = done_jobs
    other = JobOutput(root, "long")
    other.lock()
    yield other
    other.close()


def _assert_refused_for_long(result, root, before) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    expected = f"error: another batch-edit run (pid {os.getpid()}) is writing to {root / 'long'}; wait for it"
    assert expected in result.stderr, result.stderr
    assert "loading" not in result.stderr and "nothing to do" not in result.stdout, result.stdout + result.stderr
    assert sorted(os.listdir(root)) == ["done", "long"]  # no folder for the new job
    assert file_stamps(root) == before  # nothing written to any job folder: job done's metadata.csv not rebuilt
    assert not (root / "done" / "metadata.csv").exists()


def test_a_held_folder_of_a_job_with_nothing_to_do_refuses_a_run_with_other_jobs_to_run(done_jobs, long_held):
    root, run = done_jobs
    before = file_stamps(root)
    result = run(JOB % ("brandnew", "z"), JOB % ("long", "y"), JOB % ("done", "x"))
    _assert_refused_for_long(result, root, before)


def test_a_held_folder_refuses_a_run_whose_every_job_has_nothing_to_do(done_jobs, long_held):
    root, run = done_jobs
    before = file_stamps(root)
    result = run(JOB % ("done", "x"), JOB % ("long", "y"))
    _assert_refused_for_long(result, root, before)


def test_a_held_folder_of_a_job_with_items_to_run_refuses_before_an_idle_job_is_finished(done_jobs, long_held):
    root, run = done_jobs
    before = file_stamps(root)
    result = run(JOB % ("done", "x"), JOB % ("long", "[y, v]"))  # a prompt added: job long has an item to run
    _assert_refused_for_long(result, root, before)


def test_a_run_with_no_folder_held_finishes_idle_jobs_and_makes_no_folder_for_one_held_back(done_jobs):
    root, run = done_jobs
    result = run(JOB % ("brandnew", "z"), JOB % ("later", "w"), JOB % ("done", "x"), extra=("--limit", "1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job brandnew: 1 written" in result.stdout, result.stdout
    assert (root / "done" / "metadata.csv").exists()  # the idle job finished as before
    assert not (root / "later").exists()  # held back by --limit: its lock checked, no folder made


def test_plan_is_not_refused_by_a_held_folder_and_writes_nothing(done_jobs, long_held, tiny_config):
    root, _ = done_jobs
    before = file_stamps(root)
    (root.parent / "two.yaml").write_text(f"jobs: [{JOB % ('done', 'x')}, {JOB % ('long', 'y')}]\n")
    result = batch_edit("plan", "two.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=root.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert file_stamps(root) == before
