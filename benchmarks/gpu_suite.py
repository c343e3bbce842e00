"""The whole GPU check list in one run, most important first, each step under its own timeout and the whole
under a time budget; every step's rows are written as soon as measured (a cut-off run keeps what it measured).
Started by gpu_suite.sh, which installs what is missing first.

Steps, in order: the memory contract first (each shipped config under its card's cap): the 24 GB config under
22 GiB; what moving quanto's qint4 T5-XXL between the CPU and the GPU costs, with quanto's own unpacking and with
batch_edit.quanto_moves (quanto_move_time.py: the load of every quanto config, and each encoder visit under
`offload: model`); the 16 GB one under 15 and the 12 GB one under 11; the inpaint, fill and kontext 24 GB configs under 22
(each task's own pipeline and items); schnell at 4 steps under 22; the 80 GB bf16 config under 78; the 24 GB
config without VAE tiling/slicing (is tiling needed?). Then speed: the throughput reference (quanto) and torchao
fp8 with regional compile in one run (filling a kept compile cache); a second process on that warm cache (time to
first image); bf16; fp8 with regional compile and the speed options, then with cuDNN attention, autotuned
kernels, CUDA graphs; the Hopper config as shipped (whole-model compile at batch auto, a long cold compile) and
torchao fp8 with whole-model compile at batch 1: last. Steps the budget leaves out run on their own later:
`--only name,...` runs those in the order given (a lent machine's 15 minutes hold about one full call: pass
the steps still unmeasured, the cheapest and most informative first).

A step cut off at its limit is sent SIGUSR1 first: the benchmark writes every thread's stack into the log, and
its timestamped stage lines (weights built, each component quantized, the move or the offload hooks, each text
encoder call, VAE encode and decode, each denoising step, each call's seconds) show where the time went. The
step's row in gpu_suite.md names the last stage it reached (so does any row that did not end ok), and a memory
step cut off so gets that row in the memory table (unless it holds a measured one for that config and cap).

The memory steps of the 24, 16 and 12 GB configs also measure each phase's transient (--phases).

Results: gpu_memory.md (memory table, one row per config and cap), gpu_throughput_suite*.md and the step log
gpu_suite.md in --results (default benchmarks/results), copied to $OUT when it is set; every step's output is
appended to gpu_suite.log there. `--reduced`: the same steps with the tiny model on the CPU (no caps), in seconds,
into a results folder that must be given: what the tests run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARK = REPO / "benchmarks" / "gpu_throughput.py"
STACK_DUMP_S = 3  # a timed-out step's time to write its stacks before it is killed


# The shipped configs of the other tasks, each its own pipeline: a memory row apiece.
TASK_CONFIGS = [
    ("inpaint", "flux1-dev-inpaint-24gb.yaml", "FLUX.1-dev, a mask per photo"),
    ("fill", "flux1-fill-dev-24gb.yaml", "FLUX.1-Fill-dev's transformer, a mask per photo, 50 steps"),
    ("kontext", "flux1-kontext-dev-24gb.yaml", "the source's tokens join the sequence"),
]


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]
    timeout_s: int
    what: str
    script: str | None = None  # beside this file; None: the throughput benchmark (BENCHMARK)


def steps(results: Path, cache: Path) -> list[Step]:
    config = lambda name: str(REPO / "configs" / name)  # noqa: E731
    throughput = lambda suffix: str(results / f"gpu_throughput_suite{suffix}.md")  # noqa: E731
    memory = ("--out", str(results / "gpu_memory.md"), "--calls", "2")
    phases = (*memory, "--phases")  # the small-card configs: which phase owns the transient (no compile there)
    # tuned-regional's settings, which the compile-mode steps vary
    tuned = ("--config", config("flux1-dev-hopper-fast.yaml"), "--set", "compile=regional", "--set", "batch_size=1",
             "--set", "fuse_qkv=true", "--set", "vae_channels_last=true")  # fmt: skip
    return [
        Step("memory-24gb", ("--config", config("flux1-dev-24gb.yaml"), "--memory-cap-gib", "22", *phases), 150,
             "the 24 GB config under a 22 GiB cap"),
        Step("memory-16gb", ("--config", config("flux1-dev-16gb.yaml"), "--memory-cap-gib", "15", *phases), 240,
             "the 16 GB config under a 15 GiB cap"),
        Step("memory-12gb", ("--config", config("flux1-dev-12gb.yaml"), "--memory-cap-gib", "11", *phases), 300,
             "the 12 GB config under an 11 GiB cap (about 94 s an image on an H200: two calls take most of 300 s)"),
        *(Step(f"memory-{task}-24gb", ("--config", config(name), "--memory-cap-gib", "22", *memory), 150,
               f"the 24 GB {task} config under a 22 GiB cap ({what})")
          for task, name, what in TASK_CONFIGS),
        Step("memory-schnell", ("--config", config("flux1-schnell.yaml"), "--memory-cap-gib", "22", "--steps", "4",
                                "--guidance", "0", *memory), 120,
             "the schnell config under 22 GiB at its 4 steps (on FLUX.1-dev's architecture: schnell's lacks only "
             "the small guidance embedder)"),
        Step("quanto-moves", ("--out", str(results / "gpu_quanto_moves.md")), 150,
             "T5-XXL's qint4 layers moved CPU -> GPU with quanto's unpacking and with batch_edit.quanto_moves, and "
             "back; qint8 quantization of FLUX blocks on the CPU (a real load's costs)", "quanto_move_time.py"),  # after the memory steps: quanto's own way builds its CUDA extension (minutes)
        Step("memory-80gb-bf16", ("--config", config("flux1-dev-80gb-bf16.yaml"), "--memory-cap-gib", "78",
                                  *memory), 150,
             "the 80 GB bf16 config under 78 GiB (batch auto)"),
        Step("memory-24gb-untiled",
             ("--config", config("flux1-dev-24gb.yaml"), "--set", "vae_tiling=false", "--set", "vae_slicing=false",
              "--memory-cap-gib", "22", *phases), 120,
             "the 24 GB config without VAE tiling or slicing under 22 GiB"),
        Step("throughput-reference-regional",
             ("--configs", "quanto:1,torchao+regional:1", "--calls", "3", "--compile-cache-dir", str(cache),
              "--out", throughput("")), 420,
             "quanto reference and torchao fp8 + regional compile, same run (fills the compile cache)"),
        Step("cold-start-regional",
             ("--config", config("flux1-dev-hopper-fast.yaml"), "--set", "compile=regional", "--set", "batch_size=1",
              "--compile-cache-dir", str(cache), *memory), 150,
             "a second process on the warm compile cache: time to first image"),
        Step("throughput-bf16", ("--configs", "none:1", "--calls", "3", "--out", throughput("-bf16")), 90, "bf16"),
        Step("tuned-regional",
             ("--config", config("flux1-dev-hopper-fast.yaml"), "--set", "compile=regional", "--set", "batch_size=1",
              "--set", "fuse_qkv=true", "--set", "vae_channels_last=true", "--compile-cache-dir", str(cache),
              *memory), 240,
             "fp8 + regional compile with fused QKV and a channels-last VAE (a new graph: compiles again)"),
        Step("tuned-cudnn-attention",
             ("--config", config("flux1-dev-hopper-fast.yaml"), "--set", "compile=regional", "--set", "batch_size=1",
              "--set", "fuse_qkv=true", "--set", "vae_channels_last=true", "--set", "attention_backend=_native_cudnn",
              "--compile-cache-dir", str(cache), *memory), 240,
             "the same with cuDNN attention"),
        Step("tuned-regional-max-autotune", (*tuned, "--set", "compile_mode=max-autotune-no-cudagraphs",
              "--compile-cache-dir", str(cache), *memory), 240,
             "tuned-regional with autotuned matmul kernels (a longer cold compile)"),
        Step("tuned-regional-cudagraphs", (*tuned, "--set", "compile_mode=reduce-overhead",
              "--compile-cache-dir", str(cache), *memory), 240,
             "tuned-regional with CUDA graphs (each transformer call's block graphs replayed)"),
        Step("memory-hopper-fast", ("--config", config("flux1-dev-hopper-fast.yaml"), "--memory-cap-gib", "78",
                                    "--compile-cache-dir", str(cache), *memory), 480,
             "the Hopper config as shipped (whole-transformer compile, batch auto) under 78 GiB: a long cold compile"),
        Step("throughput-compile", ("--configs", "torchao+compile:1", "--calls", "3", "--out", throughput("-compile")),
             480, "torchao fp8 + whole-transformer compile (cold compile)"),
    ]  # fmt: skip


def reduced_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """The CPU form of a step: tiny model, no memory cap, no compile (nor its mode), no CUDA attention kernel
    (seconds, not minutes)."""
    kept, skip = [], False
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else ""
        if skip:
            skip = False
        elif arg == "--memory-cap-gib" or (arg == "--set" and following.startswith("compile_mode=")):
            skip = True
        elif arg.startswith("attention_backend="):
            kept.append("attention_backend=native")
        else:
            kept.append(arg.replace("+regional", "").replace("+compile", ""))
    return ("--reduced", "--items", "2", *kept)


def gpu_name() -> str:
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)  # fmt: skip
        return found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else "no GPU"
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"


class StepLog:
    """gpu_suite.md: one line per step as it ends; gpu_suite.log: every step's output."""

    def __init__(self, results: Path, reduced: bool):
        self.path, self.log = results / "gpu_suite.md", results / "gpu_suite.log"
        form = "REDUCED CPU FORM (tiny model): not GPU figures" if reduced else f"GPU: {gpu_name()}"
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.path.write_text(f"# GPU suite run\n\n{form}; started {when}\n\n| step | status | wall s | what |\n"
                             "|---|---|---|---|\n")  # fmt: skip
        self.log.write_text("")

    def add(self, step: Step, status: str, wall_s: float | None) -> None:
        wall = "n/a" if wall_s is None else f"{wall_s:.1f}"
        with self.path.open("a") as handle:
            handle.write(f"| {step.name} | {status} | {wall} | {step.what} |\n")


