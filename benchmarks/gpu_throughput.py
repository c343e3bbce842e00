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
import datetime
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PROCESS_START = time.perf_counter()  # "first image" is counted from here: imports and loading included

import memory_contract  # noqa: E402  (beside this script)
import phase_memory  # noqa: E402
from flux_architecture import MODELS, build_flux_dev_pipeline  # noqa: E402  (beside this script)
from machine_load import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's batch_edit, installed or not
RESULTS = REPO / "benchmarks" / "results"
PHOTOS = REPO / "jobs" / "images"
NOT_MEASURED = (
    "Not yet measured: no CUDA GPU was available when this was written. "
    "Run `python benchmarks/gpu_throughput.py` on a CUDA machine to fill this table."
)
PROMPTS = [
    "a photo of a tiger lying on a wooden table, detailed striped fur, natural light",
    "{caption}, watercolor painting",
]

# backend name -> (quantization backend, torch.compile)
BACKENDS = {
    "quanto": ("quanto", False),  # the reference recipe: transformer qint8 (proj_out kept), text encoders qint4
    "none": ("none", False),  # plain dtype weights (bf16 on a GPU)
    "torchao": ("torchao", False),  # auto: fp8 dynamic row-wise on compute capability >= 8.9, else int8 weight-only
    "torchao+compile": ("torchao", True),
    "none+compile": ("none", True),
    "torchao+regional": ("torchao", "regional"),  # compile: regional (each repeated block compiled once)
}

COLUMNS = [
    "backend", "batch", "weights", "status", "load s", "warm-up s (first call)", "s/image (steady median)",
    "img/min (runner wall)", "peak GPU GiB", "resident GiB", "GPU utilisation (in-call fraction)",
    "NVML utilisation", "calls", "failed items",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    reduced: bool
    device: str
    dtype: str
    size: int
    steps: int
    strength: float | None  # None: the task takes none (fill, kontext)
    guidance: float
    configurations: tuple[tuple[str, int], ...]  # (backend, batch size), measured in this order
    items: int | None  # per configuration; None: `calls` calls' worth (the first is the warm-up)
    out: Path
    calls: int = 4
    skipped: tuple[str, ...] = ()  # backends asked for but unavailable here
    keep_metadata: Path | None = None  # where each configuration's metadata.csv is copied
    config_file: Path | None = None  # a pipeline config to run instead of the backends (the memory contract)
    overrides: tuple[str, ...] = ()  # KEY=VALUE changes to that config
    memory_cap_gib: float | None = None  # cap this process's GPU memory once loaded
    compile_cache_dir: Path | None = None  # a kept inductor cache (a warm start); default: a fresh one per run
    task: str = "img2img"  # the pipeline config's: which pipeline and weights are built, what items carry
    phases: bool = False  # time and memory per phase of each call (phase_memory.py)
    memory_history: Path | None = None  # a CUDA memory snapshot of the run, for pytorch.org/memory_viz

    def items_for(self, batch_size: int) -> int:
        return self.items or self.calls * batch_size

    @property
    def passes(self) -> int:
        """Transformer passes per call: with a strength, denoising starts at int(steps - steps * strength)."""
        return self.steps - int(self.steps - self.steps * self.strength) if self.strength else self.steps

    def work(self) -> str:
        """What each item asks, in a table's words."""
        from batch_edit.pipeline_config import MASKED_TASKS

        return ", ".join([
            f"{self.task} {self.size}x{self.size}", f"{self.steps} steps",
            *([f"strength {self.strength:g}"] if self.strength else []), f"guidance {self.guidance:g}",
            *(["a mask per photo"] if self.task in MASKED_TASKS else []),
        ])  # fmt: skip


@dataclass
class Row:
    backend: str
    batch: int
    weights: str = ""
    status: str = "ok"
    load_s: float | None = None
    warmup_s: float | None = None
    s_per_image: float | None = None
    img_per_min: float | None = None
    peak_gib: float | None = None
    resident_gib: float | None = None
    in_call: float | None = None
    nvml: float | None = None
    calls: int = 0
    failed: int = 0
    first_image_s: float | None = None  # from process start to the end of the first pipeline call
    phases: dict | None = None  # phase name -> phase_memory.PhaseStats, with --phases

    def cells(self) -> list[str]:
        return [
            self.backend, str(self.batch), self.weights or "-", self.status.replace("|", "/"),
            _num(self.load_s), _num(self.warmup_s), _num(self.s_per_image), _num(self.img_per_min),
            _num(self.peak_gib, ".1f"), _num(self.resident_gib, ".1f"), _num(self.in_call, ".3f"),
            _num(self.nvml, ".3f"), str(self.calls), str(self.failed),
        ]  # fmt: skip


def _num(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


@dataclass
class Call:
    start: float
    end: float
    items: int
    error: str | None = None


class TimedEngine:
    """The real engine, with each generate() timed between device synchronisations; all else is delegated."""

    def __init__(self, engine, on_first_call=lambda: None):
        self.engine, self.calls, self._on_first_call = engine, [], on_first_call
        import torch

        cuda = engine.config.device.startswith("cuda")
        self._sync = (lambda: torch.cuda.synchronize(engine.config.device)) if cuda else (lambda: None)

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, items, images, **masks):
        self._sync()
        start = time.perf_counter()
        try:
            results = self.engine.generate(items, images, **masks)
        except BaseException as exc:
            self.calls.append(Call(start, time.perf_counter(), len(items), type(exc).__name__))
            raise
        self._sync()
        self.calls.append(Call(start, time.perf_counter(), len(items)))
        if len(self.calls) == 1:
            self._on_first_call()
        return results


class UtilisationSampler:
    """The GPU's own utilisation counter (NVML through pynvml, else `nvidia-smi -lms`), sampled in a thread: a
    cross-check of the in-call fraction. Coarse (NVML counts any kernel running), and absent where neither exists."""

    def __init__(self, device: str):
        self.device, self.samples = device, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.device.startswith("cuda"):
            return
        read = _nvml_reader(self.device)
        if read is not None:
            self._thread = threading.Thread(target=self._poll, args=(read,), daemon=True)
        elif shutil.which("nvidia-smi"):
            query = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
            self._process = subprocess.Popen(
                ["nvidia-smi", f"--id={_gpu_uuid(self.device)}", *query],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            self._thread = threading.Thread(target=self._stream, daemon=True)
        if self._thread:
            self._thread.start()

    def _poll(self, read) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.perf_counter(), read()))

    def _stream(self) -> None:
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), int(line)))

    def stop(self) -> None:
        self._stop.set()
        if self._process:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread:
            self._thread.join(timeout=10)

    def mean(self, start: float, end: float) -> float | None:
        values = [value for at, value in self.samples if start <= at <= end]
        return statistics.fmean(values) / 100 if values else None


