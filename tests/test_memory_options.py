"""Memory options of pipeline configs (VAE tiling and slicing, offload, batch_size auto) and single-file
transformer checkpoints (.safetensors, .gguf) with the rest of the pipeline from a base model."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from batch_edit.engine import Engine
from batch_edit.errors import ConfigError, PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config

from .conftest import PHOTOS, REPO, batch_edit, write_pipeline_config
from .test_engine import items_and_images

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_parses(path):
    config = load_pipeline_config(path)
    assert config.identity()["model"]


def test_the_small_card_configs_exist_and_save_memory():
    by_name = {path.name: load_pipeline_config(path) for path in CONFIGS}
    assert by_name["flux1-dev-16gb.yaml"].offload == "model"
    assert by_name["flux1-dev-12gb.yaml"].offload == "sequential"
    for name in ("flux1-dev-24gb.yaml", "flux1-dev-16gb.yaml", "flux1-dev-12gb.yaml"):
        assert by_name[name].vae_tiling, name
    assert by_name["flux1-dev-24gb.yaml"].offload_text_encoders


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("device: cpu\noffload: model\n", "offload: model needs device: cuda"),
        ("device: cpu\noffload: sequential\n", "offload: sequential needs device: cuda"),
        ("offload: model\ncompile: regional\nquantization: {backend: none}\n", "cannot be combined with compile"),
        ("offload: sequential\n", "offload: sequential cannot move quanto-quantized weights"),
        ("offload: sequential\nquantization: {backend: torchao}\n", "cannot move torchao-quantized weights"),
        ("model: ./x.gguf\nbase_model: ./base\n", "a .gguf model is quantized already"),
        ("model: ./x.gguf\nbase_model: ./base\nquantization: {backend: torchao}\n", "quantized already"),
        ("model: ./x.safetensors\n", "set base_model"),
        ("base_model: ./base\n", "base_model is only for a single-file model"),
        ("model: ./x.safetensors\nbase_model: ./y.safetensors\n", "base_model must be a repo or folder"),
        ("offload: disk\n", "field 'offload'"),
    ],
)
def test_combinations_that_cannot_work_are_refused_naming_the_keys(tmp_path, text, expected):
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(write_config(tmp_path, text))
    assert expected in str(refused.value)
    assert str(refused.value).startswith(f"{tmp_path / 'p.yaml'}: ")


def test_offload_on_a_machine_without_cuda_is_refused_before_anything_runs(tmp_path, tiny_model):
    """A CUDA config with offload is valid; on a machine without a GPU the engine's check refuses it."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, device="cuda", offload="model")
    )
    with pytest.raises(PipelineLoadError, match="no CUDA GPU is visible"):
        Engine.check(config)
    cpu = write_pipeline_config(tmp_path / "cpu.yaml", tiny_model, offload="model")
    (tmp_path / "m.yaml").write_text(f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}]\n")
    result = batch_edit("run", "m.yaml", "--pipeline", str(cpu), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2 and "offload: model needs device: cuda" in result.stderr
    assert not (tmp_path / "out").exists()


def test_only_options_that_change_images_enter_the_identity():
    plain = PipelineConfig()
    assert PipelineConfig(vae_slicing=True).identity() == plain.identity()
    assert PipelineConfig(offload="model").identity() == plain.identity()
    assert (
        PipelineConfig(offload="sequential", quantization={"backend": "none"}).identity()
        == PipelineConfig(quantization={"backend": "none"}).identity()
    )
    assert PipelineConfig(vae_tiling=True).identity() == {**plain.identity(), "vae_tiling": True}


def test_batch_size_auto_is_one_under_offload():
    assert PipelineConfig().resolved_batch_size(80) == 4
    assert PipelineConfig(offload="model").resolved_batch_size(80) == 1
    assert PipelineConfig(offload="model").resolved_batch_size(None) == 8  # the CPU rule (offload needs CUDA)
    assert PipelineConfig(offload="model", batch_size=2).resolved_batch_size(80) == 2  # a number is kept


@pytest.fixture(scope="module")
def vae_engines(tmp_path_factory, tiny_model):
    """Plain float32 engines (no quantization: the comparisons are about the VAE) per VAE option."""
    loaded = {}

    def engine(**options) -> Engine:
        key = tuple(sorted(options.items()))
        if key not in loaded:
            folder = tmp_path_factory.mktemp("vae")
            config = write_pipeline_config(folder / "p.yaml", tiny_model, quantization="{backend: none}", **options)
            loaded[key] = Engine.load(load_pipeline_config(config))
        return loaded[key]

    return engine


def render_batch(engine: Engine, size: int) -> list[np.ndarray]:
    items, images = items_and_images([("a tiger", 1), ("a watercolor", 2)], size=size)
    results = engine.generate(items, images)
    assert [image.size for image in results] == [(size, size)] * 2
    return [np.asarray(image, dtype=int) for image in results]


def test_vae_slicing_gives_the_same_images_for_a_batch(vae_engines):
    """Each image decoded alone, as at batch size 1: the same images up to float rounding (at most one level of
    255 here), as with any change of batch size, which ids do not name either; the record keeps the setting."""
    plain = render_batch(vae_engines(), 128)
    sliced_engine = vae_engines(vae_slicing="true")
    assert sliced_engine.pipe.vae.use_slicing
    sliced = render_batch(sliced_engine, 128)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(plain, sliced))


