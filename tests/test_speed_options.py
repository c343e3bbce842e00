"""Speed options that keep the computation: fused Q/K/V projections, the attention kernel, a channels-last VAE.
Each gives the images the plain pipeline gives (up to float rounding), so none enters the item ids."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from batch_edit.engine import Engine
from batch_edit.errors import ConfigError, PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config

from .conftest import write_pipeline_config
from .test_engine import items_and_images
from .test_memory_options import render_batch, vae_engines, write_config  # noqa: F401  (a shared fixture)


def attention_backends(engine: Engine) -> set:
    return {
        module.processor._attention_backend
        for module in engine.pipe.transformer.modules()
        if hasattr(getattr(module, "processor", None), "_attention_backend")
    }


def test_a_chosen_attention_backend_stays_with_its_own_pipeline(vae_engines):  # noqa: F811
    """diffusers also makes a backend set on one model the default of the whole process: a pipeline loaded
    afterwards without one (another config, a test comparing against the plain pipeline) would silently take it."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend
    chosen = vae_engines(attention_backend="_native_math", fuse_qkv="true")
    assert attention_backends(chosen) == {AttentionBackendName._NATIVE_MATH}  # every processor, fused ones too
    assert _AttentionBackendRegistry._active_backend == default
    assert attention_backends(vae_engines()) == {None}  # the process's default: torch's own choice


def test_fused_qkv_projections_give_the_same_images(vae_engines):  # noqa: F811
    fused = vae_engines(fuse_qkv="true")
    assert all(block.attn.fused_projections for block in fused.pipe.transformer.transformer_blocks)
    plain = render_batch(vae_engines(), 64)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(plain, render_batch(fused, 64)))


@pytest.mark.parametrize("backend", ["_native_math", "flex"])
def test_an_exact_attention_backend_gives_the_same_images(vae_engines, backend):  # noqa: F811
    chosen = vae_engines(attention_backend=backend)
    plain = render_batch(vae_engines(), 64)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(plain, render_batch(chosen, 64)))


def test_a_channels_last_vae_gives_the_same_images(vae_engines):  # noqa: F811
    engine = vae_engines(vae_channels_last="true")
    weight = engine.pipe.vae.decoder.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    plain = render_batch(vae_engines(), 64)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(plain, render_batch(engine, 64)))


def test_fusion_comes_before_quantization(tmp_path, tiny_model):
    """quanto quantizes the fused projection like any Linear: the reference recipe runs with it."""
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, fuse_qkv="true")
    engine = Engine.load(load_pipeline_config(config))
    assert type(engine.pipe.transformer.transformer_blocks[0].attn.to_qkv).__name__ == "QLinear"
    results = engine.generate(*items_and_images([("a tiger", 1), ("a watercolor", 2)]))
    assert [image.size for image in results] == [(64, 64)] * 2


def test_speed_options_leave_the_ids_alone():
    plain = PipelineConfig().identity()
    tuned = PipelineConfig(fuse_qkv=True, attention_backend="_native_cudnn", vae_channels_last=True).identity()
    assert tuned == plain


@pytest.mark.parametrize(
    "text, expected",
    [
        ("device: cpu\nattention_backend: _native_cudnn\n", "attention_backend '_native_cudnn' is a CUDA kernel"),
        ("attention_backend: sage\n", "attention_backend"),  # quantized attention is lossy: not offered
    ],
)
def test_attention_backends_the_machine_cannot_run_are_refused_by_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_pipeline_config(write_config(tmp_path, text))


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_a_missing_kernel_package_is_a_load_error_naming_the_key(tiny_model):
    config = PipelineConfig(model=str(tiny_model), dtype="float32", device="cpu", local_files_only=True)
    config = config.model_copy(update={"attention_backend": "flash"})  # as a CUDA config would ask for it
    with pytest.raises(PipelineLoadError, match="attention_backend 'flash' cannot be used here"):
        Engine.load(config)
