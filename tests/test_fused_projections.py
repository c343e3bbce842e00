"""`fuse_qkv: true` leaves only the projections that run: the separate Q, K and V (and the text stream's) are
dropped once fused, so they are neither quantized nor moved to the device, and an `exclude` naming them is
refused (it would have matched modules that never run, while the fused one was quantized)."""

from __future__ import annotations

import pytest

from batch_edit.engine import Engine
from batch_edit.errors import PipelineLoadError
from batch_edit.pipeline_config import load_pipeline_config
from tests.conftest import write_pipeline_config


def transformer_of(tmp_path, tiny_model, name, **options):
    config = write_pipeline_config(tmp_path / f"{name}.yaml", tiny_model, **options)
    return Engine.load(load_pipeline_config(config)).pipe.transformer


def test_fusing_keeps_the_parameter_count_and_drops_the_separate_projections(tmp_path, tiny_model):
    plain = transformer_of(tmp_path, tiny_model, "plain", quantization="{backend: none}")
    fused = transformer_of(tmp_path, tiny_model, "fused", quantization="{backend: none}", fuse_qkv="true")
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in plain.parameters())
    for block in (*fused.transformer_blocks, *fused.single_transformer_blocks):
        assert block.attn.fused_projections
        assert not any(hasattr(block.attn, name) for name in ("to_q", "to_k", "to_v", "add_q_proj"))
    assert hasattr(fused.transformer_blocks[0].attn, "to_added_qkv")


def test_an_exclude_naming_the_fused_away_projections_is_refused_with_what_to_name(tmp_path, tiny_model):
    quantization = "{backend: quanto, transformer: qint8, exclude: [proj_out, '*attn.to_q']}"
    with pytest.raises(PipelineLoadError) as refused:
        transformer_of(tmp_path, tiny_model, "p", quantization=quantization, fuse_qkv="true")
    message = str(refused.value)
    assert "'*attn.to_q' matches no module" in message and "with fuse_qkv: true" in message
    assert "to_qkv" in message


def test_an_exclude_naming_the_fused_projection_keeps_the_one_that_runs_unquantized(tmp_path, tiny_model):
    quantization = "{backend: quanto, transformer: qint8, exclude: [proj_out, '*attn.to_qkv']}"
    fused = transformer_of(tmp_path, tiny_model, "p", quantization=quantization, fuse_qkv="true")
    attn = fused.transformer_blocks[0].attn
    assert type(attn.to_qkv).__name__ == "Linear"
    assert type(attn.to_added_qkv).__name__ == "QLinear"
