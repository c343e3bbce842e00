"""Pipeline configs: which model, how it is loaded and quantized. Parsed without importing torch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .checkpoint_headers import SINGLE_FILE_SUFFIXES, checkpoint_problem
from .errors import ConfigError
from .lora_config import LOCAL_PREFIXES, LoraConfig, file_stamp
from .model_paths import folder_stamp, local_model_path
from .validation import PlainNumberDumper, describe_validation_error, read_yaml_file

QuantType = Literal["qint8", "qint4", "qfloat8"]
# What the pipeline does with a source: SDEdit (img2img), masked SDEdit (inpaint), FLUX.1-Fill's masked generation
# (fill) or FLUX.1-Kontext's instruction editing (kontext); each its diffusers class and the weights made for it.
TASKS = ("img2img", "inpaint", "fill", "kontext")
DEFAULT_TASK = "img2img"
Task = Literal[TASKS]
PIPELINE_CLASSES = {
    "img2img": "FluxImg2ImgPipeline",
    "inpaint": "FluxInpaintPipeline",
    "fill": "FluxFillPipeline",
    "kontext": "FluxKontextPipeline",
}
TASK_MODELS = {  # the default `model` of each task
    "img2img": "black-forest-labs/FLUX.1-dev",
    "inpaint": "black-forest-labs/FLUX.1-dev",
    "fill": "black-forest-labs/FLUX.1-Fill-dev",
    "kontext": "black-forest-labs/FLUX.1-Kontext-dev",
}
MASKED_TASKS = ("inpaint", "fill")  # their items need a mask (white: repainted)
TorchaoType = Literal["auto", "float8_dynamic_row", "int8_weight_only"]
# The quantization keys each backend reads: any other it would silently ignore, so a config setting one is refused.
BACKEND_KEYS = {"quanto": ("transformer", "text_encoder", "text_encoder_2", "exclude"), "torchao": ("torchao_type",),
                "none": ()}  # fmt: skip
DEFAULT_EXCLUDE = ["proj_out"]  # FLUX's final projection, kept in `dtype` by the reference recipe
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # T5 tokens: prompts are padded to it, so it changes every image


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantizationConfig(StrictModel):
    """`quanto` is the reference recipe (transformer qint8, text encoders qint4) that fits FLUX.1-dev in 24 GB;
    `torchao` quantizes the transformer for speed (fp8 dynamic row-wise on compute capability >= 8.9, int8
    weight-only elsewhere), best with `compile: true`; `none` keeps `dtype` weights."""

    backend: Literal["quanto", "torchao", "none"] = "quanto"
    transformer: QuantType | None = "qint8"
    text_encoder: QuantType | None = "qint4"
    text_encoder_2: QuantType | None = "qint4"
    exclude: list[str] = DEFAULT_EXCLUDE
    torchao_type: TorchaoType = "auto"

    def describe(self) -> str:
        if self.backend == "none":
            return "none"
        if self.backend == "torchao":
            return f"torchao(transformer={self.torchao_type})"
        parts = [
            f"{name}={getattr(self, name)}"
            for name in ("transformer", "text_encoder", "text_encoder_2")
            if getattr(self, name)
        ]
        if parts and self.exclude != DEFAULT_EXCLUDE:  # the default is named by no part: its ids stay as they were
            parts.append(f"exclude=[{','.join(self.exclude)}]")
        return f"quanto({','.join(parts)})"

    def unused_keys(self) -> list[str]:
        """The keys the config file sets (not those left at their defaults) that its backend ignores."""
        used = ("backend", *BACKEND_KEYS[self.backend])
        return [key for key in type(self).model_fields if key in self.model_fields_set and key not in used]


# diffusers' attention backends that compute exact attention (its `sage` ones quantize it: lossy, not offered;
# the `*_hub` ones download kernels at load time). Each needs its package or GPU, checked when the pipeline loads.
AttentionBackend = Literal[
    "native", "_native_cudnn", "_native_efficient", "_native_flash", "_native_math", "flash", "_flash_3", "flex",
    "xformers",
]  # fmt: skip
CPU_ATTENTION = ("native", "_native_math", "flex")  # the rest are CUDA kernels
# torch.compile's modes beyond its default: autotuned matmul kernels (a longer cold compile), CUDA graphs (each
# compiled graph replayed in one launch, with its own memory pool), or both.
CompileMode = Literal["max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune"]
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class PipelineConfig(StrictModel):
    task: Task = DEFAULT_TASK
    # a hub id or local folder holding the whole pipeline; or a local single-file FLUX.1 transformer (.safetensors,
    # fp8 ones included, or .gguf) with the rest of the pipeline (VAE, text encoders, configs) from `base_model`
    model: str = "black-forest-labs/FLUX.1-dev"
    base_model: str | None = None
    revision: str = "main"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: str = "cuda"
    quantization: QuantizationConfig = QuantizationConfig()
    batch_size: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    max_sequence_length: int = Field(default=DEFAULT_MAX_SEQUENCE_LENGTH, ge=1, le=DEFAULT_MAX_SEQUENCE_LENGTH)
    local_files_only: bool = False
    # torch.compile the transformer (static shapes: one size per batch, last batch padded). true: the whole
    # transformer as one graph; "regional": each repeated block once, reused by all 57 (a much shorter cold compile).
    compile: bool | Literal["regional"] = False
    compile_mode: CompileMode | None = None  # None: torch's default mode; only kernel choices change (see above)
    # inductor's cache, kept between runs; set, it wins over TORCHINDUCTOR_CACHE_DIR (default: that variable's, else
    # ~/.cache/batch-edit/inductor)
    compile_cache_dir: str | None = None
    prompt_cache: int = Field(default=256, ge=0, le=100_000)  # distinct prompts whose encodings are kept
    offload_text_encoders: bool = False  # move the text encoders to the CPU once the prompts are encoded
    # accelerate moves components to the GPU on demand: "model" whole components (transformer, VAE, encoders) in
    # turn; "sequential" layer by layer (least memory, slowest). Same images as without; CUDA only.
    offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False  # LOSSY: the VAE encodes/decodes in overlapping tiles (blended seams); less memory
    vae_slicing: bool = False  # the VAE takes a batch's images one at a time: same images, less memory
    first_block_cache: Annotated[float, Field(gt=0, le=1)] | None = None  # LOSSY step caching threshold; off
    # Speed without changing what is computed (only float rounding): one matmul for Q, K and V; the attention
    # kernel diffusers dispatches to (None: torch's SDPA choosing for itself); the VAE's convolutions channels-last.
    fuse_qkv: bool = False
    attention_backend: AttentionBackend | None = None
    vae_channels_last: bool = False
    loras: list[LoraConfig] = []  # fused into the weights in this order, before quantization
    # the file it was read from, for messages that name its keys (not a setting: in no identity or dump)
    _origin: str = PrivateAttr(default="the pipeline config")
    # LoRAs a manifest's job listed (name -> that job's origin and index in its `loras`), for messages likewise
    _job_loras: dict[str, tuple[str, int]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _task_model(cls, data):
        """Without a `model`, the task's own weights (FLUX.1-Fill-dev for fill, FLUX.1-Kontext-dev for kontext)."""
        if isinstance(data, dict) and "model" not in data and data.get("task") in TASK_MODELS:
            data = {**data, "model": TASK_MODELS[data["task"]]}
        return data

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError("must be 'cuda', 'cuda:N' or 'cpu'")
        return value

    @field_validator("loras")
    @classmethod
    def _unique_lora_names(cls, value: list[LoraConfig]) -> list[LoraConfig]:
        names = [lora.name for lora in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"LoRA names must be unique ({', '.join(twice)} used twice): give one a `name:`")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> "PipelineConfig":
        for problem in combination_problems(self):
            raise ValueError(problem)
        return self

    @property
    def pipeline_class(self) -> str:
        """The diffusers class that loads and runs this config's task."""
        return PIPELINE_CLASSES[self.task]

    @property
    def is_single_file(self) -> bool:
        return self.model.lower().endswith(SINGLE_FILE_SUFFIXES)

    @property
    def is_gguf(self) -> bool:
        return self.model.lower().endswith(".gguf")

    @property
    def is_local_model(self) -> bool:
        return self.model.startswith(LOCAL_PREFIXES) or self.is_single_file

    @property
    def is_local_base(self) -> bool:
        return self.base_model is not None and self.base_model.startswith(LOCAL_PREFIXES)

    @property
    def is_local_folder(self) -> bool:
        """Whether the whole pipeline loads from a local folder (not a single file's hub base)."""
        return self.is_local_base if self.is_single_file else self.is_local_model

    def missing_paths(self) -> list[str]:
        """The local model file or folders this config names that are not there, each by its file and key (a hub
        id is not looked for: it may be downloaded, or be in the cache)."""
        missing = []
        if self.is_single_file and Path(self.model).is_dir():
            missing.append(f"{self._origin}: field 'model': {self.model}: a folder, not a file")
        elif self.is_single_file and not Path(self.model).is_file():
            missing.append(f"{self._origin}: field 'model': file not found: {self.model}")
        elif self.is_local_model and not self.is_single_file and not Path(self.model).is_dir():
            missing.append(f"{self._origin}: field 'model': folder not found: {self.model}")
        if self.is_local_base and not Path(self.base_model).is_dir():
            missing.append(f"{self._origin}: field 'base_model': folder not found: {self.base_model}")
        return missing

    def lora_field(self, lora: LoraConfig, key: str = "") -> str:
        """Where a LoRA was listed, for messages: the config file's `loras[i]`, or that of the manifest's job."""
        where, index = self._job_loras.get(lora.name) or (
            self._origin, next(i for i, own in enumerate(self.loras) if own.name == lora.name))  # fmt: skip
        return f"{where}: field 'loras[{index}]{key}'"

    def missing_loras(self) -> list[str]:
        """The local LoRA files (or folders) listed that are not there, each by where it was listed."""
        return [
            f"{self.lora_field(lora, '.path')}: LoRA '{lora.name}': file not found: {lora.path}"
            for lora in self.loras
            if lora.is_local and not Path(lora.path).expanduser().exists()
        ]

    def identity(self) -> dict:
        """What about the pipeline determines an image: part of every item's id. Offload and VAE slicing change
        where and when work runs, not the images, so they are not part of it; VAE tiling is. Settings added
        later are named only off their defaults, so the ids of configs that never set them stay the same."""
        # a local folder's weights are retrained in place: their sizes and mtimes make new items then
        folder = (
            {"model_files": folder_stamp(Path(self.model))} if self.is_local_model and not self.is_single_file else {}
        )
        # T5's prompt embeddings are padded to it: another length gives other images
        length = self.max_sequence_length
        sequence = {"max_sequence_length": length} if length != DEFAULT_MAX_SEQUENCE_LENGTH else {}
        return {
            # img2img, the first task, is named by no key: ids made before tasks existed stay the same
            **({"task": self.task} if self.task != DEFAULT_TASK else {}),
            "model": self.model,
            **(single_file_identity(self) if self.is_single_file else {}),
            **folder,
            "revision": self.revision,
            "dtype": self.dtype,
            "quantization": self.quantization.describe(),
            # lossy: it changes the images, so it is part of what an item is
            **({"first_block_cache": self.first_block_cache} if self.first_block_cache else {}),
            **({"vae_tiling": True} if self.vae_tiling else {}),  # lossy: tiles blend at their seams
            **sequence,
            **({"loras": [lora.identity() for lora in self.loras]} if self.loras else {}),
        }

    def recorded_fields(self) -> dict:
        """The pipeline fields written into every metadata row (LoRAs as their `<lora:name:scale>` tags)."""
        return {**self.identity(), "loras": self.lora_tags()}

    def lora_tags(self) -> str:
        """The LoRAs as AUTOMATIC1111 writes them in a prompt: `<lora:name:scale> ...`; empty without LoRAs."""
        return " ".join(lora.tag() for lora in self.loras)

    @property
    def has_device_choices(self) -> bool:
        """Whether an `auto` that changes images waits on the device: torchao's type (fp8 or int8)."""
        return self.quantization.backend == "torchao" and self.quantization.torchao_type == "auto"

    def with_device_choices(self, fp8_capable: bool) -> "PipelineConfig":
        """Every `auto` that changes images, resolved for a device that does (or does not) run fp8, so item ids
        name the recipe actually used. (`batch_size: auto` changes no image: it stays until the engine loads.)"""
        if not self.has_device_choices:
            return self
        kind = "float8_dynamic_row" if fp8_capable else "int8_weight_only"
        return self.model_copy(update={"quantization": self.quantization.model_copy(update={"torchao_type": kind})})

    def resolved_batch_size(self, gpu_memory_gb: float | None) -> int:
        """`auto`: on the CPU, per-call overhead dominates, so batch; on a GPU, batch only where memory is ample
        (an out-of-memory batch is split in halves anyway); with offload, memory is what is short: 1. With step
        caching, always 1: the cache decides for a whole batch, so an item's image would depend on its company."""
        if self.first_block_cache:  # a larger one (refused when a config file sets it) runs one item per call
            return 1
        if self.batch_size != "auto":
            return self.batch_size
        if gpu_memory_gb is None:
            return 8
        if self.offload != "none":
            return 1
        return 4 if gpu_memory_gb >= 70 else 2 if gpu_memory_gb >= 40 else 1


