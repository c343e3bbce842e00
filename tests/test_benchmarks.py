"""The GPU throughput benchmark: its reduced CPU form runs through the real runner, its full-size model is FLUX.1-dev's
architecture, and the committed GPU table holds either real GPU figures or a plain "not yet measured"."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
COMMITTED = REPO / "benchmarks" / "results" / "gpu_throughput.md"


def load_benchmark():
    sys.path.insert(0, str(SCRIPT.parent))  # as when run as a script: its helpers sit beside it
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_throughput", module)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()
import throughput_report as report  # noqa: E402  (beside gpu_throughput.py, on the path it set)
import throughput_timing as timing  # noqa: E402


def table_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of the first markdown table in `text`."""
    all_lines = text.splitlines()
    first = next(index for index, line in enumerate(all_lines) if line.startswith("|"))
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), all_lines[first:]))
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    assert set(lines[1]) <= set("|-"), f"no separator row under the header: {lines[1]!r}"
    return header, [dict(zip(header, split(line))) for line in lines[2:]]


@pytest.mark.slow  # tens of seconds on 2 cores: `pytest -m slow`
def test_reduced_form_measures_every_configuration_through_the_runner(tmp_path):
    backends = ["quanto", "none"] + (["torchao"] if importlib.util.find_spec("torchao") else [])
    out = tmp_path / "reduced.md"
    committed_before = hashlib.sha256(COMMITTED.read_bytes()).hexdigest()
    # 4 items: batch 1 makes 4 calls, batch 2 makes 2 (a warm-up and one timed call): enough, and quick
    command = [sys.executable, str(SCRIPT), "--reduced", "--backends", ",".join(backends), "--batch-sizes", "1,2",
               "--items", "4", "--out", str(out)]  # fmt: skip
    # One torch thread: on a busy 2-core machine torch's spinning OpenMP threads make this 5x slower, not faster.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    text = out.read_text()
    assert "REDUCED CPU FORM" in text and "NOT GPU figures" in text
    header, rows = table_rows(text)
    assert header == report.COLUMNS
    assert sorted((row["backend"], int(row["batch"])) for row in rows) == sorted(
        (backend, size) for backend in backends for size in (1, 2)
    )
    for row in rows:
        where = f"{row['backend']} batch {row['batch']}"
        assert row["status"] == "ok", where
        assert row["failed items"] == "0", where
        assert int(row["calls"]) == 4 // int(row["batch"]), (
            f"{where}: 4 items in full batches, got {row['calls']} calls"
        )
        assert float(row["s/image (steady median)"]) > 0, where
        assert float(row["warm-up s (first call)"]) > 0, where
        assert 0 < float(row["GPU utilisation (in-call fraction)"]) <= 1, where
        assert float(row["img/min (runner wall)"]) > 0, where
        assert row["peak GPU GiB"] == "n/a", f"{where}: a CPU run reports no GPU memory"
    weights = {row["backend"]: row["weights"] for row in rows}
    assert weights["quanto"].startswith("quanto(transformer=qint8,text_encoder=qint4,text_encoder_2=qint4")
    assert weights["none"] == "none (float32)"
    if "torchao" in weights:
        assert weights["torchao"] == "torchao(transformer=int8_weight_only)", "auto picks int8 weight-only on a CPU"
    # tests never overwrite the committed GPU table
    assert hashlib.sha256(COMMITTED.read_bytes()).hexdigest() == committed_before


