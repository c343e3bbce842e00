"""What a refused command says about the lock's holder, and the clean-up of a refused run finishing before a signal
takes effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from batch_edit import folder_lock
from batch_edit.errors import OutputBusyError
from batch_edit.manifest import load_manifests
from batch_edit.outputs import JobOutput
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run
from batch_edit.signals import LoadInterrupted

from .conftest import image_file


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