def _gpu_uuid(device: str) -> str:
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def _nvml_reader(device: str):
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(_gpu_uuid(device))
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:  # no pynvml, no driver library, or an unknown uuid: fall back to nvidia-smi
        return None


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
        pipe = build_flux_dev_pipeline(settings.device, getattr(torch, settings.dtype), task=settings.task)
    engine = Engine.from_pipeline(config, pipe)
    del pipe
    if settings.memory_cap_gib is not None:
        memory_contract.apply_memory_cap(settings.memory_cap_gib, settings.device, torch)
    if cuda:
        torch.cuda.synchronize(settings.device)
        row.resident_gib = torch.cuda.memory_allocated(settings.device) / 2**30
        torch.cuda.reset_peak_memory_stats(settings.device)
    row.load_s = time.perf_counter() - started
    row.weights = engine.config.quantization.describe() + (f" ({settings.dtype})" if backend.startswith("none") else "")
    sampler = UtilisationSampler(settings.device)
    def first_call_done() -> None:
        row.first_image_s = time.perf_counter() - PROCESS_START
        sampler.start()

    timed = TimedEngine(engine, on_first_call=first_call_done)
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
    if cuda:  # the meter resets the allocator's peak at each phase and keeps the run's peak itself
        row.peak_gib = (meter.run_peak() if meter else torch.cuda.max_memory_allocated(settings.device)) / 2**30
    row.phases = meter.stats if meter else None
    summarise(row, timed.calls, sampler, result)
    if settings.keep_metadata:
        for job in result.jobs:
            settings.keep_metadata.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.folder / "metadata.csv", settings.keep_metadata / f"{backend}-b{batch_size}.csv")
    return row