def test_vae_tiling_runs_and_is_lossy_so_it_is_labelled(vae_engines):
    """The tiny VAE tiles above 64 px: at 128 px its tiles blend, so images differ slightly (hence the identity)."""
    tiled_engine = vae_engines(vae_tiling="true")
    assert tiled_engine.pipe.vae.use_tiling
    assert tiled_engine.config.identity()["vae_tiling"] is True
    plain, tiled = render_batch(vae_engines(), 128), render_batch(tiled_engine, 128)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, tiled))
    assert all(np.abs(a - b).mean() < 64 for a, b in zip(plain, tiled))  # still the same picture, roughly


# --- single-file checkpoints -------------------------------------------------------------------------------------


def transformer_state(tiny_model: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors"))


def write_gguf(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Matrices whose rows split into 32-value blocks as Q8_0, the rest (biases, norms) as F32/F16."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "flux")
    for name, tensor in tensors.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[1] % 32 == 0:
            quantized = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array.astype(np.float16) if array.ndim > 1 else array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory, tiny_model):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("checkpoints")
    state = transformer_state(tiny_model)
    save_file(state, str(folder / "tiny-flux.safetensors"))
    if importlib.util.find_spec("gguf"):
        write_gguf(folder / "tiny-flux-Q8_0.gguf", state)
    return folder


def run_single_file(tmp_path: Path, tiny_model: Path, model: Path, **options):
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model, **options)
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a tiger, a lion], num_inference_steps: 2,"
        " width: 64, height: 64}]\n"
    )
    return batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)


