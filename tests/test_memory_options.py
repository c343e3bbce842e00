"""Memory options of pipeline configs (VAE tiling and slicing, offload, batch_size auto) and single-file
transformer checkpoints (.safetensors, .gguf) with the rest of the pipeline from a base model."""

from __future__ import annotations

import importlib.util
import json
import os
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
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, device="cuda", offload="model"))
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
    assert PipelineConfig(offload="sequential", quantization={"backend": "none"}).identity() == PipelineConfig(
        quantization={"backend": "none"}
    ).identity()
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
    assert batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=folder_run).returncode == 0
    folder_rows = pd.read_csv(folder_run / "out" / "j" / "metadata.csv")
    for file_a, file_b in zip(sorted(rows["file_name"]), sorted(folder_rows["file_name"])):
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
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    assert "model folder not found" not in missing.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    junk = run_single_file(tmp_path, tiny_model, tmp_path / "junk.safetensors")
    assert junk.returncode != 0 and "junk.safetensors: not a FLUX.1 transformer checkpoint" in junk.stderr
    config = write_pipeline_config(
        tmp_path / "q.yaml", checkpoint_files / "tiny-flux.safetensors", base_model=tmp_path / "no-base"
    )
    with pytest.raises(PipelineLoadError, match="base_model folder not found"):
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
