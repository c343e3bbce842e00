"""How the loaded pipeline is changed, made smaller or faster: LoRAs, quantization, torch.compile, step caching.

Order matters: LoRAs, then the Q/K/V fusion, act on the plain weights first (PEFT cannot attach to quanto layers,
quantized weights cannot be concatenated); quanto quantizes on the CPU before the move to the device (so bf16
weights never need to fit there); torchao quantizes module by module onto the device; the move (or accelerate's
offload hooks), the kernel choices, step caching and compile follow.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path

from .errors import PipelineLoadError, first_line
from .pipeline_config import CUDA_GRAPH_MODES, DEFAULT_EXCLUDE, LoraConfig, PipelineConfig, QuantizationConfig

log = logging.getLogger(__name__)
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def prepare_pipeline(pipe, config: PipelineConfig) -> PipelineConfig:
    """Fuse LoRAs, quantize, move, cache and compile `pipe` in place; returns the config with `auto` resolved."""
    import torch

    check_machine(config)  # again here: a pipeline built in memory comes without `Engine.check`
    if config.loras:
        fuse_loras(pipe, config.loras, config.local_files_only, config.lora_field)
    if config.fuse_qkv:  # on the plain weights: quantized ones cannot be concatenated
        fuse_qkv(pipe.transformer)
    quant = config.quantization
    if quant.backend == "quanto":
        check_exclude(pipe, quant, config._origin)
        _quantize_with_quanto(pipe, quant)
    if quant.backend == "torchao":
        quant = _quantize_with_torchao(pipe, quant, config.device, torch)
    place_pipeline(pipe, config)
    _choose_kernels(pipe, config, torch)
    if config.first_block_cache:
        from diffusers.hooks import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=config.first_block_cache))
    if config.compile:
        _compile_transformer(pipe, config)
    gpu_gb = torch.cuda.get_device_properties(config.device).total_memory / 2**30 if config.device != "cpu" else None
    return config.model_copy(update={"quantization": quant, "batch_size": config.resolved_batch_size(gpu_gb)})


def place_pipeline(pipe, config: PipelineConfig) -> None:
    """Move the pipeline to its device, or hand it to accelerate's offload hooks, which replace that move; then
    the VAE's memory options (tiling trades exactness for memory, slicing only time)."""
    if config.offload != "none":
        log.info("offload %s: accelerate's hooks move each component to %s only while it runs", config.offload,
                 config.device)  # fmt: skip
    else:
        log.info("moving the pipeline to %s", config.device)
    if config.offload == "model":
        pipe.enable_model_cpu_offload(device=config.device)
    elif config.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=config.device)
    else:
        pipe.to(config.device)
    if config.vae_tiling:
        pipe.vae.enable_tiling()
    if config.vae_slicing:
        pipe.vae.enable_slicing()


UNFUSED_PROJECTIONS = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


def fuse_qkv(transformer) -> None:
    """Q, K and V (and the text stream's) as one projection each, the separate ones dropped: diffusers keeps them
    for `unfuse_qkv_projections`, which nothing here calls, so they would be quantized and moved to the device
    for nothing (about 2 B parameters of FLUX.1-dev), and an `exclude` naming them would match modules that
    never run instead of being refused."""
    from torch import nn

    transformer.fuse_qkv_projections()
    for module in list(transformer.modules()):
        if getattr(module, "fused_projections", False):
            for name in UNFUSED_PROJECTIONS:
                if isinstance(getattr(module, name, None), nn.Module):
                    delattr(module, name)


def check_machine(config: PipelineConfig) -> None:
    """What the settings need from this machine, known without weights: peft for LoRAs, torchao and (for its
    fp8 recipe) a GPU of compute capability 8.9, the attention kernel's package. Each named by file and key."""
    if config.loras and importlib.util.find_spec("peft") is None:
        raise PipelineLoadError(f"{config._origin}: field 'loras': LoRAs need the peft package: pip install peft")
    quant = config.quantization
    if quant.backend == "torchao" and importlib.util.find_spec("torchao") is None:
        raise PipelineLoadError(f"{config._origin}: field 'quantization.backend': torchao needs the torchao "
                                "package: pip install torchao")  # fmt: skip
    if quant.backend == "torchao" and quant.torchao_type == "float8_dynamic_row" and not fp8_capable(config.device):
        raise PipelineLoadError(
            f"{config._origin}: field 'quantization.torchao_type': float8_dynamic_row needs a GPU of compute "
            f"capability 8.9 or newer (device {config.device} is older): use int8_weight_only or auto"
        )
    if config.attention_backend:
        _check_attention_backend(config)


