"""Machine-load helpers shared by the benchmarks: on 2 cores, any other process skews a timing several-fold,
so the benchmarks wait for an idle machine and record how much CPU others used during each timed run."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def busy_cpu_seconds() -> float:
    """CPU time all processes on the machine have used since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_idle(limit_s: float, threshold: float = 0.25) -> bool:
    """Wait (at most limit_s) for a second in which the machine used less than `threshold` cores."""
    deadline = time.monotonic() + limit_s
    while True:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        if busy_cpu_seconds() - before < threshold:
            return True
        if time.monotonic() > deadline:
            return False


def cpu_model(default: str = "?") -> str:
    """The processor's name from /proc/cpuinfo (`default` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def add_wait_idle_argument(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--wait-idle", type=float, default=default, metavar="SECONDS",
        help=f"before each timed run, wait up to this long for the machine to be idle (default: {default:g}; "
        "0: never wait)",
    )  # fmt: skip


def settle(limit_s: float) -> None:
    """Wait (at most limit_s; 0: not at all) for an idle machine, saying so when it stays busy."""
    if limit_s and not wait_until_idle(limit_s):
        print(f"  (the machine stayed busy for {limit_s:.0f} s; timing anyway)", flush=True)


@dataclass
class TimedRun:
    done: subprocess.CompletedProcess
    seconds: float  # wall clock
    cpu_seconds: float  # user + system CPU of the command itself
    foreign_cores: float  # cores' worth of CPU that other processes used meanwhile


def run_timed(command: list[str]) -> TimedRun:
    """Run `command` (output captured) and time it, with what it and everything else on the machine used."""
    busy, ours = busy_cpu_seconds(), children_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    cpu_seconds = children_cpu_seconds() - ours
    foreign = (busy_cpu_seconds() - busy) - cpu_seconds
    return TimedRun(done, seconds, cpu_seconds, max(0.0, foreign) / seconds)
