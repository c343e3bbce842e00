"""benchmarks/quanto_move_time.py in its reduced form (small layers, moved to the meta device on the CPU) and as a
step of the GPU suite: every row measured and written, the figures kept out of benchmarks/results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

SCRIPT = REPO / "benchmarks" / "quanto_move_time.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)


def test_the_reduced_form_measures_each_move_and_names_its_machine(tmp_path):
    result = run("--reduced", "--out", str(tmp_path / "q.md"))
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "q.md").read_text()
    assert "REDUCED CPU FORM" in text and "Machine: " in text
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in text.splitlines() if line.startswith("| ")}
    moved = [what for what in rows if "CPU -> meta" in what]
    assert [("quanto's unpacking" in what, "quanto_moves" in what) for what in moved] == [(0, 1), (1, 0)]
    measured = [what for what, cells in rows.items() if what != "what" and float(cells[0]) > 0]
    assert len(measured) == 5, rows  # quantize, two moves, two FLUX blocks


def test_reduced_figures_never_go_to_the_results_folder(tmp_path):
    result = run("--reduced")
    assert result.returncode == 2 and "--reduced needs --out" in result.stderr


@pytest.mark.slow  # the suite's shell entry point and a step: tens of seconds on 2 cores
def test_the_suite_runs_it_as_a_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    command = [str(REPO / "benchmarks" / "gpu_suite.sh"), "--reduced", "--results", str(tmp_path), "--only",
               "quanto-moves"]  # fmt: skip
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "| quanto-moves | ok |" in (tmp_path / "gpu_suite.md").read_text()
    assert "REDUCED CPU FORM" in (tmp_path / "gpu_quanto_moves.md").read_text()