def summarise(row: Row, calls: list[Call], sampler: UtilisationSampler, result) -> None:
    """Warm-up = the first call; steady state = every later call, over the wall time from the first call's end
    to the last call's end, so the gaps between calls (the runner's own work) count against utilisation."""
    row.calls = len(calls)
    row.failed = result.failed
    problems = [f"{call.error} on a batch of {call.items}" for call in calls if call.error]
    problems += [f"{count} failed: {reason}" for job in result.jobs for reason, count in job.errors.items()]
    if result.interrupted_by:
        problems.append("interrupted")
    ok = [call for call in calls if not call.error]
    if not ok:
        row.status = "; ".join(problems) or "no pipeline call"
        return
    row.warmup_s = ok[0].end - ok[0].start
    steady = [call for call in calls if call.start >= ok[0].end]
    steady_ok = [call for call in steady if not call.error]
    if steady_ok:
        window = steady[-1].end - ok[0].end
        # A short last batch costs a whole one when compiled (it is padded): full batches only, where there are any.
        full = [call for call in steady_ok if call.items >= row.batch] or steady_ok
        row.s_per_image = statistics.median((call.end - call.start) / call.items for call in full)
        row.img_per_min = sum(call.items for call in steady_ok) / window * 60
        row.in_call = sum(call.end - call.start for call in steady) / window
        row.nvml = sampler.mean(ok[0].end, steady[-1].end)
    else:
        problems.append("only the warm-up call ran: use more --items")
    row.status = "; ".join(problems) or "ok"


def run_configuration(settings: Settings, backend: str, batch_size: int, scratch: Path) -> Row:
    import torch

    try:
        row = measure(settings, backend, batch_size, scratch)
    except torch.OutOfMemoryError:
        row = Row(backend, batch_size, status="out of memory outside a pipeline call (loading or encoding prompts)")
    except Exception as exc:  # one configuration's failure is a row of the table, not the end of the benchmark
        first_line = (str(exc).strip().splitlines() or [""])[0][:160]
        row = Row(backend, batch_size, status=f"error: {type(exc).__name__}: {first_line}")
    # Outside the except blocks, so no traceback still holds the pipeline while it is freed.
    shutil.rmtree(scratch / "out", ignore_errors=True)
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def environment(settings: Settings) -> list[str]:
    import torch

    if settings.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(settings.device)
        device = (
            f"{torch.cuda.get_device_name(settings.device)} (compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda})"
        )
    else:
        device = (
            f"CPU: {cpu_model(default=platform.machine())}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()} "
            "(no GPU: these are NOT GPU figures)"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    versions = ", ".join(
        f"{name} {_version(package)}"
        for name, package in [("torch", "torch"), ("diffusers", "diffusers"), ("transformers", "transformers"),
                              ("torchao", "torchao"), ("optimum-quanto", "optimum-quanto")]
    )  # fmt: skip
    return [
        f"Device: {device}; host load average {load} when the table was written (other work skews CPU figures)",
        f"Software: {versions}; Python {platform.python_version()}",
        f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; commit {_commit()}",
    ]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"




def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "") or "unknown"
    except OSError:
        return "unknown"


def table(rows: list[Row]) -> list[str]:
    return [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
    ]


NOTES = [
    "How to read it:",
    "",
    "- `load s`: building the random-weight pipeline on the device, quantizing and moving it (no download).",
    "- `warm-up s`: the first pipeline call, whole batch; with compile it includes a cold torch.compile.",
    "- `s/image`: median over the later calls of (call seconds / items in the call), with the device synchronised "
    "before and after each call.",
    "- `img/min`: images from the later calls over the wall time from the end of the first call to the end of the "
    "last: what the runner delivers, gaps between calls included.",
    "- `peak GPU GiB`: torch.cuda.max_memory_allocated during the run (reset after loading); `resident GiB`: "
    "allocated once loaded (weights).",
    "- `GPU utilisation`: fraction of that steady-state wall time spent inside pipeline calls (1 - the idle fraction "
    "between items); `NVML utilisation`: the driver's own counter sampled over the same window, where pynvml or "
    "nvidia-smi exists.",
    "- Random weights: speed does not depend on weight values; the images are noise and are thrown away.",
]


