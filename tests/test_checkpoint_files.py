"""Single-file checkpoints checked from their header when the config loads: a file cut short, a suffix diffusers
would not read, a folder named like a checkpoint."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from batch_edit.checkpoint_headers import checkpoint_problem
from batch_edit.errors import ConfigError
from batch_edit.pipeline_config import load_pipeline_config

from .conftest import PHOTOS, batch_edit, write_pipeline_config

needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package")


def refusal(tmp_path: Path, model: Path, base: Path) -> str:
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=base, quantization="{backend: none}")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    prefix = f"{config}: field 'model': {model.as_posix()}: "
    assert str(refused.value).startswith(prefix), refused.value
    return str(refused.value).removeprefix(prefix)


def transformer_file(tiny_model: Path) -> bytes:
    return (tiny_model / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_a_safetensors_file_cut_short_is_refused_when_the_config_loads(tmp_path, tiny_model):
    whole = transformer_file(tiny_model)
    model = tmp_path / "flux.safetensors"
    model.write_bytes(whole[: len(whole) // 2])
    cut = len(whole) // 2
    assert refusal(tmp_path, model, tiny_model) == f"truncated: {cut:,} bytes, the header says at least {len(whole):,}"
    header_end = 8 + int.from_bytes(whole[:8], "little")
    model.write_bytes(whole[: header_end - 10])  # within the JSON header
    assert refusal(tmp_path, model, tiny_model) == (
        f"truncated: {header_end - 10:,} bytes, the header says at least {header_end:,}"
    )
    model.write_bytes(whole)
    assert load_pipeline_config(tmp_path / "p.yaml").is_single_file


def test_plan_refuses_a_cut_checkpoint_with_exit_2(tmp_path, tiny_model):
    whole = transformer_file(tiny_model)
    model = tmp_path / "flux.safetensors"
    model.write_bytes(whole[:-1])
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model)
    (tmp_path / "m.csv").write_text(f"source,prompt\n{PHOTOS / 'cat.jpg'},x\n")
    planned = batch_edit("plan", "m.csv", "--pipeline", str(config), cwd=tmp_path)
    assert planned.returncode == 2, planned.stderr
    assert f"field 'model': {model.as_posix()}: truncated: {len(whole) - 1:,} bytes" in planned.stderr


def test_a_file_that_is_no_safetensors_file_is_refused(tmp_path):
    model = tmp_path / "junk.safetensors"
    model.write_bytes(b"not a checkpoint at all")
    assert checkpoint_problem(model).startswith("not a safetensors file (it does not start with a safetensors header")
    model.write_bytes(struct.pack("<Q", 4) + b"{x}!")
    assert checkpoint_problem(model) == "not a safetensors file (its header is not the JSON of a tensor listing)"
    model.write_bytes(b"")
    assert checkpoint_problem(model) == "an empty file, not a safetensors file"


@needs_gguf
def test_a_gguf_file_cut_short_is_refused_by_its_tensor_listing_and_data(tmp_path):
    import gguf
    import numpy as np

    model = tmp_path / "flux-Q8_0.gguf"
    writer = gguf.GGUFWriter(str(model), "flux")
    writer.add_tensor("img_in.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    whole = model.read_bytes()
    assert checkpoint_problem(model) is None
    model.write_bytes(whole[:-100])
    assert (
        checkpoint_problem(model) == f"truncated: {len(whole) - 100:,} bytes, the header says at least {len(whole):,}"
    )
    model.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 5, 2))  # counts for a listing that is not there
    assert checkpoint_problem(model) == "truncated: 24 bytes, the header says at least 32"


@pytest.mark.parametrize("name", ["FLUX.SAFETENSORS", "flux.Gguf"])
def test_an_upper_case_suffix_is_refused_with_the_name_to_give(tmp_path, tiny_model, name):
    model = tmp_path / name
    model.write_bytes(transformer_file(tiny_model))
    suffix = name.rsplit(".", 1)[1].lower()
    expected = f"diffusers reads only a lower-case '.{suffix}' suffix: rename the file to {model.stem}.{suffix}"
    assert refusal(tmp_path, model, tiny_model) == expected


def test_a_folder_named_like_a_checkpoint_is_said_to_be_a_folder(tmp_path, tiny_model):
    folder = tmp_path / "flux1-dev-Q8_0.gguf"
    folder.mkdir()
    assert refusal(tmp_path, folder, tiny_model) == "a folder, not a GGUF file"
    (folder / "flux1-dev-Q8_0.gguf").write_bytes(b"GGUF")
    assert refusal(tmp_path, folder, tiny_model) == (
        "a folder, not a GGUF file: name the file inside it (flux1-dev-Q8_0.gguf/flux1-dev-Q8_0.gguf)"
    )
    (tmp_path / "x.safetensors").mkdir()
    assert refusal(tmp_path, tmp_path / "x.safetensors", tiny_model) == "a folder, not a safetensors file"


def test_a_header_the_safetensors_reader_refuses_is_said_so_at_load(tmp_path, tiny_model):
    from diffusers import FluxTransformer2DModel

    from batch_edit.checkpoints import safetensors_problem
    from batch_edit.pipeline_config import PipelineConfig

    header = b'{"x_embedder.weight": {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 1]}}'
    model = tmp_path / "odd.safetensors"
    model.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    assert checkpoint_problem(model) is None  # the listing holds together: only the reader knows its dtypes
    config = PipelineConfig(model=model.as_posix(), base_model=tiny_model.as_posix(), device="cpu")
    problem = safetensors_problem(config, FluxTransformer2DModel)
    assert problem is not None and problem.startswith("cannot be read as a safetensors file: "), problem


@pytest.mark.parametrize("suffix", [".gguf", ".safetensors"])
def test_a_fifo_named_as_the_model_is_refused_without_waiting_for_a_writer(tmp_path, suffix):
    import os

    fifo = tmp_path / f"model{suffix}"
    os.mkfifo(fifo)
    assert checkpoint_problem(fifo) == "not a regular file (a FIFO, socket or device)"
