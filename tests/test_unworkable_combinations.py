"""Settings the pipeline accepted and then failed on, every item or at load: refused when the config loads (exit 2,
naming the keys and the file), before a model loads or a folder is made."""

from __future__ import annotations

import importlib.util

import pytest

from batch_edit.tiny_model import write_tiny_lora

from .conftest import PHOTOS, batch_edit, write_pipeline_config
from .test_memory_options import transformer_state, write_gguf

MANIFEST = f"""jobs:
  - name: j
    sources: {PHOTOS / "cat.jpg"}
    prompts: a tiger
    seed: 1
    num_inference_steps: 2
    width: 64
    height: 64
"""


def refused(tmp_path, config, manifest=MANIFEST):
    (tmp_path / "m.yaml").write_text(manifest)
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "out").exists()
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize("compile", ["true", "regional"])
def test_step_caching_with_compile_is_refused_naming_both_keys(tmp_path, tiny_model, compile):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}", compile=compile,
                                   first_block_cache=0.08)  # fmt: skip
    message = refused(tmp_path, config)
    assert f"{config}: first_block_cache cannot be combined with compile: {compile}" in message
    assert "set first_block_cache: null or compile: false" in message


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory, tiny_model):
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the gguf package (the gguf extra)")
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf", transformer_state(tiny_model))


def gguf_config(tmp_path, tiny_model, gguf_model, **settings):
    return write_pipeline_config(tmp_path / "p.yaml", gguf_model, base_model=tiny_model, quantization="{backend: none}",
                                 **settings)  # fmt: skip


def test_a_gguf_model_with_loras_is_refused_naming_the_key_and_the_file(tmp_path, tiny_model, gguf_model):
    lora = write_tiny_lora(tmp_path / "ink.safetensors")
    config = gguf_config(tmp_path, tiny_model, gguf_model, loras=f"[{{path: {lora}, scale: 1.0}}]")
    message = refused(tmp_path, config)
    assert f"{config}: loras cannot be fused into the quantized weights of a .gguf model ({gguf_model})" in message


def test_a_gguf_model_with_a_jobs_loras_is_refused_too(tmp_path, tiny_model, gguf_model):
    lora = write_tiny_lora(tmp_path / "ink.safetensors")
    config = gguf_config(tmp_path, tiny_model, gguf_model)
    message = refused(tmp_path, config, MANIFEST + f"    loras: [{{path: {lora}}}]\n")
    assert "loras cannot be fused into the quantized weights of a .gguf model" in message
    assert f"its LoRAs with the pipeline config {config}" in message


def test_a_gguf_model_with_fused_qkv_is_refused_naming_the_key_and_the_file(tmp_path, tiny_model, gguf_model):
    config = gguf_config(tmp_path, tiny_model, gguf_model, fuse_qkv="true")
    message = refused(tmp_path, config)
    assert f"{config}: fuse_qkv cannot join the quantized Q, K and V weights of a .gguf model ({gguf_model})" in message