def _check_attention_backend(config: PipelineConfig) -> None:
    from diffusers.models import attention_dispatch

    # diffusers' own check of the kernel's package, which it otherwise runs once the weights are loaded; a private
    # function: where a diffusers version lacks it, the check waits for the load as before
    check = getattr(attention_dispatch, "_check_attention_backend_requirements", None)
    if check is None:
        return
    try:
        check(attention_dispatch.AttentionBackendName(config.attention_backend))
    except (RuntimeError, ValueError, ImportError) as exc:
        raise PipelineLoadError(_attention_problem(config, exc)) from exc


def _attention_problem(config: PipelineConfig, exc: Exception) -> str:
    return (f"{config._origin}: attention_backend '{config.attention_backend}' cannot be used here: "
            f"{first_line(exc)}")  # fmt: skip


def _choose_kernels(pipe, config: PipelineConfig, torch) -> None:
    """The attention kernel and the VAE's memory layout: the same computation, only faster where the GPU has them."""
    if config.attention_backend:
        _set_attention_backend(pipe.transformer, config)
    if config.vae_channels_last:
        pipe.vae.to(memory_format=torch.channels_last)


def _set_attention_backend(transformer, config: PipelineConfig) -> None:
    """The backend on each of the transformer's attention processors. diffusers also makes it the default of the
    whole process, which every pipeline loaded after this one (another config, a reproduce, a test) would then
    take without asking for it: that default is put back as it was."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    default = registry._active_backend
    try:
        transformer.set_attention_backend(config.attention_backend)
    except (RuntimeError, ValueError, ImportError) as exc:  # a GPU without the kernel
        raise PipelineLoadError(_attention_problem(config, exc)) from exc
    finally:
        registry.set_active_backend(default)


def fuse_loras(pipe, loras: list[LoraConfig], local_files_only: bool = False, field=None) -> None:
    """Load each LoRA, fuse them all at their scales into the weights, then drop the adapters: plain Linear layers
    remain, for any backend to quantize, and no denoising step pays for an adapter. `field(lora)`: where the LoRA
    was listed (file and key), for messages."""
    with warnings.catch_warnings():  # PEFT warns whenever a second adapter joins a model: several are meant here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
        for lora in loras:
            listed = f"{field(lora)}: " if field else ""
            _load_lora(pipe, lora, local_files_only, f"{listed}LoRA '{lora.name}' ({lora.path})")
    names = [lora.name for lora in loras]
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    components = [component for component, adapters in pipe.get_list_adapters().items() if adapters]
    pipe.fuse_lora(components=components, adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the merged weights stay; the LoRA layers go
    log.info("fused LoRAs %s into %s", ", ".join(names), ", ".join(components))


def _load_lora(pipe, lora: LoraConfig, local_files_only: bool, where: str) -> None:
    source = Path(lora.path).expanduser().as_posix() if lora.is_local else lora.path
    if lora.is_local and not Path(source).exists():
        raise PipelineLoadError(f"{where}: file not found: {source}")
    if lora.is_local and Path(source).is_dir() and lora.weight_name is None:
        found = sorted(file.name for file in Path(source).glob("*.safetensors"))
        if not found:
            raise PipelineLoadError(f"{where}: the folder holds no .safetensors file (LoRAs load from those only)")
        if len(found) > 1:  # diffusers would pick one of several with a mere warning
            listed = ", ".join(found)
            raise PipelineLoadError(f"{where}: set weight_name to one of the folder's .safetensors files ({listed})")
    try:
        pipe.load_lora_weights(
            source, adapter_name=lora.name, weight_name=lora.weight_name, use_safetensors=True,
            local_files_only=local_files_only,
        )  # fmt: skip
    except Exception as exc:  # the hub, safetensors and peft raise many types; all mean "cannot use this LoRA"
        raise PipelineLoadError(f"{where} could not be loaded: {_explain_lora_failure(exc)}") from exc
    if not any(lora.name in adapters for adapters in pipe.get_list_adapters().values()):
        raise PipelineLoadError(f"{where} adapts no layer of this model: is it a FLUX.1 LoRA?")


def _explain_lora_failure(exc: Exception) -> str:
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return "not found on the Hugging Face Hub (check the id, or set HF_TOKEN for a private repo)"
    if any(isinstance(e, LocalEntryNotFoundError) for e in chain):
        return "not in the local cache and could not be downloaded (no network, or local_files_only)"
    if any(isinstance(e, EntryNotFoundError) for e in chain):
        return "no such .safetensors file there (set weight_name to the file's name)"
    if str(exc).startswith("Incompatible keys detected"):  # diffusers lists the keys after two line breaks
        return foreign_lora_keys(str(exc).split("\n\n", 1)[-1].strip().split(", "))
    return first_line(exc)


def foreign_lora_keys(keys: list[str]) -> str:
    """A LoRA whose keys name no FLUX.1 transformer layer: a couple of them (bounded), so the model it was made for
    shows."""
    shown = ", ".join(key if len(key) <= 80 else key[:77] + "..." for key in keys[:2])
    more = f" and {len(keys) - 2} more" if len(keys) > 2 else ""
    unet = any(block in key for key in keys for block in ("down_blocks", "up_blocks", "mid_block"))
    made_for = "a Stable Diffusion UNet (its down/up blocks)" if unet else "another model"
    return f"its keys do not fit a FLUX.1 transformer ({shown}{more}): it is a LoRA for {made_for}"


def check_exclude(pipe, quant: QuantizationConfig, origin: str) -> None:
    """Each `exclude` pattern must name a module (quanto matches them against full module names, shell-style)
    of a component it quantizes: one matching none would quietly quantize what it was meant to keep. The
    default names the transformer's `proj_out`, left alone where only the text encoders are quantized."""
    from fnmatch import fnmatch

    quantized = [name for name in ("transformer", *TEXT_ENCODERS) if getattr(quant, name)]
    if quant.exclude == DEFAULT_EXCLUDE or not quantized:
        return
    names = [name for component in quantized for name, _ in getattr(pipe, component).named_modules() if name]
    for pattern in quant.exclude:
        if not any(fnmatch(name, pattern) for name in names):
            tops = [name for name, _ in getattr(pipe, quantized[0]).named_children()]
            shown = ", ".join(tops[:8]) + (", ..." if len(tops) > 8 else "")
            fused = any(name in pattern for name in UNFUSED_PROJECTIONS) and any(
                getattr(module, "fused_projections", False) for module in pipe.transformer.modules()
            )
            hint = (
                "; with fuse_qkv: true, to_q, to_k and to_v are one module, to_qkv, and add_q_proj, add_k_proj "
                "and add_v_proj one, to_added_qkv"
                if fused
                else ""
            )
            raise PipelineLoadError(
                f"{origin}: field 'quantization.exclude': '{pattern}' matches no module of the "
                f"{' or '.join(quantized)} (full module names, * and ? as wildcards; the {quantized[0]}'s "
                f"top-level modules: {shown}{hint})"
            )