def render(settings: Settings, rows: list[Row], command: str) -> str:
    architecture = f"{MODELS[settings.task]} architecture"
    label = "REDUCED CPU FORM (tiny random model; not GPU figures)" if settings.reduced else architecture
    model = (
        "tiny random FLUX pipeline (batch_edit.tiny_model)" if settings.reduced
        else f"{architecture} with random weights (11.9B-parameter transformer, T5 v1.1 XXL, CLIP-L, 16-channel VAE)"
    )  # fmt: skip
    lines = [
        f"# GPU throughput benchmark: {label}",
        "",
        *(f"{line}  " for line in environment(settings)),
        f"Model: {model}, {settings.dtype}  ",
        f"Work: {settings.items or f'{settings.calls} x batch size'} items per configuration (the first call is the warm-up), "
        f"{settings.work()} ({settings.passes} transformer passes per call), the project's photos "
        f"x {len(PROMPTS)} prompts, through batch_edit.runner.run (prefetch and PNG writing overlap)  ",
        f"Command: `{command}`  ",
        *([f"Skipped (not available here): {', '.join(settings.skipped)}"] if settings.skipped else []),
        "",
        *table(rows),
        "",
        *NOTES,
        *phase_memory.sections(rows),
    ]
    return "\n".join(lines) + "\n"


def render_placeholder() -> str:
    """The committed table before any GPU run: says so plainly, with the columns a run will fill."""
    lines = [
        "# GPU throughput benchmark: FLUX.1-dev architecture",
        "",
        f"**{NOT_MEASURED}**",
        "",
        "This file holds no estimates: its table stays empty until a run on a CUDA GPU writes it, naming the GPU. "
        "The reduced CPU form that the tests run (`--reduced`) writes elsewhere; its figures are not GPU figures.",
        "",
        "What a run will measure: the FLUX.1-dev architecture with random weights, 1024x1024, 28 steps, strength "
        "0.9, for backends quanto (reference recipe), none (bf16), torchao, torchao+compile, none+compile, at "
        "batch sizes 1, 2 and 4, through the real runner.",
        "",
        *table([]),
        "",
        *NOTES,
    ]
    return "\n".join(lines) + "\n"


def settings_from(args: argparse.Namespace) -> Settings:
    device = args.device or ("cpu" if args.reduced else "cuda")
    default_backends = ["quanto", "none", "torchao"] if args.reduced else list(BACKENDS)
    backends = args.backends.split(",") if args.backends else default_backends
    batch_sizes = [int(size) for size in (args.batch_sizes or ("1,2" if args.reduced else "1,2,4")).split(",")]
    task = "img2img"  # the backends' pipeline; a config's own task otherwise
    if args.config:
        if args.configs or args.backends or args.batch_sizes:
            raise ValueError("--config runs one pipeline config: drop --configs/--backends/--batch-sizes")
        overrides = tuple(args.set or ())
        config = _run_config(args, overrides)
        task = config.task
        configurations = [(memory_contract.label(args.config, overrides), config_batch_size(args, config))]
        backends = []
    elif args.configs:
        if args.backends or args.batch_sizes:
            raise ValueError("--configs names backends and batch sizes itself: drop --backends/--batch-sizes")
        configurations = [_configuration(text) for text in args.configs.split(",")]
        backends = list(dict.fromkeys(backend for backend, _ in configurations))
    else:
        configurations = [(backend, size) for backend in backends for size in batch_sizes]
    if args.set and not args.config:
        raise ValueError("--set changes a --config file's keys: give --config")
    if args.memory_cap_gib is not None and device == "cpu":
        raise ValueError("--memory-cap-gib needs a CUDA GPU: the CPU form runs uncapped")
    if args.calls < 2:
        raise ValueError("--calls must be at least 2: the first call is the warm-up")
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    check_phase_options(args, device, backends, configurations)
    if device == "cpu" and not args.reduced and not args.out:
        raise ValueError("the GPU table takes GPU figures only: a full-size run on the CPU needs --out")
    skipped = tuple(name for name in backends if name.startswith("torchao") and not _has_torchao())
    steps, strength, guidance = item_parameters(args, task)
    return Settings(
        reduced=args.reduced,
        device=device,
        dtype="float32" if device == "cpu" else "bfloat16",
        size=args.size or (64 if args.reduced else 1024),
        steps=steps,
        strength=strength,
        guidance=guidance,
        configurations=tuple((name, size) for name, size in configurations if name not in skipped),
        items=args.items,
        calls=args.calls,
        out=args.out or RESULTS / (
            ("gpu_memory" if args.config else "gpu_throughput") + ("_reduced.md" if args.reduced else ".md")
        ),
        skipped=skipped,
        keep_metadata=args.keep_metadata,
        config_file=args.config,
        overrides=tuple(args.set or ()),
        memory_cap_gib=args.memory_cap_gib,
        compile_cache_dir=args.compile_cache_dir,
        task=task,
        phases=args.phases,
        memory_history=args.memory_history,
    )


