"""Single-file FLUX.1 transformers, as ComfyUI/Forge users hold them: a `.safetensors` file (bf16 or fp8 weights,
original Black Forest Labs key layout or diffusers' own) or a `.gguf` file (Q8_0/Q5/Q4... kept quantized and
dequantized layer by layer as they run). The rest of the pipeline (VAE, text encoders, tokenizers, scheduler)
and the transformer's config come from `base_model`, so nothing is guessed or downloaded for the file itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import PipelineLoadError
from .pipeline_config import PipelineConfig


def check_single_file(config: PipelineConfig) -> None:
    """Refusals that need no weights: the file is there, the base folder is there, GGUF support is installed."""
    if not Path(config.model).is_file():
        raise PipelineLoadError(f"model file not found: {config.model}")
    if config.is_local_base and not Path(config.base_model).is_dir():
        raise PipelineLoadError(f"base_model folder not found: {config.base_model}")
    if config.is_gguf and importlib.util.find_spec("gguf") is None:
        raise PipelineLoadError(f"{config.model}: GGUF models need the gguf package: pip install 'batch-edit[gguf]'")


def load_single_file_pipeline(config: PipelineConfig, dtype):
    """The transformer from the file (its config from the base's `transformer/config.json`), the other components
    from the base."""
    import diffusers
    from diffusers import FluxTransformer2DModel

    options = dict(config=config.base_model, subfolder="transformer", local_files_only=config.local_files_only)
    if config.revision != "main":
        options["config_revision"] = config.revision
    if config.is_gguf:
        from diffusers import GGUFQuantizationConfig

        options["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    try:
        transformer = FluxTransformer2DModel.from_single_file(config.model, dtype=dtype, **options)
    except Exception as exc:  # safetensors, gguf and the key conversion raise many types: all mean "cannot use"
        raise PipelineLoadError(f"{config.model}: not a FLUX.1 transformer checkpoint this base fits: "
                                f"{_first_line(exc)}") from exc  # fmt: skip
    return getattr(diffusers, config.pipeline_class).from_pretrained(
        config.base_model,
        transformer=transformer,
        revision=config.revision,
        dtype=dtype,
        use_safetensors=True,
        local_files_only=config.local_files_only,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