def _quantize_with_quanto(pipe, quant: QuantizationConfig) -> None:
    from optimum import quanto

    from . import quanto_moves

    # qint4 weights quantized on the CPU move to the GPU next (or at each visit under `offload: model`): read back
    # from their CPU packing in linear time, not through quanto's identity matmul (minutes for T5-XXL)
    quanto_moves.install()
    for component in ("transformer", *TEXT_ENCODERS):
        weights = getattr(quant, component)
        if weights is None:
            continue
        module = getattr(pipe, component)
        log.info("quantizing %s to %s with quanto on %s", component, weights, _where(module))
        quanto.quantize(module, weights=getattr(quanto, weights), exclude=quant.exclude or None)
        quanto.freeze(module)
    log.info("quanto: every component quantized and frozen")


def _where(module) -> str:
    return str(next(module.parameters()).device)


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
    kind = quant.torchao_type  # float8_dynamic_row where this device cannot run it: refused by `check_machine`
    if kind == "auto":
        kind = "float8_dynamic_row" if fp8_capable(device) else "int8_weight_only"
    recipe = (
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        if kind.startswith("float8")
        else Int8WeightOnlyConfig()
    )
    log.info("quantizing the transformer to %s with torchao", kind)
    # device=: each layer moves to the device just before it is quantized, so bf16 weights never all fit there
    quantize_(pipe.transformer, recipe, device=device)
    return quant.model_copy(update={"torchao_type": kind})