def item_parameters(args: argparse.Namespace, task: str) -> tuple[int, float | None, float]:
    """Steps, strength and guidance: those given, else the task's defaults (the reduced form: 4 steps, for speed);
    no strength for a task that takes none, and --strength refused there as a manifest would refuse it."""
    from batch_edit.parameters import named

    strength = named("strength")
    if not strength.taken_by(task) and args.strength is not None:
        raise ValueError(f"--strength: the {task} task takes no strength ({args.config.name})")
    return (
        args.steps or (4 if args.reduced else named("num_inference_steps").default_for(task)),
        None if not strength.taken_by(task) else strength.default_for(task) if args.strength is None else args.strength,
        named("guidance_scale").default_for(task) if args.guidance is None else args.guidance,
    )


def check_phase_options(args: argparse.Namespace, device: str, backends: list[str], configurations: list) -> None:
    """--phases hooks the transformer: inside a compiled graph its hooks would break the graph (and measure
    another program). --memory-history reads the CUDA allocator, for one configuration."""
    if args.phases:
        compiled = [name for name in backends if BACKENDS[name][1]]
        if args.config:
            with tempfile.TemporaryDirectory() as scratch:
                config = memory_contract.run_config(args.config, tuple(args.set or ()), reduced=False,
                                                    scratch=Path(scratch), cache=None)  # fmt: skip
            compiled += [f"{args.config.name} (compile: {str(config.compile).lower()})"] if config.compile else []
        if compiled:
            raise ValueError(f"--phases cannot measure a compiled transformer (hooks break its graph): "
                             f"{', '.join(compiled)}; measure phases without compile")  # fmt: skip
    if args.memory_history and device == "cpu":
        raise ValueError("--memory-history needs a CUDA GPU: the CPU form has no allocator history")
    if args.memory_history and len(configurations) != 1:
        raise ValueError("--memory-history records one configuration: give one --config or --configs entry")


def _run_config(args: argparse.Namespace, overrides: tuple[str, ...]):
    with tempfile.TemporaryDirectory() as scratch:
        return memory_contract.run_config(args.config, overrides, reduced=args.reduced, scratch=Path(scratch),
                                          cache=None)  # fmt: skip


def config_batch_size(args: argparse.Namespace, config) -> int:
    """A config's batch size; `auto` resolved for the capped memory (the CPU form: 1, for speed)."""
    if config.batch_size != "auto":
        return config.batch_size
    return 1 if args.reduced else config.resolved_batch_size(args.memory_cap_gib or 80)


def _configuration(text: str) -> tuple[str, int]:
    backend, _, size = text.strip().rpartition(":")
    if not backend or not size.isdigit() or int(size) < 1:
        raise ValueError(f"--configs entry {text!r} is not BACKEND:BATCH_SIZE (e.g. torchao+compile:2)")
    return backend, int(size)


def _has_torchao() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except Exception:
        return False
    return True


def _quiet_libraries() -> None:
    import logging

    import diffusers
    import transformers

    logging.basicConfig(level=logging.WARNING)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


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