def combination_problems(config: PipelineConfig) -> list[str]:
    """Settings that cannot work together, each named by its keys (checked before any weight loads)."""
    problems = []
    if config.is_single_file and not config.base_model:
        problems.append(
            "model is a single transformer file: set base_model to the repo or folder giving the rest of the "
            "pipeline (e.g. black-forest-labs/FLUX.1-dev)"
        )
    if config.base_model and not config.is_single_file:
        problems.append("base_model is only for a single-file model (.safetensors or .gguf)")
    if config.base_model and config.base_model.lower().endswith(SINGLE_FILE_SUFFIXES):
        problems.append("base_model must be a repo or folder holding a whole pipeline, not a single file")
    if config.attention_backend not in (None, *CPU_ATTENTION) and not config.device.startswith("cuda"):
        problems.append(
            f"attention_backend '{config.attention_backend}' is a CUDA kernel: with device {config.device} use "
            f"{', '.join(CPU_ATTENTION)} or leave it unset"
        )
    quant = config.quantization
    if config.is_gguf and (quant.backend == "torchao" or (quant.backend == "quanto" and quant.transformer)):
        problems.append(
            "a .gguf model is quantized already: set quantization.transformer: null (quanto may still quantize "
            "the text encoders) or quantization.backend: none"
        )
    if config.offload != "none" and config.device == "cpu":
        problems.append(f"offload: {config.offload} needs device: cuda (it moves components between CPU and GPU)")
    if config.offload != "none" and config.compile:
        problems.append(f"offload: {config.offload} cannot be combined with compile (offload hooks move weights "
                        "between devices under the compiled graph): set compile: false or offload: none")  # fmt: skip
    problems.extend(compile_mode_problems(config))
    if config.first_block_cache and config.compile:
        shown = "true" if config.compile is True else config.compile
        problems.append(
            f"first_block_cache cannot be combined with compile: {shown} (diffusers runs its step-caching hooks "
            "outside compiled code, and the transformer is compiled as whole graphs): set first_block_cache: null "
            "or compile: false"
        )
    problems.extend(gguf_problems(config))
    problems.extend(backend_problems(config))
    if config.offload == "sequential" and quant.backend in ("quanto", "torchao"):
        problems.append(
            f"offload: sequential cannot move {quant.backend}-quantized weights layer by layer: use "
            "quantization.backend: none, or offload: model"
        )
    return problems


