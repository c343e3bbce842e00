"""Planning at scale: `batch-edit plan` on a 100,000-item grid, with and without 50,000 finished items.

Writes 100 small images into a temporary folder and a YAML manifest whose one job is a grid of
100 images x 10 prompts x 10 strengths x 10 seeds = 100,000 items, then times `batch-edit plan MANIFEST
--output-root DIR` as a whole subprocess (interpreter start-up and imports included):

  * with an empty output root (nothing done yet);
  * with an output folder whose `.batch-edit/records.jsonl` lists 50,000 finished items, written the way
    `JobOutput.write_image` writes them (status ok, item_id, file_name, bytes, the item and pipeline fields),
    each with its image on disk at exactly the recorded size (sparse files made with os.truncate), so every
    one of them counts as done.

Then it times the pure-Python pieces in-process (load_manifests, plan_jobs, read_records, done_ids and the
set intersection `batch-edit plan` does) to show where the time goes. Prints a table and writes
benchmarks/results/plan_scale.md. No model is loaded; the default pipeline config only names one.

    . .venv/bin/activate
    python benchmarks/plan_scale.py                  # 5 runs of each case
    python benchmarks/plan_scale.py --repeats 10 --done 100000
    python benchmarks/plan_scale.py --profile        # also print the cProfile (always in the results file)
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import inspect
import io
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import add_wait_idle_argument, cpu_model, run_timed, settle  # beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
JOB = "grid"
IMAGES, PROMPTS, STRENGTHS, SEEDS = 100, 10, 10, 10
_SCRIPT = Path(sys.executable).with_name("batch-edit")
BATCH_EDIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "batch_edit"]


def write_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for index in range(count):
        shade = (index * 37 % 256, index * 91 % 256, index * 13 % 256)
        Image.new("RGB", (32, 24), shade).save(folder / f"photo-{index:03d}.png")


def write_manifest(scratch: Path) -> Path:
    manifest = scratch / "grid.yaml"
    prompts = [f"a photo of the scene as a painting in style number {n}" for n in range(PROMPTS)]
    strengths = [round(0.1 * (n + 1), 1) for n in range(STRENGTHS)]  # 0.1 .. 1.0 (28 steps: 2+ passes each)
    manifest.write_text(
        "jobs:\n"
        f"  - name: {JOB}\n"
        "    sources: images\n"
        f"    prompts: {json.dumps(prompts)}\n"
        f"    strength: {json.dumps(strengths)}\n"
        f"    seed: {json.dumps(list(range(SEEDS)))}\n"
        "    width: 512\n    height: 512\n",
        encoding="utf-8",
    )
    return manifest


def plan_in_process(manifest: Path):
    from batch_edit.manifest import load_manifests
    from batch_edit.pipeline_config import load_pipeline_config
    from batch_edit.plan import plan_jobs
    from batch_edit.source_identity import identify_sources

    manifests = load_manifests([manifest])
    config = load_pipeline_config(None)
    # each source identified by its content, as `batch-edit plan` does: the item ids depend on it
    jobs = identify_sources([job for m in manifests for job in m.jobs], {})
    return config, plan_jobs(jobs, config.identity())


def write_done_records(root: Path, manifest: Path, done: int) -> int:
    """`done` finished items of the grid (every n-th one, so they are spread over the grid), recorded as
    JobOutput.write_image records them, with each image present at exactly its recorded size."""
    from batch_edit.outputs import STATE_DIR, JobOutput, item_fields

    config, plans = plan_in_process(manifest)
    items = plans[0].items
    step = max(1, len(items) // done)
    chosen = items[::step][:done]
    output = JobOutput(root, JOB)
    (output.folder / STATE_DIR).mkdir(parents=True)
    # the pipeline fields the runner adds to every record (as runner.run builds them)
    loras = {"loras": config.lora_tags()} if hasattr(config, "lora_tags") else {}
    extra = {**config.identity(), **loras, "device": config.device, "batch_size": 1}
    with output.records_path.open("w", encoding="utf-8") as records:
        for index, item in enumerate(chosen):
            size = 180_000 + (index * 7919) % 60_000  # a 512x512 PNG's size; the bytes themselves are never read
            with open(output.folder / item.output_name, "wb") as handle:
                os.truncate(handle.fileno(), size)
            row = {"file_name": item.output_name, **item_fields(item), **extra, "seconds": 11.3,
                   "finished_at": "2025-01-01T03:00:00+0000"}  # fmt: skip
            records.write(json.dumps({"status": "ok", "bytes": size, **row}, ensure_ascii=False) + "\n")
    return len(chosen)


FOREIGN_LOAD: list[float] = []  # per timed run: cores' worth of CPU used by processes other than this benchmark's


def time_plan(manifest: Path, root: Path, repeats: int, wait_idle: float) -> tuple[list[float], str]:
    command = [*BATCH_EDIT, "plan", str(manifest), "--output-root", str(root)]
    seconds, stdout = [], ""
    for _ in range(repeats):
        settle(wait_idle)
        timed = run_timed(command)
        seconds.append(timed.seconds)
        FOREIGN_LOAD.append(timed.foreign_cores)
        done = timed.done
        if done.returncode != 0:
            sys.exit(f"batch-edit plan failed ({done.returncode}):\n{done.stderr[-3000:]}")
        stdout = done.stdout
    return seconds, stdout


def time_pieces(manifest: Path, root: Path, repeats: int) -> tuple[list[tuple[str, float]], float]:
    """Median seconds of each in-process step `batch-edit plan` takes (as plan_report.report calls them), and of the
    import of its CLI in a fresh interpreter."""
    # What a fresh `batch-edit plan` process pays before planning: the interpreter, then the CLI's imports.
    probe = "import time; t = time.monotonic(); import batch_edit.cli; print(time.monotonic() - t)"
    import_runs = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                        check=True).stdout) for _ in range(repeats)]  # fmt: skip
    import_s = statistics.median(import_runs)
    from batch_edit.manifest import load_manifests
    from batch_edit.outputs import JobOutput
    from batch_edit.pipeline_config import load_pipeline_config
    from batch_edit.plan import plan_jobs
    from batch_edit.source_identity import identify_sources

    samples: dict[str, list[float]] = {}

    def step(name, function, *args):
        begun = time.monotonic()
        result = function(*args)
        samples.setdefault(name, []).append(time.monotonic() - begun)
        return result

    for _ in range(repeats):
        manifests = step("load_manifests (YAML, validation, folder listing)", load_manifests, [manifest])
        config = step("load_pipeline_config", load_pipeline_config, None)
        jobs = step(
            "identify_sources (each source's sha256)", identify_sources, [j for m in manifests for j in m.jobs], {}
        )
        plans = step("plan_jobs (100,000 WorkItems, sha256 ids)", plan_jobs, jobs, config.identity())
        output = JobOutput(root, JOB)
        records = step("JobOutput.read_records (JSON lines)", output.read_records)
        done = step("JobOutput.done_ids (one stat per ok record)", output.done_ids, records)
        step("intersection with the plan's ids", lambda: done & {item.item_id for item in plans[0].items})
        if hasattr(output, "mean_seconds"):  # `plan`'s time estimate from earlier runs' records
            if "records" in inspect.signature(output.mean_seconds).parameters:
                step("JobOutput.mean_seconds (the estimate, from the same records)", output.mean_seconds,
                     config.identity(), records)  # fmt: skip
            else:
                step("JobOutput.mean_seconds (the estimate; reads the records again)", output.mean_seconds,
                     config.identity())  # fmt: skip
    return [(name, statistics.median(values)) for name, values in samples.items()], import_s


def profile_plan(manifest: Path, root: Path, top: int = 25) -> str:
    from batch_edit.cli import main

    profiler = cProfile.Profile()
    stdout = sys.stdout
    sys.stdout = io.StringIO()
    try:
        profiler.runcall(main, ["plan", str(manifest), "--output-root", str(root)])
    finally:
        sys.stdout = stdout
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def machine() -> str:
    model = cpu_model()
    return f"{model}, {os.cpu_count()} cores, {platform.platform()}; Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case (default: 5)")
    parser.add_argument("--done", type=int, default=50_000, help="finished items already recorded (default: 50000)")
    parser.add_argument("--profile", action="store_true", help="also print the cProfile of one in-process plan")
    add_wait_idle_argument(parser, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/plan_scale.md")
    args = parser.parse_args()
    if args.repeats < 1 or not 1 <= args.done <= IMAGES * PROMPTS * STRENGTHS * SEEDS:
        parser.error("--repeats must be at least 1 and --done between 1 and 100000")

    with tempfile.TemporaryDirectory(prefix="batch-edit-plan-scale-") as scratch:
        scratch = Path(scratch)
        write_images(scratch / "images", IMAGES)
        manifest = write_manifest(scratch)
        empty_root, done_root = scratch / "out-empty", scratch / "out-done"
        begun = time.monotonic()
        recorded = write_done_records(done_root, manifest, args.done)
        setup_s = time.monotonic() - begun
        print(f"recorded {recorded} finished items with their images in {setup_s:.1f} s", flush=True)

        cases = []
        for label, root in (("empty output root", empty_root), (f"{recorded:,} items done", done_root)):
            seconds, stdout = time_plan(manifest, root, args.repeats, args.wait_idle)
            match = re.search(r"job \S+: (\d+) item\(s\), (\d+) already done", stdout)
            items, done = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
            cases.append((label, seconds, items, done))
            print(f"  {label}: median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s; "
                  f"plan says {items} items, {done} done", flush=True)  # fmt: skip
        pieces, import_s = time_pieces(manifest, done_root, args.repeats)
        profile = profile_plan(manifest, done_root, top=15)

    table = [
        "| case | median s | min s | runs (s) | `plan` reports |",
        "|---|---|---|---|---|",
        *(
            f"| `batch-edit plan` subprocess, {label} | {statistics.median(s):.2f} | {min(s):.2f} | "
            f"{', '.join(f'{x:.2f}' for x in s)} | {items:,} items, {done:,} already done |"
            for label, s, items, done in cases
        ),
    ]
    breakdown = [
        "| in-process step (with the finished items) | median s |",
        "|---|---|",
        f"| import batch_edit.cli (in a fresh interpreter: pydantic, yaml, PIL...) | {import_s:.3f} |",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in pieces),
        f"| sum of the steps after the import | {sum(seconds for _, seconds in pieces):.3f} |",
    ]
    expected_ok = all(items == IMAGES * PROMPTS * STRENGTHS * SEEDS for _, _, items, _ in cases)
    done_ok = cases[0][3] == 0 and cases[1][3] == recorded
    worst = max(statistics.median(s) for _, s, _, _ in cases)
    lines = [
        "# Planning at scale (`python benchmarks/plan_scale.py`)",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {machine()}.",
        "",
        f"Grid: one job, {IMAGES} images (32x24 PNGs in a folder) x {PROMPTS} prompts x {STRENGTHS} strengths x "
        f"{SEEDS} seeds = {IMAGES * PROMPTS * STRENGTHS * SEEDS:,} items; default pipeline config (no model "
        f"loaded). {args.repeats} runs of each case, each a whole subprocess timed with `time.monotonic()`. The "
        f"finished case has {recorded:,} `status: ok` records in `.batch-edit/records.jsonl`, spread over the grid, "
        "each with its image on disk at the recorded size.",
        "",
        *table,
        "",
        f"Target (under 2 s): **{'met' if worst < 2 else 'NOT met'}** (slowest median {worst:.2f} s). "
        f"Item counts {'as expected' if expected_ok else 'WRONG'}; done counts "
        f"{'as expected (0, then every recorded item)' if done_ok else 'WRONG'}.",
        "",
        *breakdown,
        "",
        "The rest of a subprocess's time is the interpreter's start-up and exit.",
        "",
        f"Other load: processes outside this benchmark used at most {max(FOREIGN_LOAD):.2f} cores during a timed "
        "run "
        + ("(an idle machine)." if max(FOREIGN_LOAD) < 0.25 else "- the machine was NOT idle; figures disturbed."),
        "",
        "cProfile of one in-process `batch-edit plan` with the finished items (`cli.main`, top 15 by own time; "
        "profiling inflates the total):",
        "",
        "```",
        *[line.rstrip() for line in profile.strip().splitlines() if line.strip()],
        "```",
    ]
    print()
    print("\n".join(table))
    print()
    print("\n".join(breakdown))
    print(next(line for line in lines if line.startswith("Other load")))
    if args.profile:
        print("\n" + profile)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "plan_scale.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS / 'plan_scale.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