STAGE_LINE = re.compile(r"^\[ *\d+\.\d s\] ")  # throughput_timing.stage's lines: "[   12.3 s] what began"


def last_stage(output: str) -> str | None:
    """The last stage line of a step's output: the phase it had reached when it ended or was cut off."""
    lines = [line.strip() for line in output.splitlines() if STAGE_LINE.match(line.strip())]
    return lines[-1] if lines else None


def run_step(step: Step, args: tuple[str, ...], timeout_s: float, log: StepLog) -> tuple[str, float]:
    """Runs one step; its status, with the last stage reached where it did not end ok, and its wall seconds."""
    started = time.monotonic()
    with log.log.open("a") as output:
        output.write(f"\n===== {step.name}: {' '.join(args)}\n")
        output.flush()
        begins = output.tell()
    status = _run(step, args, timeout_s, log)
    if status != "ok":
        with log.log.open() as output:
            output.seek(begins)
            reached = last_stage(output.read())
        status += (
            f"; last stage: {reached}" if reached else "; no stage line (it ended or was cut off before its first)"
        )
    return status, time.monotonic() - started


def _run(step: Step, args: tuple[str, ...], timeout_s: float, log: StepLog) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    with log.log.open("a") as output:
        script = REPO / "benchmarks" / step.script if step.script else BENCHMARK
        process = subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # the benchmark writes every thread's stack into the log
            try:
                process.wait(timeout=STACK_DUMP_S)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # it may have ended on its own during the grace period
                os.killpg(process.pid, 9)  # the benchmark and any compile workers it started
            process.wait()
            output.write(f"\n===== {step.name}: killed at its {timeout_s:.0f} s limit (stacks above)\n")
            return f"timed out after {timeout_s:.0f} s"
    return "ok" if code == 0 else f"exit {code} (a row says why)" if code == 1 else f"failed (exit {code})"