def gguf_problems(config: PipelineConfig) -> list[str]:
    """What cannot be done to a .gguf model's weights: they stay quantized as the file holds them, so neither a
    LoRA nor the Q/K/V fusion can be merged into them."""
    if not config.is_gguf:
        return []
    problems = []
    if config.loras:
        problems.append(
            f"loras cannot be fused into the quantized weights of a .gguf model ({config.model}): use a "
            ".safetensors checkpoint or a model folder, or remove the loras"
        )
    if config.fuse_qkv:
        problems.append(
            f"fuse_qkv cannot join the quantized Q, K and V weights of a .gguf model ({config.model}): set "
            "fuse_qkv: false"
        )
    return problems


def backend_problems(config: PipelineConfig) -> list[str]:
    """What the quantization backend cannot do with the other settings: known from the config alone, so refused
    before the minutes spent loading and quantizing the weights."""
    quant, problems = config.quantization, []
    # quanto's weight tensors break torch.compile's graph capture; text encoders it quantizes are not compiled
    if config.compile and quant.backend == "quanto" and quant.transformer:
        shown = "true" if config.compile is True else config.compile
        problems.append(
            f"compile: {shown} does not work with quanto-quantized weights (quantization.backend: quanto, the "
            f"default, with transformer: {quant.transformer}): set quantization.transformer: null (the text "
            "encoders may stay quantized), quantization.backend: torchao or none, or compile: false"
        )
    if quant.backend == "torchao" and quant.torchao_type == "float8_dynamic_row" and config.device == "cpu":
        problems.append(
            "quantization.torchao_type: float8_dynamic_row needs a CUDA GPU of compute capability 8.9 or newer, "
            "not device: cpu: use torchao_type: int8_weight_only or auto"
        )
    return problems