def fp8_capable(device: str) -> bool:
    """Whether `device` runs torchao's fp8 recipe (compute capability 8.9 or newer): asks the device, loads no
    weights, so ids can name the resolved recipe before anything runs. PipelineLoadError if it is not there."""
    if device == "cpu":
        return False
    import torch

    from .engine import check_device

    check_device(device, torch)
    return torch.cuda.get_device_capability(device) >= (8, 9)


def inductor_cache_dir(config: PipelineConfig) -> Path:
    """Where inductor keeps compiled graphs for this config: its `compile_cache_dir`, which wins over the
    environment; else TORCHINDUCTOR_CACHE_DIR as the environment sets it (not as an earlier engine of this
    process set it); else ours, kept between runs."""
    current = os.environ.get(INDUCTOR_CACHE_VARIABLE)
    if current != _inductor_cache["set"]:  # not the value an engine set: the environment's own (or none)
        _inductor_cache["environment"] = current
    chosen = config.compile_cache_dir or _inductor_cache["environment"] or Path.home() / ".cache/batch-edit/inductor"
    return Path(os.path.abspath(Path(chosen).expanduser()))  # as inductor writes it back (normalized)


INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
_inductor_cache: dict[str, str | None] = {"set": None, "environment": None}  # what engines set; what they found


def _compile_transformer(pipe, config: PipelineConfig) -> None:
    cache = inductor_cache_dir(config)
    cache.mkdir(parents=True, exist_ok=True)
    # Kept between runs, so only the first run on a machine pays for compiling each shape. Set, not defaulted:
    # each engine of a process compiles into its own config's folder.
    os.environ[INDUCTOR_CACHE_VARIABLE] = _inductor_cache["set"] = str(cache)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    options = {"fullgraph": True, "dynamic": False, "mode": config.compile_mode}  # mode None: torch's default
    if config.compile == "regional":
        # diffusers compiles each class named in the model's `_repeated_blocks` (FLUX: the 19 double-stream and 38
        # single-stream blocks); blocks of one class share one compiled graph, their weights being graph inputs.
        pipe.transformer.compile_repeated_blocks(**options)
        if config.compile_mode in CUDA_GRAPH_MODES:
            pipe.transformer.register_forward_pre_hook(_begin_cuda_graph_step)
    else:
        # One graph per transformer call: CUDA graphs replay it whole; its output is consumed (the scheduler's
        # step) before the next call's replay overwrites it.
        pipe.transformer.compile(**options)


def _begin_cuda_graph_step(module, args) -> None:
    """Regional CUDA graphs: each block call enters compiled code, which torch would take as a new iteration,
    releasing the previous block's output, the very input of this call. Marking the start of each transformer
    call instead makes its block graphs one path, replayed step after step; what is released at each mark is
    the previous call's block outputs, all consumed by then."""
    import torch

    torch.compiler.cudagraph_mark_step_begin()


def offload_text_encoders(pipe) -> None:
    """Every prompt is encoded: the encoders' memory (about 10 GB for T5-XXL in bf16) goes back to the GPU's pool.
    (With `offload`, accelerate's hooks already keep them off the GPU between uses.)"""
    import torch

    for name in TEXT_ENCODERS:
        encoder = getattr(pipe, name)
        if encoder.device.type != "cpu":  # a no-op move still swaps quanto's weights, which fails: skip it
            encoder.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def restore_text_encoders(pipe, device: str) -> None:
    """The offloaded encoders back on `device`, for prompts that come after they left (a move each way)."""
    for name in TEXT_ENCODERS:
        encoder = getattr(pipe, name)
        if encoder.device.type == "cpu":
            encoder.to(device)
