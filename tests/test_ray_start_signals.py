"""SIGINT while `run --ray` starts Ray: held until Ray is up, then the run stops as a stop while loading does (exit
130, the usual line, no job folder left, Ray shut down), never a KeyboardInterrupt inside Ray's process start-up.

The signal is delivered at the exact moment that breaks an unguarded start-up: in the parent, just as the first
fork Ray makes (its first process) returns, before logging's after-fork hook releases logging's lock. A
KeyboardInterrupt raised there is swallowed by the interpreter and leaves the lock held: the run went on as if
nothing had happened and hung for good on its first other thread to log. The injector is a fault-timing tool
only: nothing of Ray or the pipeline is faked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PHOTOS, write_pipeline_config

REPO = Path(__file__).resolve().parent.parent

# The hook is a C callable (libc's kill), so the interpreter runs the SIGINT handler at the next Python code: the
# next after-fork hook, logging's (registered before logging is imported, it runs before logging's). At every fork
# in this process: Ray starts several.
INJECTOR = """
import ctypes, functools, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive shell leaves it
if os.environ.get("BE_TEST_SIGINT_AT_FORK") and "logging" not in sys.modules:
    os.register_at_fork(after_in_parent=functools.partial(ctypes.CDLL(None).kill, os.getpid(), signal.SIGINT))
"""

MANIFEST = f"""
jobs:
  - name: started
    sources: [{PHOTOS / "cat.jpg"}]
    prompts: ["a tiger"]
    seed: [1, 2]
    num_inference_steps: 2
    width: 64
    height: 64
"""


@pytest.mark.slow
def test_sigint_while_ray_starts_stops_the_run_with_exit_130_and_leaves_nothing(tmp_path, tiny_model):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECTOR)
    config = write_pipeline_config(tmp_path / "tiny.yaml", tiny_model)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    root = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "inject"), str(REPO)]),
        "BE_TEST_SIGINT_AT_FORK": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "batch_edit", "run", str(tmp_path / "m.yaml"), "--pipeline", str(config)]
    command += ["--output-root", str(root), "--ray", "--workers", "1"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = process.communicate(timeout=240)  # Ray starts in seconds; the unguarded start-up never ended
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        pytest.fail(f"the run hung after a SIGINT while Ray started; stderr:\n{err}")
    assert process.returncode == 130, err
    assert "stopped by SIGINT while starting Ray; nothing was generated" in err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert "Ray worker(s)" not in err  # no worker started
    assert not root.exists() or not any(root.iterdir())  # no job folder made


def test_a_signal_within_held_is_noted_not_raised_and_the_handlers_come_back():
    from batch_edit.signals import held

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with held() as received:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handlers run between bytecodes
            if len(received) == 2:
                break
    assert received == [signal.SIGINT, signal.SIGTERM]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