def compile_mode_problems(config: PipelineConfig) -> list[str]:
    mode = config.compile_mode
    if mode is None:
        return []
    if not config.compile:
        return ["compile_mode needs compile: true or regional"]
    if mode not in CUDA_GRAPH_MODES:
        return []
    if not config.device.startswith("cuda"):
        return [(f"compile_mode {mode} uses CUDA graphs, which need device: cuda: with device {config.device} use "
                 "max-autotune-no-cudagraphs or leave it unset")]  # fmt: skip
    if config.first_block_cache:  # its hooks keep one step's block outputs for the next; a replay overwrites them
        return [(f"compile_mode {mode} (CUDA graphs) cannot be combined with first_block_cache: use "
                 "max-autotune-no-cudagraphs or first_block_cache: null")]  # fmt: skip
    return []


def single_file_identity(config: PipelineConfig) -> dict:
    """A checkpoint file is named by path, size and modification time (hashing 12-24 GB on every plan would
    take longer than some runs): a replaced or touched file gives new ids; the base supplies VAE and encoders
    (a local base folder stamped as a model folder is)."""
    base = {"base_files": folder_stamp(Path(config.base_model))} if config.is_local_base else {}
    return {"model_file": file_stamp(Path(config.model)), "base_model": config.base_model, **base}


