"""A second SIGINT/SIGTERM while batches run exits at once (130/143) and says in one line what is left."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import os, signal, sys, time
from batch_edit.signals import StopOnSignal
signum = int(sys.argv[1])
with StopOnSignal("finishing the batch in progress, then stopping"):
    os.kill(os.getpid(), signum)
    os.kill(os.getpid(), signum)
    time.sleep(30)
print("not stopped")
"""


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_exits_at_once_saying_what_is_left(signum, status):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(int(signum))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stderr
    assert "not stopped" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert f"{signum.name} received: finishing the batch in progress" in lines[0]
    assert lines[-1].startswith(f"stopped at once by a second {signum.name}: the items in progress are lost")
    assert lines[-1].endswith("run the same command again to resume")
