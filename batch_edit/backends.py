"""How the loaded pipeline is made smaller or faster: quantization backends, torch.compile, step caching.

Order matters: quanto quantizes on the CPU before the move to the device (so bf16 weights never need to fit
there); torchao quantizes module by module onto the device; step caching and compile wrap the result.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import PipelineLoadError
from .pipeline_config import PipelineConfig, QuantizationConfig

log = logging.getLogger(__name__)
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def prepare_pipeline(pipe, config: PipelineConfig) -> PipelineConfig:
    """Quantize, move, cache and compile `pipe` in place; returns the config with `auto` choices resolved."""
    import torch

    quant = config.quantization
    if quant.backend == "quanto":
        _quantize_with_quanto(pipe, quant)
    if quant.backend == "torchao":
        quant = _quantize_with_torchao(pipe, quant, config.device, torch)
    pipe.to(config.device)
    if config.first_block_cache:
        from diffusers.hooks import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=config.first_block_cache))
    if config.compile:
        _compile_transformer(pipe, config)
    gpu_gb = torch.cuda.get_device_properties(config.device).total_memory / 2**30 if config.device != "cpu" else None
    return config.model_copy(update={"quantization": quant, "batch_size": config.resolved_batch_size(gpu_gb)})


def _quantize_with_quanto(pipe, quant: QuantizationConfig) -> None:
    from optimum import quanto

    for component in ("transformer", *TEXT_ENCODERS):
        weights = getattr(quant, component)
        if weights is None:
            continue
        module = getattr(pipe, component)
        log.info("quantizing %s to %s with quanto", component, weights)
        quanto.quantize(module, weights=getattr(quanto, weights), exclude=quant.exclude or None)
        quanto.freeze(module)


def _quantize_with_torchao(pipe, quant: QuantizationConfig, device: str, torch) -> QuantizationConfig:
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except ImportError:
        raise PipelineLoadError("the torchao backend needs torchao: pip install torchao") from None
    kind = quant.torchao_type
    fp8_ok = device != "cpu" and torch.cuda.get_device_capability(device) >= (8, 9)
    if kind == "auto":
        kind = "float8_dynamic_row" if fp8_ok else "int8_weight_only"
    if kind == "float8_dynamic_row" and not fp8_ok:
        raise PipelineLoadError(
            f"torchao float8_dynamic_row needs a GPU of compute capability 8.9 or newer (device: {device}); "
            "use torchao_type: int8_weight_only or auto"
        )
    recipe = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()) if kind.startswith("float8") else Int8WeightOnlyConfig()
    log.info("quantizing the transformer to %s with torchao", kind)
    # device=: each layer moves to the device just before it is quantized, so bf16 weights never all fit there
    quantize_(pipe.transformer, recipe, device=device)
    return quant.model_copy(update={"torchao_type": kind})


def _compile_transformer(pipe, config: PipelineConfig) -> None:
    if config.quantization.backend == "quanto":
        raise PipelineLoadError("compile: true does not work with quanto weights; use backend torchao or none")
    cache = Path(config.compile_cache_dir or Path.home() / ".cache" / "batch-edit" / "inductor").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    # Kept between runs, so only the first run on a machine pays for compiling each shape.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    pipe.transformer.compile(fullgraph=True, dynamic=False)


def offload_text_encoders(pipe) -> None:
    """Every prompt is encoded: the encoders' memory (about 10 GB for T5-XXL in bf16) goes back to the GPU's pool."""
    import torch

    for name in TEXT_ENCODERS:
        getattr(pipe, name).to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