def test_a_single_safetensors_transformer_runs_with_its_base_and_is_named_in_the_ids(
    tmp_path, tiny_model, checkpoint_files
):
    model = checkpoint_files / "tiny-flux.safetensors"
    result = run_single_file(tmp_path, tiny_model, model)
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")
    assert len(rows) == 2 and set(rows["model"]) == {model.as_posix()}
    records = [json.loads(line) for line in (tmp_path / "out" / "j" / ".batch-edit" / "records.jsonl").open()]
    stat = model.stat()
    assert {record["model_file"] for record in records} == {f"{stat.st_size}-{stat.st_mtime_ns}"}
    assert {record["base_model"] for record in records} == {tiny_model.as_posix()}
    plan = batch_edit("plan", "m.yaml", "--pipeline", "p.yaml", "--output-root", "out", cwd=tmp_path)
    assert "2 item(s), 2 already done" in plan.stdout, plan.stdout + plan.stderr
    # the same weights as the base's own transformer: the same images as the folder model gives
    folder_run = tmp_path / "folder"
    folder_run.mkdir()
    (folder_run / "m.yaml").write_text((tmp_path / "m.yaml").read_text())
    config = write_pipeline_config(folder_run / "p.yaml", tiny_model)
    assert (
        batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=folder_run).returncode == 0
    )
    folder_rows = pd.read_csv(folder_run / "out" / "j" / "metadata.csv")
    pairs = rows.merge(folder_rows, on="prompt", suffixes=("", "_folder"))[["file_name", "file_name_folder"]]
    assert len(pairs) == 2
    for file_a, file_b in pairs.itertuples(index=False):
        from PIL import Image

        with Image.open(tmp_path / "out" / "j" / file_a) as a, Image.open(folder_run / "out" / "j" / file_b) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_changed_checkpoint_file_gives_new_ids(tmp_path, tiny_model, checkpoint_files):
    model = tmp_path / "copy.safetensors"
    model.write_bytes((checkpoint_files / "tiny-flux.safetensors").read_bytes())
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model))
    before = config.identity()
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    assert config.identity() != before and config.identity()["model_file"] != before["model_file"]


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package (the gguf extra)")
def test_a_gguf_transformer_runs_quantized_with_its_base(tmp_path, tiny_model, checkpoint_files):
    model = checkpoint_files / "tiny-flux-Q8_0.gguf"
    result = run_single_file(tmp_path, tiny_model, model, quantization="{backend: quanto, transformer: null}")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")
    assert len(rows) == 2 and set(rows["model"]) == {model.as_posix()}
    assert set(rows["quantization"]) == {"quanto(text_encoder=qint4,text_encoder_2=qint4)"}
    config = load_pipeline_config(tmp_path / "p.yaml")
    engine = Engine.load(config)
    from diffusers.quantizers.gguf.utils import GGUFParameter

    assert isinstance(engine.pipe.transformer.transformer_blocks[0].attn.to_q.weight, GGUFParameter)


def test_single_file_refusals_name_the_file(tmp_path, tiny_model, checkpoint_files):
    missing = run_single_file(tmp_path, tiny_model, tmp_path / "nowhere.safetensors")
    assert missing.returncode == 2 and "field 'model': file not found" in missing.stderr
    assert "folder not found" not in missing.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    junk = run_single_file(tmp_path, tiny_model, tmp_path / "junk.safetensors")
    assert junk.returncode == 2 and "junk.safetensors: not a safetensors file" in junk.stderr
    config = write_pipeline_config(
        tmp_path / "q.yaml", checkpoint_files / "tiny-flux.safetensors", base_model=tmp_path / "no-base"
    )
    with pytest.raises(PipelineLoadError, match="q.yaml: field 'base_model': folder not found"):
        Engine.check(load_pipeline_config(config))


def test_relative_single_file_and_base_paths_resolve_against_the_config(tmp_path):
    (tmp_path / "configs").mkdir()
    path = write_config(tmp_path / "configs", "model: flux1-dev-fp8.safetensors\nbase_model: ../base\n")
    config = load_pipeline_config(path)
    assert config.model == (tmp_path / "configs" / "flux1-dev-fp8.safetensors").as_posix()
    assert config.base_model == (tmp_path / "base").as_posix()
    hub_base = load_pipeline_config(
        write_config(tmp_path, "model: ./x.safetensors\nbase_model: black-forest-labs/FLUX.1-dev\n")
    )
    assert hub_base.base_model == "black-forest-labs/FLUX.1-dev"


