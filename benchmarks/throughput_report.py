"""The GPU throughput benchmark's table: a row per configuration, the environment it ran in, and how to read it."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata

import phase_memory  # beside this script
from flux_architecture import MODELS
from machine_load import cpu_model
from throughput_settings import PROMPTS, REPO, Settings

COLUMNS = [
    "backend", "batch", "weights", "status", "load s", "warm-up s (first call)", "s/image (steady median)",
    "img/min (runner wall)", "peak GPU GiB", "resident GiB", "GPU utilisation (in-call fraction)",
    "NVML utilisation", "calls", "failed items",
]  # fmt: skip


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
