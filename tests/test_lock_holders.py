"""What a refused command says about the lock's holder, a run that would run out of open files, and the clean-up of
a refused run finishing before a signal takes effect."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys

import pytest

from batch_edit import engine, folder_lock
from batch_edit.errors import OutputBusyError
from batch_edit.manifest import load_manifests
from batch_edit.outputs import JobOutput
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run
from batch_edit.signals import LoadInterrupted

from .conftest import _command, batch_edit, image_file, many_jobs


def _refusal(root, job: str = "j") -> str:
    with pytest.raises(OutputBusyError) as refused:
        JobOutput(root, job).lock()
    return str(refused.value)


def _held_without_owner(output: JobOutput) -> int:
    """The folder's lock taken as a dry run or a run removing the folder it made takes it: no owner file written."""
    descriptor = folder_lock.try_lock(output.state / folder_lock.LOCK_NAME)
    assert descriptor is not None
    return descriptor


def _ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------- the lock's holder


def test_a_released_lock_leaves_no_pid_for_a_later_refusal_to_name(tmp_path):
    root = tmp_path / "out"
    earlier = JobOutput(root, "j")
    earlier.lock()  # a run (this process: still running) that has ended with this folder
    assert (earlier.state / "owner").read_text() == f"{os.getpid()} run\n"
    earlier.close()
    assert not (earlier.state / "owner").exists()
    descriptor = _held_without_owner(earlier)  # a prune --dry-run, say, holds it a moment
    try:
        message = _refusal(root)
    finally:
        folder_lock.unlock(descriptor)
    assert message.startswith(f"another batch-edit process is writing to {earlier.folder}"), message
    assert "pid" not in message


def test_a_refusal_names_no_process_that_is_not_running(tmp_path):
    output = JobOutput(tmp_path / "out", "j")
    output.lock()
    output.close()
    gone = _ended_pid()
    (output.state / "owner").write_text(f"{gone} run\n")  # as a run killed meanwhile leaves it
    descriptor = _held_without_owner(output)
    try:
        message = _refusal(tmp_path / "out")
    finally:
        folder_lock.unlock(descriptor)
    assert f"pid {gone}" not in message and message.startswith("another batch-edit process is writing"), message


def test_a_refusal_names_the_running_holder_and_its_command(tmp_path):
    pruning = JobOutput(tmp_path / "out", "j")
    pruning.lock(by="prune")
    try:
        message = _refusal(tmp_path / "out")
    finally:
        pruning.close()
    assert message.startswith(f"another batch-edit prune (pid {os.getpid()}) is writing to {pruning.folder}"), message


def test_a_run_finishing_an_idle_job_names_itself_while_it_holds_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "out"
    idle = JobOutput(root, "j")
    idle.open("model: m\n")
    idle.close()
    (idle.state / "owner").write_text(f"{_ended_pid()} run\n")  # what a killed run left
    meanwhile = []
    monkeypatch.setattr(idle, "finish_files", lambda: meanwhile.append(_refusal(root)))
    idle.refresh()
    assert meanwhile and meanwhile[0].startswith(f"another batch-edit run (pid {os.getpid()}) is writing"), meanwhile
    assert not (idle.state / "owner").exists()  # released: nothing names it any more


# --------------------------------------------------------------------------- the open-file limit


def _many_jobs(folder, count: int) -> str:
    return many_jobs(folder, count, "many.yaml")


def test_a_run_whose_locks_fit_the_open_file_limit_but_its_load_would_not_is_refused_up_front(tmp_path, tiny_config):
    manifest = _many_jobs(tmp_path, 57)  # every lock fits in 64 open files; loading the model then did not

    def limit_of_64():  # the hard limit too: the run cannot raise the soft one past it
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    command, env = _command(("run", manifest, "--pipeline", str(tiny_config), "--output-root", "new/out"))
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit_of_64
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "too many open files" in result.stderr and "open-file limit (64)" in result.stderr, result.stderr
    assert "loading" not in result.stderr  # refused before any folder was locked
    assert not (tmp_path / "new").exists()


def test_running_out_of_open_files_while_the_model_loads_is_refused_saying_so(tmp_path, tiny_config, monkeypatch):
    def out_of_files(verbose):  # where the first run out of open files failed: importing transformers
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), "site-packages/transformers/models")

    monkeypatch.setattr(engine, "quiet_libraries", out_of_files)
    result = batch_edit("run", _many_jobs(tmp_path, 3), "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error: too many open files while loading the pipeline" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()  # the folders the run made are gone


# --------------------------------------------------------------------------- a signal during the clean-up


def test_a_signal_while_a_refused_run_removes_its_folders_stops_it_once_all_are_removed(tmp_path, monkeypatch):
    for name in "abc":
        image_file(tmp_path / f"{name}.png")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n" + "".join(f"  - {{name: {n}, sources: {n}.png, prompts: p, width: 32, height: 32}}\n" for n in "abc")
    )
    (manifest,) = load_manifests([tmp_path / "m.yaml"])
    plans = plan_jobs(list(manifest.jobs), {"model": "fake"})
    root = tmp_path / "out"
    other = JobOutput(root, "c")  # another run holds job c: this one is refused, and removes a and b it made
    other.lock()
    remove, removing = folder_lock.remove_made, []

    def interrupted(*args):  # the first Ctrl-C arrives as job b's folder is removed
        if not removing:
            signal.raise_signal(signal.SIGINT)
        removing.append(args[1].name)
        return remove(*args)

    monkeypatch.setattr(folder_lock, "remove_made", interrupted)
    config = PipelineConfig(model="fake", device="cpu", batch_size=2)
    try:
        with pytest.raises(LoadInterrupted):
            run(plans, config, root, lambda _: pytest.fail("a refused run loads nothing"), RunOptions())
    finally:
        other.close()
    assert removing == ["b", "a"]
    assert sorted(os.listdir(root)) == ["c"]