def test_the_24gb_recipe_runs_on_the_tiny_model(tmp_path, tiny_model):
    """quanto text encoders with offload_text_encoders, VAE tiling and slicing together (the 24 GB config's
    settings) on the CPU: the encoders already sit there, and moving them again must not fail."""
    config = write_pipeline_config(
        tmp_path / "p.yaml", tiny_model, offload_text_encoders="true", vae_tiling="true", vae_slicing="true"
    )
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a, b], num_inference_steps: 2, width: 96,"
        " height: 96}]\n"
    )
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")) == 2


# --- the memory contract in the benchmark, and the GPU suite ------------------------------------------------------

SUITE = REPO / "benchmarks" / "gpu_suite.sh"


@pytest.fixture(scope="module")
def contract():
    from .test_benchmarks import bench  # loads gpu_throughput.py, which puts benchmarks/ on the path

    memory_contract = sys.modules["memory_contract"]
    return bench, memory_contract


def test_the_cap_is_the_right_share_of_the_card(contract):
    _, memory = contract
    assert memory.memory_fraction(22, 80 * 2**30) == pytest.approx(22 / 80)
    assert memory.memory_fraction(11, int(79.6 * 2**30)) == pytest.approx(11 / 79.6)
    with pytest.raises(memory.CapError, match="more than this GPU's 16.0 GiB"):
        memory.memory_fraction(22, 16 * 2**30)
    with pytest.raises(memory.CapError, match="must be positive"):
        memory.memory_fraction(0, 16 * 2**30)


class FakeCuda:
    """Stands in for torch.cuda where no GPU exists: reports a card and records the cap asked for. Like torch,
    the cap wants a device index: "cuda" without one is refused."""

    def __init__(self, available: bool, total_gib: float = 80):
        self.available, self.total, self.calls = available, int(total_gib * 2**30), []

    def is_available(self):
        return self.available

    def current_device(self):
        return 0

    def get_device_properties(self, device):
        return type("Props", (), {"total_memory": self.total})()

    def empty_cache(self):
        self.calls.append("empty_cache")

    def set_per_process_memory_fraction(self, fraction, device):
        if not isinstance(device, int):
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
        self.calls.append((fraction, device))


def test_the_cap_is_set_on_the_device_and_refused_without_cuda(contract):
    import torch

    _, memory = contract
    fake = type("Torch", (), {"__version__": "x", "device": torch.device})()
    fake.cuda = FakeCuda(available=True)
    assert memory.apply_memory_cap(22, "cuda:1", fake) == pytest.approx(22 / 80)
    assert fake.cuda.calls == ["empty_cache", (pytest.approx(22 / 80), 1)]
    fake.cuda = FakeCuda(available=True)  # the configs' plain "cuda": the current device's index
    assert memory.apply_memory_cap(22, "cuda", fake) == pytest.approx(22 / 80)
    assert fake.cuda.calls == ["empty_cache", (pytest.approx(22 / 80), 0)]
    fake.cuda = FakeCuda(available=False)
    with pytest.raises(memory.CapError, match="needs a CUDA GPU"):
        memory.apply_memory_cap(22, "cuda", fake)
    assert fake.cuda.calls == []


def test_the_benchmark_refuses_a_cap_it_cannot_apply(contract, tmp_path, capsys):
    bench, _ = contract
    config = str(REPO / "configs" / "flux1-dev-24gb.yaml")
    with pytest.raises(SystemExit) as refused:
        bench.main(["--reduced", "--config", config, "--memory-cap-gib", "22", "--out", str(tmp_path / "m.md")])
    assert refused.value.code == 2 and "--memory-cap-gib needs a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--reduced", "--config", config, "--set", "offload=disk", "--out", str(tmp_path / "m.md")])
    assert "field 'offload'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.main(["--config", config, "--memory-cap-gib", "22", "--out", str(tmp_path / "m.md")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "m.md").exists()


