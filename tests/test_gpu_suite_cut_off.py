"""The GPU suite on a step cut off at its limit: its row names the last stage the step reached, the log holds the
step's stacks, and a memory step's config gets a row saying so in the memory table (a measured row stays).
`--only` runs the steps named in the order given. A stalled benchmark (a fault: a stand-in script that prints a
stage line, then hangs) stands in for the GPU benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STALLED = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)  # as the benchmark does
print("[    1.0 s] preparing the pipeline", file=sys.stderr, flush=True)
print("[    2.0 s] text encoder 2 (T5) call begins", file=sys.stderr, flush=True)
print("some library chatter", file=sys.stderr, flush=True)
time.sleep(120)
"""


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # its neighbours (memory_contract) import by name
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", module)  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STACK_DUMP_S", 1)  # the stalled script writes its stacks at once
    return module


def memory_step(suite, results: Path, name: str = "memory-16gb", timeout_s: int = 2):
    config = str(REPO / "configs" / "flux1-dev-16gb.yaml")
    args = ("--config", config, "--memory-cap-gib", "15", "--out", str(results / "gpu_memory.md"), "--calls", "2")
    return suite.Step(name, args, timeout_s, "the 16 GB config under a 15 GiB cap")


def test_a_cut_off_memory_step_says_where_it_was(tmp_path, monkeypatch, suite):
    results = tmp_path / "r"
    stalled = tmp_path / "stalled.py"
    stalled.write_text(STALLED)
    monkeypatch.setattr(suite, "BENCHMARK", stalled)
    monkeypatch.setattr(suite, "steps", lambda results, cache: [memory_step(suite, results)])
    assert suite.main(["--results", str(results)]) == 1
    reached = "timed out after 2 s; last stage: [    2.0 s] text encoder 2 (T5) call begins"
    assert f"| memory-16gb | {reached} |" in (results / "gpu_suite.md").read_text()
    log = (results / "gpu_suite.log").read_text()
    assert "time.sleep(120)" in log or "stalled.py" in log, "the step's stack is in the log"
    import memory_contract

    rows = {(row["config"], row["cap GiB"]): row for row in memory_contract.read_rows(results / "gpu_memory.md")}
    row = rows["flux1-dev-16gb.yaml", "15"]
    assert row["status"].startswith(reached) and row["peak GiB"] == "n/a" and row["s/image (steady median)"] == "n/a"
    assert rows["flux1-dev-24gb.yaml", "22"]["status"] == memory_contract.NOT_MEASURED, "the other rows stay"


def test_a_measured_row_is_not_replaced_by_a_cut_off_run(tmp_path, monkeypatch, suite):
    import memory_contract

    results = tmp_path / "r"
    measured = {**dict.fromkeys(memory_contract.COLUMNS, "n/a"), "config": "flux1-dev-16gb.yaml", "cap GiB": "15",
                "status": "ok", "peak GiB": "12.0", "GPU": "a GPU"}  # fmt: skip
    memory_contract.record(results / "gpu_memory.md", measured)
    stalled = tmp_path / "stalled.py"
    stalled.write_text(STALLED)
    monkeypatch.setattr(suite, "BENCHMARK", stalled)
    monkeypatch.setattr(suite, "steps", lambda results, cache: [memory_step(suite, results)])
    suite.main(["--results", str(results)])
    rows = {(row["config"], row["cap GiB"]): row for row in memory_contract.read_rows(results / "gpu_memory.md")}
    assert (
        rows["flux1-dev-16gb.yaml", "15"]["status"] == "ok" and rows["flux1-dev-16gb.yaml", "15"]["peak GiB"] == "12.0"
    )


def test_only_runs_the_steps_in_the_order_given(tmp_path, monkeypatch, suite):
    quick = tmp_path / "quick.py"
    quick.write_text("import sys\nprint('[    0.1 s] done', file=sys.stderr)\n")
    monkeypatch.setattr(suite, "BENCHMARK", quick)
    names = ["memory-24gb", "memory-16gb", "memory-12gb"]
    monkeypatch.setattr(
        suite, "steps", lambda results, cache: [suite.Step(name, ("--calls", "2"), 30, name) for name in names]
    )
    assert suite.main(["--results", str(tmp_path), "--only", "memory-12gb,memory-24gb"]) == 0
    ran = [line.split("|")[1].strip() for line in (tmp_path / "gpu_suite.md").read_text().splitlines()[6:]]
    assert ran == ["memory-12gb", "memory-24gb"]
