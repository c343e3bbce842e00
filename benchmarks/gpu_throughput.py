"""GPU throughput: seconds per image, peak GPU memory and GPU utilisation between items, per backend and batch size.

Full form (needs a CUDA GPU; downloads nothing): the FLUX.1-dev architecture built in memory with random weights
(speed does not depend on weight values), 1024x1024, 28 steps, strength 0.9, for every backend (quanto reference
recipe, bf16, torchao, each fast one with and without torch.compile) at batch sizes 1, 2 and 4. Every
configuration gets a fresh pipeline and runs its items THROUGH THE REAL RUNNER (prefetching and PNG writing
overlap the pipeline calls, as in a real run). Writes benchmarks/results/gpu_throughput.md.

    python benchmarks/gpu_throughput.py    # 18 configurations, each building the ~17B-parameter pipeline: long
    python benchmarks/gpu_throughput.py --backends none,torchao+compile --batch-sizes 1,4 --items 12
    python benchmarks/gpu_throughput.py --configs quanto:1,none:1,torchao+compile:1 --calls 3   # in this order

Each configuration's row is written as soon as it is measured, so a run stopped part-way keeps what it measured;
`--configs` puts the ones that matter most first.

Reduced form (CPU, seconds; what the tests run): the same code path with the tiny random pipeline, 64x64,
4 steps, float32, the backends that work on a CPU, batch sizes 1 and 2. Its figures are not GPU figures and go
to benchmarks/results/gpu_throughput_reduced.md (or --out), never to the GPU table.

    python benchmarks/gpu_throughput.py --reduced --out /tmp/reduced.md

Memory contract (memory_contract.py): one shipped pipeline config on the same architecture, this process capped
at the memory of the card the config is for; ok or out-of-memory, peak and s/image go to
benchmarks/results/gpu_memory.md, one row per config and cap. `--set KEY=VALUE` overrides a config key. A config
of another task runs that task's pipeline (flux_architecture.py: fill on FLUX.1-Fill-dev's transformer) at the
task's steps and guidance, with a mask per photo for inpaint and fill, and a strength only where the task takes one.

    python benchmarks/gpu_throughput.py --config configs/flux1-dev-24gb.yaml --memory-cap-gib 22 --calls 2

Phases (phase_memory.py): `--phases` measures every call of the text encoders, the VAE's encode and decode and the
transformer (calls, seconds, and on CUDA the memory each adds above what was allocated when it began): a table per
configuration under the throughput table, four columns of the memory table. Not with compile (hooks would break
the graph). `--memory-history FILE` (CUDA) also dumps the allocator's history as a snapshot for
pytorch.org/memory_viz.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# First: the "first image" clock starts when throughput_timing is imported (imports and loading counted).
from throughput_timing import (  # noqa: E402, I001
    PROCESS_START,
    StageLines,
    TimedEngine,
    UtilisationSampler,
    dump_stacks_on_signal,
    stage,
    summarise,
)
import memory_contract  # noqa: E402  (beside this script)
import phase_memory  # noqa: E402
from flux_architecture import build_flux_dev_pipeline  # noqa: E402  (beside this script)
from throughput_report import Row, _commit, render  # noqa: E402
from throughput_settings import BACKENDS, PROMPTS, REPO, Settings, settings_from  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's batch_edit, installed or not
PHOTOS = REPO / "jobs" / "images"


def write_plans(settings: Settings, folder: Path, count: int):
    """`count` items from the project's photos x PROMPTS x seeds, through the real manifest and plan code; for the
    masked tasks, each photo's mask paired by stem from a folder, as a user's manifest gives them."""
    import yaml

    from batch_edit.errors import ManifestError
    from batch_edit.manifest import load_manifests
    from batch_edit.masks import task_problems
    from batch_edit.pipeline_config import MASKED_TASKS
    from batch_edit.plan import JobPlan, plan_jobs

    photos = sorted(PHOTOS.glob("*.jpg"))
    seeds = list(range(-(-count // (len(photos) * len(PROMPTS)))))
    job = dict(name="throughput", sources=[str(photo) for photo in photos], prompts=PROMPTS, seed=seeds,
               num_inference_steps=settings.steps, guidance_scale=settings.guidance,
               width=settings.size, height=settings.size)  # fmt: skip
    if settings.strength is not None:  # a task that takes none refuses one
        job["strength"] = settings.strength
    if settings.task in MASKED_TASKS:
        job["masks"] = str(write_masks(photos, folder / "masks"))
    manifest = folder / "throughput.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": [job]}, sort_keys=False))
    (loaded,) = load_manifests([manifest], task=settings.task)
    if problems := task_problems(loaded.jobs, settings.task):
        raise ManifestError(problems)
    (plan,) = plan_jobs(list(loaded.jobs), {"benchmark": "gpu_throughput"})
    items = sorted(plan.items, key=lambda item: item.seed)[:count]  # every photo and prompt before repeating
    return [JobPlan(name=plan.name, items=tuple(items), duplicates=0)]


def write_masks(photos: list[Path], folder: Path) -> Path:
    """One mask per photo, `<stem>.png` at the photo's size: white (repainted) over its central half, black around
    it, so every crop of the photo keeps some of both."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        with Image.open(photo) as image:
            width, height = image.size
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).rectangle((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=255)
        mask.save(folder / f"{photo.stem}.png")
    return folder


def pipeline_config(settings: Settings, backend: str, batch_size: int, scratch: Path):
    from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig

    if settings.config_file:
        config = memory_contract.run_config(
            settings.config_file, settings.overrides, reduced=settings.reduced, scratch=scratch,
            cache=settings.compile_cache_dir,
        )  # fmt: skip
        return config.model_copy(update={"batch_size": batch_size})
    quantization, compile_ = BACKENDS[backend]
    model = (
        "tiny random FLUX (batch_edit.tiny_model)" if settings.reduced else "FLUX.1-dev architecture, random weights"
    )
    return PipelineConfig(
        model=model,
        dtype=settings.dtype,
        device=settings.device,
        quantization=QuantizationConfig(backend=quantization),
        compile=compile_,
        compile_cache_dir=str(settings.compile_cache_dir or scratch / "inductor"),  # fresh: a cold compile
        batch_size=batch_size,
        local_files_only=True,
    )


def measure(settings: Settings, backend: str, batch_size: int, scratch: Path) -> Row:
    """One configuration: a fresh pipeline, an engine, its items through the real runner."""
    import torch

    from batch_edit.engine import Engine
    from batch_edit.runner import RunOptions, run

    row = Row(backend, batch_size)
    cuda = settings.device.startswith("cuda")
    config = pipeline_config(settings, backend, batch_size, scratch)
    plans = write_plans(settings, scratch, settings.items_for(batch_size))
    started = time.perf_counter()
    if settings.reduced:
        from batch_edit.tiny_model import build_tiny_pipeline

        pipe = build_tiny_pipeline(settings.task).to(getattr(torch, settings.dtype))
    else:
        stage(f"building random weights on {settings.device}")
        pipe = build_flux_dev_pipeline(settings.device, getattr(torch, settings.dtype), task=settings.task)
    stage("preparing the pipeline (LoRA, quantization, move or offload, compile set-up)")
    with preparation_stages():
        engine = Engine.from_pipeline(config, pipe)
    del pipe
    if settings.memory_cap_gib is not None:
        memory_contract.apply_memory_cap(settings.memory_cap_gib, settings.device, torch)
        stage(f"capped at {settings.memory_cap_gib:g} GiB")
    if cuda:
        torch.cuda.synchronize(settings.device)
        row.resident_gib = torch.cuda.memory_allocated(settings.device) / 2**30
        torch.cuda.reset_peak_memory_stats(settings.device)
    row.load_s = time.perf_counter() - started
    stage(f"loaded in {row.load_s:.1f} s; running {len(plans)} plan(s) through the runner")
    row.weights = engine.config.quantization.describe() + (f" ({settings.dtype})" if backend.startswith("none") else "")
    sampler = UtilisationSampler(settings.device)

    def first_call_done() -> None:
        row.first_image_s = time.perf_counter() - PROCESS_START
        sampler.start()

    stages = StageLines().attach(engine.pipe, whole_model_compile=config.compile is True)
    timed = TimedEngine(engine, on_first_call=first_call_done, stages=stages)
    meter = phase_memory.PhaseMeter.for_device(settings.device).attach(engine.pipe) if settings.phases else None
    try:
        with phase_memory.memory_history(settings.memory_history, settings.device):
            result = run(
                plans, config, scratch / "out" / f"{backend}-b{batch_size}", lambda _: timed, RunOptions(overwrite=True)
            )
    finally:
        sampler.stop()
        if meter:
            meter.detach()
        stages.detach()
    if cuda:  # the meter resets the allocator's peak at each phase and keeps the run's peak itself
        row.peak_gib = (meter.run_peak() if meter else torch.cuda.max_memory_allocated(settings.device)) / 2**30
    row.phases = meter.stats if meter else None
    summarise(row, timed.calls, sampler, result)
    if settings.keep_metadata:
        for job in result.jobs:
            settings.keep_metadata.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.folder / "metadata.csv", settings.keep_metadata / f"{backend}-b{batch_size}.csv")
    return row


