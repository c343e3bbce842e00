"""The resident pipeline: the only module that imports torch and diffusers at run time.

One small call: a batch of items (same size, steps, strength, guidance) and their fitted source images in,
edited images out. Each item gets its own CPU `torch.Generator` seeded with its seed, so the noise of an
item does not depend on its batch or on the device it runs on.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path

from PIL import Image

from .backends import offload_text_encoders, prepare_pipeline
from .checkpoints import check_single_file, load_single_file_pipeline
from .errors import OutOfMemory, PipelineLoadError
from .pipeline_config import PipelineConfig
from .plan import WorkItem
from .validation import shown_path

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, config: PipelineConfig, pipe):
        self.config = config  # with `auto` choices resolved: what the metadata records
        self.pipe = pipe
        self.batch_size: int = config.batch_size
        self._prompts: OrderedDict[str, tuple] = OrderedDict()  # prompt -> (prompt_embeds, pooled_prompt_embeds)

    @staticmethod
    def check(config: PipelineConfig) -> None:
        """The refusals that need no weights (no GPU, no model folder or LoRA file), before a run writes anything."""
        import torch

        check_device(config.device, torch)
        if config.is_single_file:
            check_single_file(config)
        elif config.is_local_model and not Path(config.model).is_dir():
            raise PipelineLoadError(f"model folder not found: {config.model}")
        for lora in config.loras:
            if lora.is_local and not Path(lora.path).expanduser().exists():
                raise PipelineLoadError(f"LoRA '{lora.name}': file not found: {lora.path}")

    @classmethod
    def load(cls, config: PipelineConfig) -> "Engine":
        # One line, on a terminal and in a log alike: loading a full model takes minutes and says nothing else.
        name = f"{shown_path(config.model)} ({config.quantization.describe()})"
        print(f"batch-edit: loading {name} ...", end=" ", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            engine = cls._load(config)
        except BaseException:
            print("not loaded", file=sys.stderr, flush=True)  # the reason follows on its own line
            raise
        print(f"loaded in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        return engine

    @classmethod
    def _load(cls, config: PipelineConfig) -> "Engine":
        import torch

        quiet_libraries(verbose=log.isEnabledFor(logging.INFO))
        cls.check(config)
        return cls.from_pipeline(config, _from_pretrained(config, getattr(torch, config.dtype)))

    @classmethod
    def from_pipeline(cls, config: PipelineConfig, pipe) -> "Engine":
        """Quantize, move and compile an already built pipeline (a downloaded one, or random weights)."""
        resolved = prepare_pipeline(pipe, config)
        pipe.set_progress_bar_config(disable=True)
        return cls(resolved, pipe)

    def encode_prompts(self, prompts: list[str]) -> None:
        """Encode each prompt once; with `offload_text_encoders`, free the encoders once all are cached."""
        self._embeddings(list(dict.fromkeys(prompts)))
        offloading = self.config.offload_text_encoders and self.config.offload == "none"  # else hooks do it
        if offloading and len(self._prompts) >= len(set(prompts)):
            offload_text_encoders(self.pipe)

    def generate(self, items: list[WorkItem], images: list[Image.Image]) -> list[Image.Image]:
        import torch

        first = items[0]
        width, height = images[0].size
        if any(item.batch_key != first.batch_key for item in items) or any(i.size != (width, height) for i in images):
            raise ValueError("a batch must share size, steps, strength and guidance")
        try:
            return self._call(items, images, width, height)
        except torch.OutOfMemoryError:
            pass  # freed below, outside the except block, once its traceback no longer holds the batch's tensors
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of memory on a batch of {len(items)} at {width}x{height}")

    def _call(self, items: list[WorkItem], images: list[Image.Image], width: int, height: int) -> list[Image.Image]:
        import torch

        count = len(items)
        if self.config.compile and count < self.batch_size:
            # A compiled transformer keeps static shapes: pad with copies (own generators, results dropped).
            items = items + [items[-1]] * (self.batch_size - count)
            images = images + [images[-1]] * (self.batch_size - count)
        embeds, pooled = self._embeddings([item.prompt for item in items])
        first = items[0]
        # FluxImg2ImgPipeline (unlike FluxPipeline) names no cache context; step caching hooks need one.
        caching = self.pipe.transformer.cache_context("cond") if self.config.first_block_cache else nullcontext()
        # The pipeline call runs under no_grad already; inference_mode would break quanto's weight tensors.
        with caching:
            result = self.pipe(
                prompt_embeds=embeds,
                pooled_prompt_embeds=pooled,
                image=images,
                width=width,
                height=height,
                strength=first.strength,
                num_inference_steps=first.num_inference_steps,
                guidance_scale=first.guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(item.seed) for item in items],
                max_sequence_length=self.config.max_sequence_length,
                output_type="pil",
            )
        return list(result.images)[:count]

    def _embeddings(self, prompts: list[str]):
        """Batch embeddings for `prompts`, encoding only those not cached (least recently used ones go)."""
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompts]
        if missing:
            encoder_device = self._device(self.pipe.text_encoder_2)
            embeds, pooled, _ = self.pipe.encode_prompt(
                prompt=missing,
                prompt_2=None,
                device=encoder_device,
                max_sequence_length=self.config.max_sequence_length,
            )
            for index, prompt in enumerate(missing):
                self._prompts[prompt] = (embeds[index : index + 1], pooled[index : index + 1])
        for prompt in prompts:
            self._prompts.move_to_end(prompt)
        chosen = [self._prompts[prompt] for prompt in prompts]
        while len(self._prompts) > max(self.config.prompt_cache, len(set(prompts))):
            self._prompts.popitem(last=False)
        device = self._device(self.pipe.transformer)
        return torch.cat([e for e, _ in chosen]).to(device), torch.cat([p for _, p in chosen]).to(device)

    def _device(self, module):
        """Where `module` computes: under offload hooks its weights rest on the CPU but run on the GPU."""
        return self.pipe._execution_device if self.config.offload != "none" else module.device


def check_device(device: str, torch) -> None:
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise PipelineLoadError(
            f"the pipeline config asks for device '{device}' but no CUDA GPU is visible "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
            "install a CUDA build of torch or use a config with 'device: cpu'"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise PipelineLoadError(f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible")


def _from_pretrained(config: PipelineConfig, dtype):
    from diffusers import FluxImg2ImgPipeline

    try:
        if config.is_single_file:
            return load_single_file_pipeline(config, dtype)
        return FluxImg2ImgPipeline.from_pretrained(
            config.model,
            revision=config.revision,
            dtype=dtype,
            use_safetensors=True,
            local_files_only=config.local_files_only,
        )
    except PipelineLoadError:
        raise
    except Exception as exc:  # the hub and diffusers raise many types; all mean "cannot load this model"
        raise PipelineLoadError(_explain_load_failure(config, exc)) from exc


def _explain_load_failure(config: PipelineConfig, exc: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    model = f"model '{config.model}' (revision '{config.revision}')"
    chain = [exc, exc.__cause__, exc.__context__]
    text = " ".join(str(e) for e in chain if e)
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated" in text.lower():
        return f"{model} is gated: accept its license on huggingface.co, then set HF_TOKEN (or run `hf auth login`)"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return f"{model} was not found on the Hugging Face Hub (check the name, or set HF_TOKEN for a private model)"
    if any(isinstance(e, LocalEntryNotFoundError) for e in chain) or "offline" in text.lower():
        return f"{model} is not in the local cache and could not be downloaded (no network, or local_files_only)"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"could not load {model}: {first_line}"


def quiet_libraries(verbose: bool) -> None:
    """diffusers/transformers log loading chatter and progress bars; our own progress bar says what matters."""
    import diffusers
    import transformers

    if not verbose:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        # transformers imports torchao whenever it is installed, quanto runs included: its optional kernels that
        # this machine cannot load, and the pytree registrations torch warns about, are not the user's business
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
