"""Soak benchmark: does memory creep over a long run?

Runs hundreds of items through the real runner and the tiny FLUX pipeline (or any pipeline config), and
records the process's resident memory after every pipeline call (and, on CUDA, the allocated GPU memory).
Writes a per-call CSV and a summary table to benchmarks/results/.

    python benchmarks/soak.py                       # 320 items, tiny pipeline on the CPU
    python benchmarks/soak.py --items 1000 --pipeline configs/my-gpu.yaml
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PHOTOS = REPO / "jobs" / "images"


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class MeasuredEngine:
    """The real engine, with memory read after each call."""

    def __init__(self, engine):
        self.engine, self.samples, self.started = engine, [], time.monotonic()

    def generate(self, items, images, **options):
        results = self.engine.generate(items, images, **options)
        gpu = None
        if self.engine.config.device.startswith("cuda"):
            import torch

            gpu = torch.cuda.memory_allocated() / 2**20
        self.samples.append((len(self.samples) + 1, time.monotonic() - self.started, resident_mb(), gpu))
        return results


def write_manifest(folder: Path, items: int, size: int) -> Path:
    photos = sorted(str(p) for p in PHOTOS.glob("*.jpg"))
    seeds = list(range(max(1, items // (len(photos) * 2))))
    manifest = folder / "soak.yaml"
    manifest.write_text(
        "jobs:\n  - name: soak\n"
        f"    sources: {photos}\n    prompts: ['a tiger', 'a watercolor painting']\n"
        f"    seed: {seeds}\n    strength: 0.6\n    num_inference_steps: 4\n    width: {size}\n    height: {size}\n"
    )
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=320)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pipeline", type=Path, help="pipeline config (default: the tiny model on the CPU)")
    args = parser.parse_args()

    from batch_edit.engine import Engine
    from batch_edit.manifest import load_manifests
    from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
    from batch_edit.plan import plan_jobs
    from batch_edit.runner import run
    from batch_edit.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.pipeline:
            config = load_pipeline_config(args.pipeline)
        else:
            config = PipelineConfig(model=str(write_tiny_model(scratch / "tiny")), device="cpu", dtype="float32")
        (manifest,) = load_manifests([write_manifest(scratch, args.items, args.size)])
        plans = plan_jobs(list(manifest.jobs), config.identity())
        measured: list[MeasuredEngine] = []

        def load(cfg):
            measured.append(MeasuredEngine(Engine.load(cfg)))
            return measured[0]

        result = run(plans, config, scratch / "out", load)
    samples = measured[0].samples
    return report(samples, config, len(plans[0].items), result.failed, args.size)


def report(samples, config, items: int, failed: int, size: int) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "soak-samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["call", "seconds", "rss_mb", "cuda_allocated_mb"])
        writer.writerows(samples)
    warm = samples[min(10, len(samples) - 1)]  # after warm-up (allocator pools, caches)
    last = samples[-1]
    peak = max(sample[2] for sample in samples)
    creep = (last[2] - warm[2]) / max(1, last[0] - warm[0]) * 100
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "# Soak benchmark (`python benchmarks/soak.py`)",
        "",
        f"Machine: {machine}; device {config.device}; model {Path(config.model).name}; "
        f"quantization {config.quantization.describe()}; {items} items at {size}x{size}, {failed} failed.",
        "",
        "| pipeline calls | resident MB after call 10 | resident MB at end | peak MB | creep per 100 calls (MB) |",
        "|---|---|---|---|---|",
        f"| {last[0]} | {warm[2]:.1f} | {last[2]:.1f} | {peak:.1f} | {creep:+.2f} |",
        "",
        "Per-call figures: `soak-samples.csv`. GPU allocated memory is recorded only when the device is CUDA.",
    ]
    (RESULTS / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