def run_configuration(settings: Settings, backend: str, batch_size: int, scratch: Path) -> Row:
    import torch

    try:
        row = measure(settings, backend, batch_size, scratch)
    except torch.OutOfMemoryError:
        row = Row(backend, batch_size, status="out of memory outside a pipeline call (loading or encoding prompts)")
    except Exception as exc:  # one configuration's failure is a row of the table, not the end of the benchmark
        from batch_edit.errors import first_line

        row = Row(backend, batch_size, status=f"error: {type(exc).__name__}: {first_line(exc, 160)}")
    # Outside the except blocks, so no traceback still holds the pipeline while it is freed.
    shutil.rmtree(scratch / "out", ignore_errors=True)
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    logging.basicConfig(level=logging.WARNING)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


class _StageHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stage(record.getMessage())


@contextmanager
def preparation_stages():
    """What the pipeline's preparation says it does (each component quantized, the move or the offload hooks) as
    stage lines, not log records: where a step cut off while loading was. The loggers as they were afterwards."""
    handler = _StageHandler()
    loggers = [logging.getLogger(name) for name in ("batch_edit.backends", "batch_edit.quanto_moves")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, (level, propagate) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="tiny model, CPU, 64x64, 4 steps (what tests run)")
    parser.add_argument("--backends", help=f"comma-separated, from: {', '.join(BACKENDS)}")
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,2,4; reduced 1,2)")
    parser.add_argument("--configs", help="comma-separated BACKEND:BATCH pairs, measured in the order given")
    parser.add_argument("--items", type=int, help="items per configuration (default --calls x batch size)")
    parser.add_argument("--calls", type=int, default=4, help="pipeline calls per configuration, the first a warm-up")
    parser.add_argument("--keep-metadata", type=Path, help="copy each configuration's metadata.csv to this folder")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default cuda; reduced cpu)")
    parser.add_argument("--size", type=int, help="image side (default 1024; reduced 64)")
    parser.add_argument("--steps", type=int, help="num_inference_steps (default: the task's, 28; reduced 4)")
    parser.add_argument("--strength", type=float, help="default: the task's, 0.9 (fill and kontext take none)")
    parser.add_argument("--guidance", type=float, help="default: the task's (3.5; fill 30, kontext 2.5)")
    parser.add_argument("--out", type=Path, help="markdown file to write (default benchmarks/results/...)")
    parser.add_argument("--config", type=Path, help="run this pipeline config (memory contract: gpu_memory.md)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a --config key (repeatable)")
    parser.add_argument("--memory-cap-gib", type=float, help="cap this process's GPU memory, as on a smaller card")
    parser.add_argument("--compile-cache-dir", type=Path, help="keep inductor's cache here (default: a fresh one)")
    parser.add_argument("--phases", action="store_true", help="calls, seconds and (CUDA) memory per phase of a call")
    parser.add_argument("--memory-history", type=Path, metavar="FILE", help="CUDA: the allocator's history to FILE")
    args = parser.parse_args(argv)
    from batch_edit.errors import BatchEditError

    try:
        settings = settings_from(args)
    except (ValueError, BatchEditError) as exc:
        parser.error(str(exc))

    import torch

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA GPU is visible (torch {torch.__version__}); the full benchmark needs one and writes nothing "
              "without it. `--reduced` runs the CPU form.", file=sys.stderr)  # fmt: skip
        return 2
    _quiet_libraries()
    dump_stacks_on_signal()
    command = "python benchmarks/gpu_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    configurations = settings.configurations
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as scratch:
        # The engine only sets inductor's cache when unset: pin it to the fresh one, so warm-ups are cold compiles.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(settings.compile_cache_dir or Path(scratch) / "inductor")
        for index, (backend, batch_size) in enumerate(configurations, 1):
            print(f"[{index}/{len(configurations)}] {backend}, batch {batch_size}", file=sys.stderr, flush=True)
            rows.append(run_configuration(settings, backend, batch_size, Path(scratch)))
            # Rewritten after every configuration: a run stopped part-way keeps what it measured.
            settings.out.parent.mkdir(parents=True, exist_ok=True)
            if settings.config_file:  # one row of the memory table, the others kept
                gpu = torch.cuda.get_device_name(settings.device) if settings.device.startswith("cuda") else "CPU"
                row = memory_contract.cells(rows[-1], settings.memory_cap_gib, gpu, _commit(), settings.work())
                memory_contract.record(settings.out, row, settings.reduced)
            else:
                settings.out.write_text(render(settings, rows, command.strip()))
            if "interrupted" in rows[-1].status.split("; "):  # the runner stopped on SIGINT/SIGTERM
                break
    print(settings.out.read_text())
    return 0 if all(row.status == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
