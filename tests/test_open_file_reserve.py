"""The open files a run keeps free to load the model and write, beside one per job folder: sized for what it loads
where. On a CPU, in process and not compiled, loading the tiny model and running needs about 5 beyond those open
when the run checks, so a run of a few jobs runs under a hard limit of 64 (128 kept free refused every run there);
one whose jobs would take the files the load needs is still refused before it locks any folder."""

from __future__ import annotations

import resource
import subprocess

from batch_edit.folder_lock import CPU_RESERVE, OPEN_FILES_RESERVE, run_reserve

from .conftest import _command, many_jobs


def _jobs(folder, count: int) -> str:
    return many_jobs(folder, count, strength=0.5, steps=2)


def _run_under_64(tmp_path, tiny_config, jobs: int) -> subprocess.CompletedProcess:
    def limit_of_64():  # the hard limit too: the run cannot raise the soft one past it
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    command, env = _command(("run", _jobs(tmp_path, jobs), "--pipeline", str(tiny_config), "--output-root", "new/out"))
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit_of_64
    )


def test_a_run_of_a_few_jobs_on_a_cpu_runs_under_a_limit_of_64_open_files(tmp_path, tiny_config):
    result = _run_under_64(tmp_path, tiny_config, 3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "total: 3 written, 0 failed" in result.stdout, result.stdout


def test_a_run_whose_jobs_would_take_the_files_its_load_needs_is_still_refused_up_front(tmp_path, tiny_config):
    """60 locks leave 4 of 64 open files: too few to load the model (a run of 56 jobs there ran out of open files
    while quanto loaded, with a traceback, where nothing was kept free)."""
    result = _run_under_64(tmp_path, tiny_config, 60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        f"needs {CPU_RESERVE} more to load the model and write, and the open-file limit (64) is too low for this "
        "one's 60 job(s)" in result.stderr
    ), result.stderr
    assert "loading" not in result.stderr  # refused before any folder was locked or the model loaded
    assert not (tmp_path / "new").exists()


def test_a_gpu_a_compile_or_ray_keep_the_larger_reserve():
    assert run_reserve("cpu", False) == CPU_RESERVE < OPEN_FILES_RESERVE
    for device, compiled, in_process in (("cuda", False, True), ("cuda:1", False, True), ("mps", False, True),
                                         ("cpu", True, True), ("cpu", "regional", True), ("cpu", False, False)):  # fmt: skip
        assert run_reserve(device, compiled, in_process) == OPEN_FILES_RESERVE, (device, compiled, in_process)
