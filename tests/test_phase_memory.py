"""The phase meter (benchmarks/phase_memory.py): it counts each phase of a real pipeline call on the tiny model,
changes no pixel, survives accelerate's offload hooks, keeps the run's peak across its own resets, and reaches
the benchmark's tables; --phases is refused with compile."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from batch_edit.engine import Engine
from batch_edit.pipeline_config import load_pipeline_config
from batch_edit.tiny_model import build_tiny_pipeline

from .conftest import REPO, write_pipeline_config
from .test_benchmarks import bench, table_rows  # loads gpu_throughput.py, which puts benchmarks/ on the path
from .test_engine import items_and_images

phase_memory = sys.modules["phase_memory"]
memory_contract = sys.modules["memory_contract"]
GIB = 2**30


def calls(meter) -> dict[str, int]:
    return {name: stats.calls for name, stats in meter.stats.items()}


def test_one_img2img_call_counts_each_phase_and_changes_no_pixel(tmp_path, tiny_model):
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}", batch_size=2)
    )
    # strength 0.6 of 4 steps: FLUX img2img starts at step int(4 - 4 * 0.6) = 1, so the transformer runs 3 times
    items, images = items_and_images([("a tiger", 1), ("a lion", 2)])
    plain = Engine.load(config, announce=False).generate(items, images)
    engine = Engine.load(config, announce=False)
    meter = phase_memory.PhaseMeter.for_device("cpu").attach(engine.pipe)

    measured = engine.generate(items, images)
    # each prompt encoded on its own, outside the pipeline's own call; the VAE encodes each image on its own
    expected = dict(text_encoder=2, text_encoder_2=2, vae_encode=2, transformer=3, vae_decode=1)
    assert calls(meter) == expected
    assert all(meter.stats[name].seconds > 0 for name in expected)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, measured)), "pixels changed"
    assert (meter.stats["transformer"].transient, meter.run_peak()) == (None, None), "no memory figures on a CPU"

    engine.generate(items, images)  # prompts now cached: the text encoders do not run again
    assert calls(meter) == {**expected, "vae_encode": 4, "transformer": 6, "vae_decode": 2}
    meter.detach()
    again = engine.generate(items, images)
    assert calls(meter)["transformer"] == 6, "detached: nothing counted"
    assert "encode" not in engine.pipe.vae.__dict__ and "decode" not in engine.pipe.vae.__dict__
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, again))


def test_the_phases_survive_model_offload_putting_forward_back_after_each_call():
    """`offload: model` (accelerate's CpuOffload hooks) removes and re-adds its hooks after every pipeline call,
    restoring the modules' original `forward`; accelerate runs on the CPU as execution device too."""
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload(device="cpu")
    meter = phase_memory.PhaseMeter().attach(pipe)
    source = Image.new("RGB", (64, 64), "red")
    forwards = []
    for _ in range(2):
        forwards.append(pipe.transformer.forward)
        pipe(prompt="a", image=source, width=64, height=64, num_inference_steps=2, strength=1.0,
             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert pipe.transformer.forward is not forwards[0], "accelerate replaced forward between the calls"
    # the prompt encoded inside each call here (no engine cache), every phase of both calls seen
    assert calls(meter) == dict(text_encoder=2, text_encoder_2=2, vae_encode=2, transformer=4, vae_decode=2)
    meter.detach()


class FakeAllocator:
    """Simulates the CUDA caching allocator's counters (allocated bytes, the peak since its last reset)."""

    def __init__(self):
        self.allocated = self.peak = 0

    def change(self, delta: int) -> None:
        self.allocated += delta
        self.peak = max(self.peak, self.allocated)

    def reset(self) -> None:
        self.peak = self.allocated

    def reader(self):
        return phase_memory.MemoryReader(lambda: self.allocated, lambda: self.peak, self.reset)


def test_nested_phases_and_the_runs_peak_survive_the_peak_resets():
    fake, now = FakeAllocator(), iter(range(100))
    meter = phase_memory.PhaseMeter(fake.reader(), clock=lambda: next(now))
    fake.change(10 * GIB)  # resident weights
    fake.change(100 * GIB)  # before any phase: the run's peak, 110, which the first reset would lose
    fake.change(-100 * GIB)
    with meter.phase("vae_decode"):  # outer, from 10
        fake.change(5 * GIB)
        fake.change(40 * GIB)  # the outer's own peak, 55, before an inner phase resets the counter
        fake.change(-40 * GIB)
        for size in (20, 30):  # an inner phase, twice: the largest of its calls counts
            with meter.phase("transformer"):
                fake.change(size * GIB)
                fake.change(-size * GIB)
        fake.change(-5 * GIB)
    inner, outer = meter.stats["transformer"], meter.stats["vae_decode"]
    assert (inner.calls, inner.transient, inner.peak) == (2, 30 * GIB, 45 * GIB)
    assert (outer.calls, outer.transient, outer.peak) == (1, 45 * GIB, 55 * GIB)
    assert inner.seconds == 2 and outer.seconds == 5  # clock ticks: begin, begin, end, begin, end, end

    with meter.phase("vae_encode"):  # from 10, with an inner phase holding the peak: the outer includes it
        with meter.phase("transformer"):
            fake.change(70 * GIB)
            fake.change(-70 * GIB)
    assert meter.stats["vae_encode"].transient == meter.stats["transformer"].transient == 70 * GIB
    assert meter.run_peak() == 110 * GIB, "the peak before the first reset is kept"
    fake.change(150 * GIB)  # after the last phase, still counted
    assert meter.run_peak() == 160 * GIB
    cells = phase_memory.memory_cells(meter.stats)
    assert cells == {"text enc GiB": "n/a", "VAE enc GiB": "70.00", "denoise GiB": "70.00", "VAE dec GiB": "45.00"}


def test_the_memory_table_takes_phase_columns_and_keeps_older_rows(tmp_path):
    stats = {name: phase_memory.PhaseStats() for name in phase_memory.PHASES}
    stats["text_encoder"].transient, stats["text_encoder_2"].transient = GIB // 2, 3 * GIB
    row = bench.Row("flux1-dev-24gb.yaml", 1, peak_gib=20.0, phases=stats)
    cells = memory_contract.cells(row, 22.0, "NVIDIA H100 80GB HBM3", "abc1234")
    assert (cells["text enc GiB"], cells["VAE enc GiB"]) == ("3.00", "n/a"), "the larger encoder; unmeasured n/a"
    assert memory_contract.cells(bench.Row("x.yaml", 1), 22.0, "GPU", "c")["denoise GiB"] == "n/a"

    # A table written before the phase columns existed: its rows stay, the new columns read n/a.
    old_columns = [c for c in memory_contract.COLUMNS if c not in phase_memory.MEMORY_COLUMNS]
    table = tmp_path / "gpu_memory.md"
    old_row = ["flux1-dev-16gb.yaml", "15", "ok", "14.2", *["1"] * (len(old_columns) - 4)]
    table.write_text("| " + " | ".join(old_columns) + " |\n|---|\n| " + " | ".join(old_row) + " |\n")
    (kept,) = memory_contract.read_rows(table)
    assert (kept["config"], kept["peak GiB"], kept["denoise GiB"]) == ("flux1-dev-16gb.yaml", "14.2", "n/a")
    memory_contract.record(table, cells)
    rows = {row["config"]: row for row in memory_contract.read_rows(table)}
    assert rows["flux1-dev-16gb.yaml"]["peak GiB"] == "14.2" and rows["flux1-dev-24gb.yaml"]["text enc GiB"] == "3.00"


@pytest.mark.parametrize(
    "args",
    [
        ["--configs", "torchao+compile:1"],
        ["--config", str(REPO / "configs" / "flux1-dev-hopper-fast.yaml"), "--set", "compile=regional"],
    ],
)
def test_phases_are_refused_with_compile(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        bench.main(["--reduced", "--phases", *args, "--out", str(tmp_path / "t.md")])
    error = capsys.readouterr().err
    assert refused.value.code == 2 and "--phases cannot measure a compiled transformer" in error
    assert not (tmp_path / "t.md").exists()


def test_a_memory_history_is_refused_on_the_cpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        bench.main(["--reduced", "--memory-history", str(tmp_path / "h.pickle"), "--out", str(tmp_path / "t.md")])
    assert refused.value.code == 2 and "--memory-history needs a CUDA GPU" in capsys.readouterr().err


def test_the_reduced_benchmark_shows_each_phase(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # the benchmark sets its own
    out = tmp_path / "reduced.md"
    assert bench.main(["--reduced", "--phases", "--backends", "none", "--batch-sizes", "1", "--items", "2",
                       "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text()
    assert "Phases: none, batch 1" in text
    header, rows = table_rows(text[text.index("Phases: none") :])
    assert header == phase_memory.PHASE_COLUMNS
    phases = {row["phase"]: row for row in rows}
    # 2 calls of one item at 64x64, 4 steps at strength 0.9 (all 4 run), each item with its own prompt (the
    # photos come before repeating a prompt: {caption} renders one per photo), each encoded once
    assert {label: int(row["calls"]) for label, row in phases.items()} == {
        "text encoder (CLIP)": 2, "text encoder 2 (T5)": 2, "VAE encode": 2,
        "denoise (transformer, once per step)": 8, "VAE decode": 2,
    }  # fmt: skip
    assert all(float(row["s total"]) > 0 for row in rows)
    assert {row["transient GiB (max over calls)"] for row in rows} == {"n/a"}, "no GPU figures from a CPU"


def test_the_suite_measures_phases_in_the_small_card_memory_steps_only(tmp_path):
    import gpu_suite  # beside gpu_throughput.py

    with_phases = {step.name: step.args for step in gpu_suite.steps(tmp_path, tmp_path) if "--phases" in step.args}
    assert set(with_phases) == {"memory-24gb", "memory-16gb", "memory-12gb", "memory-24gb-untiled"}
    assert not any(arg.startswith(("compile=", "torchao+")) for args in with_phases.values() for arg in args)
