"""Scaling: items per second of `batch-edit run` in one process against `run --ray` with 1, 2, ... workers.

Builds the tiny random FLUX img2img pipeline once and a grid of items, then times each side as a whole subprocess
(interpreter, imports, Ray's start and stop, every worker's model load and the run: what a user waits for), on a
fresh output root each time:

  * single: `batch-edit run MANIFEST --pipeline CONFIG --output-root DIR`;
  * ray N: the same with `--ray --workers N` (a local Ray instance, N CPU workers), N = 1 .. the machine's cores.

Prints a table and writes benchmarks/results/scaling.md with the machine named. On a GPU machine, pass a GPU
pipeline config (`--pipeline configs/...yaml`) to compare one GPU in one process with `--ray --workers 1`.

    . .venv/bin/activate
    python benchmarks/scaling.py                    # one run per side (about 3 minutes on 2 cores)
    python benchmarks/scaling.py --repeats 3 --steps 16
    python benchmarks/scaling.py --no-write         # print only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cpu_throughput import BATCH_EDIT, PHOTOS, PROMPTS, SEEDS, STRENGTHS  # the same 96-item workload
from machine_load import add_wait_idle_argument, cpu_model, run_timed, settle  # beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side (default: 1)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--steps", type=int, default=12, help="denoising steps (default: 12)")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count(), help="most Ray workers (default: cores)")
    parser.add_argument("--pipeline", type=Path, help="pipeline config (default: the tiny model on the CPU)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave the results file alone")
    add_wait_idle_argument(parser, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scaling-") as scratch:
        folder = Path(scratch)
        config = args.pipeline or tiny_config(folder)
        manifest = write_manifest(folder, args.size, args.steps)
        items = len(PHOTOS) * len(PROMPTS) * len(STRENGTHS) * len(SEEDS)
        sides = [("single process", [])] + [
            (f"--ray --workers {n}", ["--ray", "--workers", str(n)]) for n in range(1, args.max_workers + 1)
        ]
        rows = []
        for name, flags in sides:
            runs = []
            for repeat in range(args.repeats):
                settle(args.wait_idle)
                output = folder / f"out-{len(rows)}-{repeat}"
                command = [*BATCH_EDIT, "run", str(manifest), "--pipeline", str(config), "--output-root", str(output)]
                timed = run_timed([*command, *flags])
                if timed.done.returncode != 0:
                    print(timed.done.stderr, file=sys.stderr)
                    raise SystemExit(f"{name}: exit {timed.done.returncode}")
                written = len([p for p in (output / "scaling").glob("*.png") if not p.name.startswith("contact")])
                assert written == items, f"{name}: {written} of {items} images"
                runs.append(timed)
                print(f"{name}: {timed.seconds:.1f} s ({items / timed.seconds:.2f} items/s)", flush=True)
            rows.append((name, runs))
    report = render(rows, items, args)
    print(report)
    if not args.no_write:
        (RESULTS / "scaling.md").write_text(report)
    return 0


def tiny_config(folder: Path) -> Path:
    subprocess.run([*BATCH_EDIT, "make-tiny-model", str(folder / "tiny")], check=True, capture_output=True)
    config = folder / "tiny.yaml"
    config.write_text(f"model: {folder / 'tiny'}\ndtype: float32\ndevice: cpu\nlocal_files_only: true\n")
    return config


def write_manifest(folder: Path, size: int, steps: int) -> Path:
    manifest = folder / "scaling.yaml"
    manifest.write_text(
        "jobs:\n  - name: scaling\n"
        f"    sources: [{', '.join(str(p) for p in PHOTOS)}]\n"
        f"    prompts: {PROMPTS}\n    strength: {STRENGTHS}\n    seed: {SEEDS}\n"
        f"    num_inference_steps: {steps}\n    width: {size}\n    height: {size}\n"
    )
    return manifest


def render(rows: list, items: int, args) -> str:
    import torch

    lines = [
        "# Scaling (`python benchmarks/scaling.py`)",
        "",
        f"Date: {datetime.date.today()}. Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "",
        f"Work: {items} items = {len(PHOTOS)} photos x {len(PROMPTS)} prompts x {len(STRENGTHS)} strengths x "
        f"{len(SEEDS)} seeds, {args.size}x{args.size}, {args.steps} steps; "
        f"{'the pipeline config ' + str(args.pipeline) if args.pipeline else 'the tiny random FLUX img2img pipeline, float32 on the CPU'}. "
        "Each side is one whole subprocess, timed from start to exit: start-up, Ray's start and stop and every "
        "worker's model load included. Ray workers each take an equal share of the CPUs Ray sees (their torch "
        "threads follow it).",
        "",
        "| side | median wall s | items/s (median) | each run: wall s (other load, cores) |",
        "|---|---|---|---|",
    ]
    for name, runs in rows:
        median = statistics.median(run.seconds for run in runs)
        each = ", ".join(f"{run.seconds:.1f} ({run.foreign_cores:.2f})" for run in runs)
        lines.append(f"| {name} | {median:.1f} | {items / median:.2f} | {each} |")
    single_load = max(run.foreign_cores for run in rows[0][1])
    if single_load > 0.25:
        lines += ["", f"The machine was not idle: other processes used up to {single_load:.2f} cores during the "
                  "single-process run (and took a share during the others), so every figure is lower than on an idle "
                  "machine, and by different amounts."]  # fmt: skip
    if args.pipeline is None:
        lines += ["", "On these CPU cores, `--ray` pays Ray's start and stop and one model load per worker, and "
                  "its workers split the same cores, so it cannot beat the single process; it shows the overhead. "
                  "The GPU figures (one GPU: `--ray --workers 1` within 5% of the single process; several GPUs) are "
                  "not measured here: run this script on a GPU machine with `--pipeline CONFIG`."]  # fmt: skip
    lines += [
        "",
        "\"Other load\" counts every process outside the timed command's own waited-for children; Ray's workers "
        "are children of its raylet, so in the `--ray` rows it includes Ray's own processes.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