def record_cut_off(step: Step, args: tuple[str, ...], status: str, reduced: bool) -> None:
    """A memory step cut off at its limit wrote no row: its config's row in the memory table says so and where it
    was (the stage reached), unless the table holds a measured row (ok or out of memory) for it already."""
    import memory_contract  # beside this script

    values = {}
    overrides = []
    for flag, value in itertools.pairwise(args):
        if flag == "--set":
            overrides.append(value)
        elif flag in ("--config", "--memory-cap-gib", "--out"):
            values[flag] = value
    if "--config" not in values or "--out" not in values or not status.startswith("timed out"):
        return
    out = Path(values["--out"])
    config = memory_contract.label(Path(values["--config"]), tuple(overrides))
    cap = values.get("--memory-cap-gib", "none")
    for row in memory_contract.read_rows(out):
        if (row["config"], row["cap GiB"]) == (config, cap) and row["status"].startswith(("ok", "out-of-memory")):
            return
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    row = {**dict.fromkeys(memory_contract.COLUMNS, "n/a"), "config": config, "cap GiB": cap,
           "status": f"{status.replace('|', '/')} (the suite's limit for this step)",
           "GPU": "CPU" if reduced else gpu_name(), "date": when, "commit": _commit()}  # fmt: skip
    memory_contract.record(out, row, reduced)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=False)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "") or "unknown"
    except OSError:
        return "unknown"