def test_full_size_model_is_flux1_dev():
    """Built on the meta device (no memory). The counts are the published checkpoints' sizes: the bf16
    safetensors indexes of FLUX.1-dev's transformer (23,802,816,640 bytes) and text_encoder_2 (9,524,621,312 bytes)
    halved, CLIP ViT-L/14's text tower, and the FLUX VAE (ae.safetensors)."""
    import torch

    pipe = bench.build_flux_dev_pipeline("meta", torch.bfloat16)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(pipe.transformer) == 11_901_408_320
    assert count(pipe.text_encoder_2) == 4_762_310_656
    assert count(pipe.text_encoder) == 123_060_480
    assert count(pipe.vae) == 83_819_683
    for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.bfloat16}, name
        assert {p.device.type for p in getattr(pipe, name).parameters()} == {"meta"}, name
    assert torch.get_default_dtype() == torch.float32, "the builder must restore the default dtype"
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.in_channels == 64 and pipe.transformer.config.joint_attention_dim == 4096
    # the offline tokenizers' ids fit the full vocabularies, and CLIP pools at the token its tokenizer ends with
    clip, t5 = pipe.text_encoder.config, pipe.text_encoder_2.config
    assert len(pipe.tokenizer) <= clip.vocab_size and len(pipe.tokenizer_2) <= t5.vocab_size
    ids = pipe.tokenizer("a photo of a tiger").input_ids
    assert (ids[0], ids[-1]) == (clip.bos_token_id, clip.eos_token_id)
    assert pipe.tokenizer.pad_token_id == clip.pad_token_id
    assert pipe.tokenizer_2("a tiger").input_ids[-1] == t5.eos_token_id


def test_utilisation_counts_the_gaps_between_calls():
    calls = [timing.Call(0.0, 1.0, 2), timing.Call(1.5, 2.5, 2), timing.Call(3.0, 5.0, 2)]
    result = SimpleNamespace(failed=0, jobs=[SimpleNamespace(errors={})], interrupted_by=None)
    row = bench.Row("none", 2)
    timing.summarise(row, calls, timing.UtilisationSampler("cpu"), result)
    assert row.status == "ok" and row.calls == 3
    assert row.warmup_s == pytest.approx(1.0)
    assert row.s_per_image == pytest.approx(0.75)  # median of 1.0/2 and 2.0/2
    assert row.in_call == pytest.approx(3.0 / 4.0)  # 3 s inside calls over the 4 s after the warm-up
    assert row.img_per_min == pytest.approx(4 / 4.0 * 60)


def test_an_out_of_memory_batch_is_reported_not_hidden():
    calls = [timing.Call(0.0, 1.0, 4), timing.Call(1.0, 1.2, 4, "OutOfMemory"), timing.Call(1.2, 2.0, 2)]
    result = SimpleNamespace(failed=0, jobs=[SimpleNamespace(errors={})], interrupted_by=None)
    row = bench.Row("none", 4)
    timing.summarise(row, calls, timing.UtilisationSampler("cpu"), result)
    assert "OutOfMemory on a batch of 4" in row.status


def test_the_full_form_refuses_without_a_gpu_and_writes_nothing(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full form would run for real")
    out = tmp_path / "gpu.md"
    assert bench.main(["--out", str(out)]) == 2
    assert not out.exists()
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # nor may a full-size CPU run land in the committed GPU table
        bench.main(["--device", "cpu"])
    assert refused.value.code == 2 and "GPU figures only" in capsys.readouterr().err


def test_committed_gpu_table_is_real_gpu_figures():
    text = COMMITTED.read_text()
    header, rows = table_rows(text)
    assert header == report.COLUMNS, "the committed table's columns are the ones a run writes"
    device = next(line for line in text.splitlines() if line.startswith("Device: "))
    assert not device.startswith("Device: CPU") and "compute capability" in device, "GPU figures only"
    assert "REDUCED" not in text, "the GPU table holds GPU figures only"
    assert rows and all(row["peak GPU GiB"] != "n/a" for row in rows if row["status"] == "ok")


@pytest.mark.slow  # two processes loading torch: `pytest -m slow`
def test_the_url_sources_benchmark_counts_one_request_per_source(tmp_path):
    out = tmp_path / "url_sources.md"
    command = [sys.executable, str(REPO / "benchmarks" / "url_sources.py"), "--sources", "4", "--strengths", "2",
               "--delay", "0.1", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    header, rows = table_rows(out.read_text())
    assert header == ["code", "requests", "whole command (s)", "the run's own line"]
    assert [(row["requests"], row["the run's own line"].split(" in ")[0]) for row in rows] == [
        ("4", "job urls: 8 written, 0 already done, 0 failed")
    ]