def test_an_out_of_memory_becomes_a_row_not_a_crash(contract, tmp_path, monkeypatch):
    from .test_benchmarks import timing

    bench, memory = contract

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bench, "measure", out_of_memory)
    row = bench.run_configuration(bench.settings_from(bench_args(bench)), "flux1-dev-24gb.yaml", 1, tmp_path)
    cells = memory.cells(row, 22.0, "NVIDIA H100 80GB HBM3", "abc1234")
    assert cells["status"].startswith("out-of-memory")
    assert (cells["cap GiB"], cells["peak GiB"], cells["GPU"]) == ("22", "n/a", "NVIDIA H100 80GB HBM3")
    # an out-of-memory inside a pipeline call (the runner records it; the row says so)
    inside = bench.Row("flux1-dev-16gb.yaml", 1)
    result = type("Result", (), {"failed": 1, "jobs": [], "interrupted_by": None})()
    timing.summarise(inside, [timing.Call(0.0, 1.0, 1, "OutOfMemory")], timing.UtilisationSampler("cpu"), result)
    assert memory.status_of(inside.status).startswith("out-of-memory")

    table = tmp_path / "gpu_memory.md"
    memory.record(table, cells)
    rows = memory.read_rows(table)
    assert [(r["config"], r["cap GiB"]) for r in rows].count(("flux1-dev-24gb.yaml", "22")) == 1
    assert {r["config"] for r in rows} >= set(memory.SHIPPED_CAPS), "the other configs' rows stay"
    memory.record(table, {**cells, "status": "ok", "peak GiB": "20.1"})  # a rerun replaces its own row
    (row_24,) = [r for r in memory.read_rows(table) if r["config"] == "flux1-dev-24gb.yaml"]
    assert (row_24["status"], row_24["peak GiB"]) == ("ok", "20.1")


def bench_args(bench):
    import argparse

    return argparse.Namespace(
        reduced=True, device=None, backends=None, batch_sizes=None, configs=None, items=2, calls=2, size=None,
        steps=None, strength=0.9, guidance=3.5, out=None, keep_metadata=None, set=None, memory_cap_gib=None,
        compile_cache_dir=None, config=REPO / "configs" / "flux1-dev-24gb.yaml", phases=False, memory_history=None,
    )  # fmt: skip


def test_committed_memory_table_has_every_shipped_gpu_config_and_no_estimates(contract):
    _, memory = contract
    rows = memory.read_rows(REPO / "benchmarks" / "results" / "gpu_memory.md")
    shipped = {path.name for path in CONFIGS if load_pipeline_config(path).device.startswith("cuda")}
    assert shipped <= {row["config"] for row in rows}
    for row in rows:
        if row["status"] == memory.NOT_MEASURED:
            assert {row[c] for c in memory.COLUMNS[3:]} == {"n/a"}, f"{row['config']}: no figures unmeasured"
        else:
            assert row["GPU"] not in ("n/a", "CPU"), f"{row['config']}: GPU figures only, naming the GPU"


@pytest.mark.slow  # tens of seconds on 2 cores: `pytest -m slow`
def test_the_suite_runs_its_steps_in_reduced_form_and_writes_each_row(tmp_path, contract):
    """The shell entry point (install check, paths) and the driver, with the tiny model on the CPU: two steps,
    a memory row and a cold-start row; files copied to $OUT as the device tool collects them."""
    import subprocess
    import sys

    out = tmp_path / "device-out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    command = [str(SUITE), "--reduced", "--results", str(tmp_path / "r"), "--only", "memory-16gb,cold-start-regional"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    log = (tmp_path / "r" / "gpu_suite.md").read_text()
    assert "REDUCED CPU FORM" in log
    assert "| memory-16gb | ok |" in log and "| cold-start-regional | ok |" in log
    rows = {row["config"]: row for row in contract[1].read_rows(tmp_path / "r" / "gpu_memory.md")}
    assert set(rows) == {"flux1-dev-16gb.yaml", "flux1-dev-hopper-fast.yaml compile=regional batch_size=1"}
    for row in rows.values():
        assert row["status"] == "ok" and float(row["first image s (from process start)"]) > 0
        assert row["GPU"] == "CPU" and row["cap GiB"] == "none"
    assert {path.name for path in out.iterdir()} == {"gpu_suite.md", "gpu_suite.log", "gpu_memory.md"}