def copy_out(results: Path, since: float) -> None:
    """The device tool brings back files under $OUT (flat, at most 8): the files this run wrote."""
    out = os.environ.get("OUT")
    if not out:
        return
    for path in results.glob("gpu_*"):
        if path.is_file() and path.suffix in (".md", ".log") and path.stat().st_mtime >= since:
            shutil.copyfile(path, Path(out) / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="tiny model on the CPU: checks the plumbing")
    parser.add_argument("--results", type=Path, help="where result files go (default benchmarks/results)")
    parser.add_argument(
        "--only",
        help="comma-separated step names, run in the order given (cheapest and most "
        "informative first: a lent machine's time may end before the last)",
    )
    parser.add_argument("--budget-s", type=float, default=470, help="time for the whole suite (default 470)")
    args = parser.parse_args(argv)
    if args.reduced and not args.results:
        parser.error("--reduced needs --results: its figures never go to benchmarks/results")
    results = (args.results or REPO / "benchmarks" / "results").resolve()
    results.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("BATCH_EDIT_SUITE_CACHE", "/tmp/batch-edit-suite-inductor"))
    chosen = steps(results, cache)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {step.name for step in chosen})
        if unknown:
            parser.error(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in chosen)}")
        by_name = {step.name: step for step in chosen}
        chosen = [by_name[name] for name in dict.fromkeys(names)]
    started = time.time() - 1
    log = StepLog(results, args.reduced)
    deadline = time.monotonic() + args.budget_s
    statuses = []
    for step in chosen:
        left = deadline - time.monotonic()
        if left < 20:
            log.add(step, "not run: the suite's time budget was spent", None)
            continue
        step_args = step.args if not args.reduced else ("--reduced", *step.args) if step.script else reduced_args(
            step.args)  # fmt: skip
        print(f"gpu suite: {step.name} (at most {min(step.timeout_s, left):.0f} s)", file=sys.stderr, flush=True)
        status, wall = run_step(step, step_args, min(step.timeout_s, left), log)
        log.add(step, status, wall)
        record_cut_off(step, step_args, status, args.reduced)
        statuses.append(status)
        copy_out(results, started)
    copy_out(results, started)
    print(log.path.read_text())
    return 0 if statuses and all(status == "ok" for status in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
