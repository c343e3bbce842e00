"""What the GPU throughput benchmark measures, from its command line: the backends and batch sizes, or one pipeline
config, the work each item asks (task, size, steps, strength, guidance), and the options refused together."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import memory_contract  # beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
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


def settings_from(args: argparse.Namespace) -> Settings:
    device = args.device or ("cpu" if args.reduced else "cuda")
    default_backends = ["quanto", "none", "torchao"] if args.reduced else list(BACKENDS)
    backends = args.backends.split(",") if args.backends else default_backends
    batch_sizes = [int(size) for size in (args.batch_sizes or ("1,2" if args.reduced else "1,2,4")).split(",")]
    task, config = "img2img", None  # the backends' pipeline; a config's own task otherwise
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
    check_phase_options(args, device, backends, configurations, config)
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
        out=args.out
        or RESULTS / (("gpu_memory" if args.config else "gpu_throughput") + ("_reduced.md" if args.reduced else ".md")),
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


def check_phase_options(args: argparse.Namespace, device: str, backends: list[str], configurations: list,
                        config=None) -> None:  # fmt: skip
    """--phases hooks the transformer: inside a compiled graph its hooks would break the graph (and measure
    another program). --memory-history reads the CUDA allocator, for one configuration. `config`: --config's, as
    shipped (the reduced form runs it without compile, but refuses what the full form would)."""
    if args.phases:
        compiled = [name for name in backends if BACKENDS[name][1]]
        if config is not None and config.compile:
            compiled.append(f"{args.config.name} (compile: {str(config.compile).lower()})")
        if compiled:
            raise ValueError(f"--phases cannot measure a compiled transformer (hooks break its graph): "
                             f"{', '.join(compiled)}; measure phases without compile")  # fmt: skip
    if args.memory_history and device == "cpu":
        raise ValueError("--memory-history needs a CUDA GPU: the CPU form has no allocator history")
    if args.memory_history and len(configurations) != 1:
        raise ValueError("--memory-history records one configuration: give one --config or --configs entry")


def _run_config(args: argparse.Namespace, overrides: tuple[str, ...]):
    """--config with its overrides as shipped: its task, batch size and compile (the reduced form changes only
    where and how it runs: device, dtype, offload, compile)."""
    with tempfile.TemporaryDirectory() as scratch:
        return memory_contract.run_config(args.config, overrides, reduced=False, scratch=Path(scratch), cache=None)


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