def load_pipeline_config(path: Path | None, recorded: bool = False) -> PipelineConfig:
    """Read a config file; relative local `model` and LoRA paths resolve against the config's folder. `recorded`:
    a config a run kept (`.batch-edit/pipelines/`, also when given by hand, as `--pipeline` to `run` or
    `reproduce`); those of earlier versions list every quantization key and write fractions with an exponent
    (5.0e-05)."""
    if path is None:
        return PipelineConfig()
    recorded = recorded or (path.parent.name, path.parent.parent.name) == ("pipelines", ".batch-edit")  # by hand
    data = read_yaml_file(path, ConfigError, recorded=recorded)  # earlier versions wrote 1e-05 as 1.0e-05
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline config must be a mapping of settings")
    try:
        config = PipelineConfig.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ConfigError("\n".join(describe_validation_error(exc, str(path), PipelineConfig))) from None
    if not recorded and (unused := config.quantization.unused_keys()):
        backend, users = config.quantization.backend, {key: name for name, keys in BACKEND_KEYS.items() for key in keys}
        reads = f"it reads {', '.join(BACKEND_KEYS[backend])}" if BACKEND_KEYS[backend] else "it quantizes nothing"
        raise ConfigError("\n".join(f"{path}: field 'quantization.{key}': backend {backend} does not use it ({reads}): "
                                    f"remove it, or set backend: {users[key]}" for key in unused))  # fmt: skip
    config = config.model_copy(update={
        "model": local_model_path(config.model, "model", path),
        "base_model": config.base_model and local_model_path(config.base_model, "base_model", path),
    })  # fmt: skip
    if not recorded and config.revision != "main" and config.is_local_folder:
        local = config.base_model if config.is_single_file else config.model
        raise ConfigError(f"{path}: field 'revision': {local} is a local folder, which has no revisions (revision "
                          f"'{config.revision}' would be ignored): remove it, or name a hub id")  # fmt: skip
    if not recorded and config.first_block_cache and config.batch_size not in ("auto", 1):
        raise ConfigError(
            f"{path}: field 'batch_size': {config.batch_size} cannot be combined with first_block_cache: the cache "
            "decides for a whole batch whether a step is skipped, so an item's image would depend on the other "
            "items of its batch; step caching runs one item per call: set batch_size: 1 or auto"
        )
    if config.is_single_file and (problem := checkpoint_problem(Path(config.model))):
        raise ConfigError(f"{path}: field 'model': {config.model}: {problem}")
    if config.loras:
        config = config.model_copy(update={"loras": [lora.resolved_against(path.parent) for lora in config.loras]})
    config._origin = str(path)
    return config


def dump_pipeline_config(config: PipelineConfig) -> str:
    """The config as a file `load_pipeline_config` reads back: quantization keys its backend ignores left out."""
    data = config.model_dump(mode="json")
    used = ("backend", *BACKEND_KEYS[config.quantization.backend])
    data["quantization"] = {key: value for key, value in data["quantization"].items() if key in used}
    return yaml.dump(data, Dumper=PlainNumberDumper, sort_keys=False)  # its floats read back (no 1e-05)