def test_the_suite_keeps_to_its_budget_and_refuses_reduced_figures_in_the_results(tmp_path, capsys):
    import importlib.util as util
    import sys

    sys_path_suite = REPO / "benchmarks" / "gpu_suite.py"

    spec = util.spec_from_file_location("gpu_suite", sys_path_suite)
    suite = util.module_from_spec(spec)
    sys.modules.setdefault("gpu_suite", suite)  # dataclasses look their module up while it loads
    spec.loader.exec_module(suite)
    assert suite.main(["--reduced", "--results", str(tmp_path), "--budget-s", "0"]) == 1
    log = (tmp_path / "gpu_suite.md").read_text()
    assert log.count("not run: the suite's time budget was spent") == len(suite.steps(tmp_path, tmp_path))
    with pytest.raises(SystemExit):
        suite.main(["--reduced"])
    assert "--reduced needs --results" in capsys.readouterr().err
    names = [step.name for step in suite.steps(tmp_path, tmp_path)]
    assert names[0] == "memory-24gb" and names[-1] == "throughput-compile"  # the most important first
    assert "--memory-cap-gib" not in suite.reduced_args(("--memory-cap-gib", "22", "--config", "x"))


# --- the original (Black Forest Labs) key layout of ComfyUI/Forge files ---------------------------------------------

# diffusers' conversion of that layout assumes FLUX.1's width (3072 = 24 heads x 128): the smallest transformer
# it converts has that width with one block of each kind (about 480M parameters), hence a slow test.
WIDE_TRANSFORMER = dict(num_attention_heads=24, attention_head_dim=128, axes_dims_rope=[16, 56, 56])


