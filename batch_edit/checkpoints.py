"""Single-file FLUX.1 transformers, as ComfyUI/Forge users hold them: a `.safetensors` file (bf16 or fp8 weights,
original Black Forest Labs key layout or diffusers' own) or a `.gguf` file (Q8_0/Q5/Q4... kept quantized and
dequantized layer by layer as they run). The rest of the pipeline (VAE, text encoders, tokenizers, scheduler)
and the transformer's config come from `base_model`, so nothing is guessed or downloaded for the file itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import PipelineLoadError, first_line
from .pipeline_config import PipelineConfig


def check_single_file(config: PipelineConfig) -> None:
    """Refusals that need no weights: the file is there, the base folder is there, GGUF support is installed."""
    if Path(config.model).is_dir():
        raise PipelineLoadError(f"{config.model}: a folder, not a model file")
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
    if not config.is_gguf and (problem := safetensors_problem(config, FluxTransformer2DModel)):
        raise PipelineLoadError(f"{config._origin}: field 'model': {config.model}: {problem}")
    try:
        transformer = FluxTransformer2DModel.from_single_file(config.model, dtype=dtype, **options)
    except Exception as exc:  # safetensors, gguf and the key conversion raise many types: all mean "cannot use"
        # diffusers' advice after the problem (low_cpu_mem_usage=...) is about arguments this tool sets itself
        problem = first_line(exc).split(" If you want to instead")[0]
        raise PipelineLoadError(f"{config.model}: not a FLUX.1 transformer checkpoint this base fits: "
                                f"{problem}") from exc  # fmt: skip
    return getattr(diffusers, config.pipeline_class).from_pretrained(
        config.base_model,
        transformer=transformer,
        revision=config.revision,
        dtype=dtype,
        use_safetensors=True,
        local_files_only=config.local_files_only,
    )


# Key prefixes by what a file holds (the original layout's keys may sit under `model.diffusion_model.`)
TRANSFORMER_KEYS = ("double_blocks.", "single_blocks.", "img_in.", "transformer_blocks.", "x_embedder.")
OTHER_KINDS = (  # checked in this order: T5's keys start with `encoder.` too
    ("a LoRA (list it under `loras:` with a FLUX.1 model)", ("lora_", ".lora", "lora.")),
    ("a text encoder", ("text_model.", "encoder.block.", "shared.", "text_encoders.")),
    ("a VAE (the base_model's own VAE is used)", ("encoder.", "decoder.", "first_stage_model.", "vae.")),
)


def safetensors_problem(config: PipelineConfig, model_class) -> str | None:
    """What the file holds where it is not a FLUX.1 transformer the base fits, read from its header alone (the
    loader would fail with an index or shape error): another model part by its keys, or a transformer of
    another input width than the base's (FLUX.1-Fill's takes the masked image and mask too)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(config.model, framework="pt") as weights:
            keys = {key.removeprefix("model.diffusion_model."): key for key in weights.keys()}  # noqa: SIM118
            embedder = next((keys[k] for k in ("x_embedder.weight", "img_in.weight") if k in keys), None)
            width = weights.get_slice(embedder).get_shape()[-1] if embedder else None  # [inner, in_channels]
    except SafetensorError as exc:  # the header held together when the config loaded: say what the reader says
        return f"cannot be read as a safetensors file: {first_line(exc)}"
    except OSError as exc:
        return f"could not read: {exc.strerror or exc}"
    if not any(key.startswith(TRANSFORMER_KEYS) for key in keys):
        kind = next((kind for kind, marks in OTHER_KINDS if any(m in key for key in keys for m in marks)), None)
        shown = ", ".join(sorted(keys)[:2]) or "none"
        looks = f": it looks like {kind}" if kind else ""
        return f"no FLUX.1 transformer keys found (keys: {shown}, ...){looks}"
    return _width_problem(config, model_class, width)


def _width_problem(config: PipelineConfig, model_class, width: int | None) -> str | None:
    try:
        base = model_class.load_config(
            config.base_model, subfolder="transformer", local_files_only=config.local_files_only,
            revision=config.revision,
        )["in_channels"]  # fmt: skip
    except (OSError, ValueError, KeyError):  # no config to compare with: the loader says what is missing
        return None
    if width is None or width == base:
        return None
    if width > base:
        task = "" if config.task == "fill" else "task: fill and "
        return (f"its transformer takes {width} input channels where base_model's takes {base}: these look like "
                f"FLUX.1-Fill weights: set {task}base_model to a FLUX.1-Fill pipeline "
                "(e.g. black-forest-labs/FLUX.1-Fill-dev)")  # fmt: skip
    return (f"its transformer takes {width} input channels where base_model's takes {base} (a FLUX.1-Fill "
            "base?): set base_model to a pipeline of the file's kind (e.g. black-forest-labs/FLUX.1-dev), and "
            "task to img2img, inpaint or kontext")  # fmt: skip