def to_bfl_layout(state: dict[str, torch.Tensor], layers: int, single_layers: int) -> dict[str, torch.Tensor]:
    """diffusers' FLUX transformer keys -> the original layout (the inverse of diffusers'
    convert_flux_transformer_checkpoint_to_diffusers), with ComfyUI's `model.diffusion_model.` prefix."""
    out = {}

    def put(new: str, *old: str) -> None:
        for kind in ("weight", "bias"):
            if f"{old[0]}.{kind}" in state:
                out[f"{new}.{kind}"] = torch.cat([state[f"{name}.{kind}"] for name in old])

    for new, old in [("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                     ("guidance_in", "guidance_embedder")]:  # fmt: skip
        put(f"{new}.in_layer", f"time_text_embed.{old}.linear_1")
        put(f"{new}.out_layer", f"time_text_embed.{old}.linear_2")
    put("txt_in", "context_embedder")
    put("img_in", "x_embedder")
    for i in range(layers):
        d, b = f"double_blocks.{i}", f"transformer_blocks.{i}"
        put(f"{d}.img_mod.lin", f"{b}.norm1.linear")
        put(f"{d}.txt_mod.lin", f"{b}.norm1_context.linear")
        put(f"{d}.img_attn.qkv", *(f"{b}.attn.to_{x}" for x in "qkv"))
        put(f"{d}.txt_attn.qkv", *(f"{b}.attn.add_{x}_proj" for x in "qkv"))
        put(f"{d}.img_mlp.0", f"{b}.ff.net.0.proj")
        put(f"{d}.img_mlp.2", f"{b}.ff.net.2")
        put(f"{d}.txt_mlp.0", f"{b}.ff_context.net.0.proj")
        put(f"{d}.txt_mlp.2", f"{b}.ff_context.net.2")
        put(f"{d}.img_attn.proj", f"{b}.attn.to_out.0")
        put(f"{d}.txt_attn.proj", f"{b}.attn.to_add_out")
        for new, old in [("img_attn.norm.query_norm", "norm_q"), ("img_attn.norm.key_norm", "norm_k"),
                         ("txt_attn.norm.query_norm", "norm_added_q"), ("txt_attn.norm.key_norm", "norm_added_k")]:  # fmt: skip
            out[f"{d}.{new}.scale"] = state[f"{b}.attn.{old}.weight"]
    for i in range(single_layers):
        d, b = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        put(f"{d}.modulation.lin", f"{b}.norm.linear")
        put(f"{d}.linear1", *(f"{b}.attn.to_{x}" for x in "qkv"), f"{b}.proj_mlp")
        put(f"{d}.linear2", f"{b}.proj_out")
        out[f"{d}.norm.query_norm.scale"] = state[f"{b}.attn.norm_q.weight"]
        out[f"{d}.norm.key_norm.scale"] = state[f"{b}.attn.norm_k.weight"]
    put("final_layer.linear", "proj_out")
    for kind in ("weight", "bias"):  # diffusers keeps (scale, shift), the original (shift, scale)
        scale, shift = state[f"norm_out.linear.{kind}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    return {f"model.diffusion_model.{key}": value.contiguous() for key, value in out.items()}


def wide_base_and_weights(tmp_path: Path, tiny_model: Path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """The tiny pipeline with a FLUX.1-wide transformer config (no weights: the file supplies them), and random
    bf16 weights for that transformer in diffusers' layout."""
    import json
    import shutil

    from diffusers import FluxTransformer2DModel

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    config = {**json.loads((base / "transformer" / "config.json").read_text()), **WIDE_TRANSFORMER}
    (base / "transformer" / "config.json").write_text(json.dumps(config))
    (base / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    torch.manual_seed(0)
    with torch.device("meta"):
        wide = FluxTransformer2DModel.from_config(config)
    wide = wide.to_empty(device="cpu").to(torch.bfloat16)
    for parameter in wide.parameters():
        parameter.data.normal_(0, 0.02)
    return base, config, wide.state_dict()


@pytest.mark.slow
def test_an_fp8_checkpoint_in_the_original_layout_loads_and_runs(tmp_path, tiny_model):
    """As ComfyUI's flux1-dev-fp8 files are: original keys with their prefix, float8_e4m3fn weights. The loaded
    transformer holds exactly the fp8 values (in float32), and a job runs end to end."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    base, config, weights = wide_base_and_weights(tmp_path, tiny_model)
    state = {key: value.to(torch.float8_e4m3fn) for key, value in weights.items()}
    del weights
    save_file(to_bfl_layout(state, config["num_layers"], config["num_single_layers"]), str(tmp_path / "f.safetensors"))

    loaded = FluxTransformer2DModel.from_single_file(
        str(tmp_path / "f.safetensors"), config=str(base), subfolder="transformer", local_files_only=True,
        dtype=torch.float32,
    )  # fmt: skip
    assert all(torch.equal(loaded.state_dict()[key], value.float()) for key, value in state.items())
    del loaded, state
    result = run_single_file(tmp_path, base, tmp_path / "f.safetensors", quantization="{backend: none}")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")) == 2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package (the gguf extra)")
def test_a_gguf_checkpoint_in_the_original_layout_runs(tmp_path, tiny_model):
    """As city96's FLUX.1 GGUF files are: original keys without a prefix, Q8_0 matrices."""
    base, config, weights = wide_base_and_weights(tmp_path, tiny_model)
    bfl = to_bfl_layout(weights, config["num_layers"], config["num_single_layers"])
    del weights
    model = write_gguf(tmp_path / "f-Q8_0.gguf", {k.removeprefix("model.diffusion_model."): v for k, v in bfl.items()})
    del bfl
    result = run_single_file(tmp_path, base, model, quantization="{backend: none}")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")) == 2
