"""The resident pipeline: the only module that imports torch and diffusers at run time.

One small call: a batch of items (same size, steps, strength, guidance) and their fitted source images (and,
for the masked tasks, their fitted masks) in, edited images out. Each item gets its own CPU `torch.Generator`
seeded with its seed, so the noise of an item does not depend on its batch or on the device it runs on.
The config's task picks the diffusers class and what each call passes it (`task_arguments`).
"""

from __future__ import annotations

import errno
import gc
import logging
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext

from PIL import Image

from .backends import check_machine, offload_text_encoders, prepare_pipeline, restore_text_encoders
from .checkpoints import check_single_file, load_single_file_pipeline
from .errors import OutOfMemory, PipelineLoadError, first_line
from .folder_lock import run_reserve, too_many_open_files
from .pipeline_config import DEFAULT_TASK, MASKED_TASKS, PipelineConfig
from .plan import WorkItem
from .prompt_tokens import LongPrompts
from .validation import shown_path

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, config: PipelineConfig, pipe):
        self.config = config  # with `auto` choices resolved: what the metadata records
        self.pipe = pipe
        self.batch_size: int = config.batch_size
        self._prompts: OrderedDict[str, tuple] = OrderedDict()  # prompt -> (prompt_embeds, pooled_prompt_embeds)
        self._long_prompts = LongPrompts(self._t5_tokens, config.max_sequence_length)
        self._encoders_away = False  # moved to the CPU by offload_text_encoders once the prompts were encoded

    @staticmethod
    def check(config: PipelineConfig) -> None:
        """The refusals that need no weights (no GPU, no model folder or LoRA file), before a run writes anything."""
        import torch

        check_device(config.device, torch)
        if missing := [*config.missing_paths(), *config.missing_loras()]:
            raise PipelineLoadError(missing[0])
        if config.is_single_file:
            check_single_file(config)
        check_machine(config)

    @classmethod
    def load(cls, config: PipelineConfig, announce: bool = True) -> "Engine":
        if not announce:  # a Ray worker: the driver has said what every worker loads
            return cls._loaded(config)
        # One line, on a terminal and in a log alike: loading a full model takes minutes and says nothing else.
        print(f"batch-edit: loading {described(config)} ...", end=" ", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            engine = cls._loaded(config)
        except BaseException:
            print("not loaded", file=sys.stderr, flush=True)  # the reason follows on its own line
            raise
        print(f"loaded in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        return engine

    @classmethod
    def _loaded(cls, config: PipelineConfig) -> "Engine":
        """The load, where it runs out of open files (the imports, the weight files), refused saying so."""
        try:
            return cls._load(config)
        except Exception as exc:
            if _out_of_open_files(exc):
                reserve = run_reserve(config.device, config.compile)
                raise PipelineLoadError(too_many_open_files(" while loading the pipeline", reserve=reserve)) from exc
            raise

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
        """Encode each prompt once (with `offload_text_encoders`, the encoders leave the GPU once they are)."""
        self._embeddings(list(dict.fromkeys(prompts)))

    def generate(
        self,
        items: list[WorkItem],
        images: list[Image.Image],
        masks: list[Image.Image] | None = None,
        pad: bool = True,
    ) -> list[Image.Image]:
        """`masks`: for inpaint and fill, one "L" image per item at its image's size, white where it is repainted;
        refused for the other tasks. `pad`: under compile, a short batch is padded to the batch size (static
        shapes); a retry after an out-of-memory is not, or it would be as large as the call that failed."""
        import torch

        first = items[0]
        width, height = images[0].size
        if any(item.batch_key != first.batch_key for item in items) or any(i.size != (width, height) for i in images):
            raise ValueError("a batch must share size, steps, strength and guidance")
        check_masks(self.config.task, images, masks)
        # diffusers crops around one mask per call; step caching decides from the whole batch whether a step is
        # skipped, so in company an item's image would depend on the others: both run one item per call
        if (_cropped(self.config.task, first) or self.config.first_block_cache) and len(items) > 1:
            masks = masks if masks is not None else [None] * len(items)
            return [
                self.generate([i], [im], None if m is None else [m], pad)[0] for i, im, m in zip(items, images, masks)
            ]
        # A compiled transformer keeps static shapes: pad with copies (own generators, results dropped).
        padding = (
            self.batch_size - len(items) if pad and self.config.compile and not _cropped(self.config.task, first) else 0
        )
        padding = max(0, padding)
        try:
            return self._call(items, images, masks, width, height, padding)
        except torch.OutOfMemoryError:
            pass  # freed below, outside the except block, once its traceback no longer holds the batch's tensors
        _free_memory(torch)
        if padding and len(items) == 1:  # no halves to retry unpadded: the item alone, as a half would run
            log.warning("out of memory on a batch of 1 padded to %d for compile: retrying it unpadded", 1 + padding)
            try:
                return self._call(items, images, masks, width, height, 0)
            except torch.OutOfMemoryError:
                pass
            _free_memory(torch)
            raise OutOfMemory(f"out of memory on a batch of 1 at {width}x{height} (also padded to {self.batch_size} "
                              "for compile)")  # fmt: skip
        padded = f" (padded to {self.batch_size} for compile)" if padding > 0 else ""
        raise OutOfMemory(f"out of memory on a batch of {len(items)}{padded} at {width}x{height}")

    def _call(
        self,
        items: list[WorkItem],
        images: list[Image.Image],
        masks: list[Image.Image] | None,
        width: int,
        height: int,
        padding: int,
    ) -> list[Image.Image]:
        import torch

        count = len(items)
        cropped = _cropped(self.config.task, items[0])  # one item, passed as single images
        if padding:
            items, images = items + [items[-1]] * padding, images + [images[-1]] * padding
            masks = masks + [masks[-1]] * padding if masks is not None else None
        for warning in self._long_prompts.warnings((item.job, item.prompt) for item in items):
            log.warning("%s", warning)  # T5 drops the rest without a word (diffusers says so only with -v)
        embeds, pooled = self._embeddings([item.prompt for item in items])
        first = items[0]
        # The FLUX image-to-image pipelines (unlike FluxPipeline) name no cache context; step caching hooks need one.
        caching = self.pipe.transformer.cache_context("cond") if self.config.first_block_cache else nullcontext()
        # The pipeline call runs under no_grad already; inference_mode would break quanto's weight tensors.
        with caching:
            result = self.pipe(
                prompt_embeds=embeds,
                pooled_prompt_embeds=pooled,
                image=images[0] if cropped else images,
                width=width,
                height=height,
                num_inference_steps=first.num_inference_steps,
                guidance_scale=first.guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(item.seed) for item in items],
                max_sequence_length=self.config.max_sequence_length,
                output_type="pil",
                **task_arguments(self.config.task, first, masks, width, height),
            )
        return list(result.images)[:count]

    def _embeddings(self, prompts: list[str]):
        """Batch embeddings for `prompts`, encoding only those not cached (least recently used ones go)."""
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompts]
        # With `offload_text_encoders`, the encoders leave the GPU once the prompts missing are encoded: all of
        # the run's at once where they fit the cache (the worker encodes them up front), else each batch's.
        # Prompts that come after the encoders left (a chained job's, or a batch's beyond the cache) are encoded
        # on the GPU again, not on the CPU, then the encoders leave again: a move each way.
        offloading = bool(missing) and self.config.offload_text_encoders and self.config.offload == "none"
        if missing and self._encoders_away:
            restore_text_encoders(self.pipe, self.config.device)
            self._encoders_away = False
        for prompt in missing:
            # One prompt per call: batched encoding rounds differently with the batch's size and company, so a
            # prompt's embedding (and every image made from it) would depend on which other prompts were missing
            # from the cache at the time: a resumed run or `reproduce` would not give the same image.
            # Under no_grad, as inside a pipeline call: with autograd on, each cached embedding would hold its
            # encoders' whole graph (every layer's saved activations) and attention would take other kernels.
            with torch.no_grad():
                embeds, pooled, _ = self.pipe.encode_prompt(
                    prompt=[prompt],
                    prompt_2=None,
                    device=self._device(self.pipe.text_encoder_2),
                    max_sequence_length=self.config.max_sequence_length,
                )
            self._prompts[prompt] = (embeds, pooled)
        if offloading:  # (with `offload`, accelerate's hooks already keep them off the GPU between uses)
            offload_text_encoders(self.pipe)
            self._encoders_away = self.config.device != "cpu"
        for prompt in prompts:
            self._prompts.move_to_end(prompt)
        chosen = [self._prompts[prompt] for prompt in prompts]
        while len(self._prompts) > max(self.config.prompt_cache, len(set(prompts))):
            self._prompts.popitem(last=False)
        device = self._device(self.pipe.transformer)
        return torch.cat([e for e, _ in chosen]).to(device), torch.cat([p for _, p in chosen]).to(device)

    def _t5_tokens(self, prompt: str) -> int:
        """The prompt's length as the pipeline's T5 tokenizer counts it, untruncated, its end-of-text token included."""
        return len(self.pipe.tokenizer_2(prompt).input_ids)

    def _device(self, module):
        """Where `module` computes: under offload hooks its weights rest on the CPU but run on the GPU."""
        return self.pipe._execution_device if self.config.offload != "none" else module.device


def _free_memory(torch) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def task_arguments(task: str, first: WorkItem, masks: list[Image.Image] | None, width: int, height: int) -> dict:
    """What a task's pipeline takes beyond the shared arguments. Fill and Kontext take no strength (Fill's
    `strength` stays at its 1.0: the masked region is generated from noise, as the Fill model is trained)."""
    if task == "img2img":
        return {"strength": first.strength}
    if task == "inpaint" and first.mask_padding:  # repaint a crop around the mask, that much larger, at full size
        return {"strength": first.strength, "mask_image": masks[0], "padding_mask_crop": first.mask_padding}
    if task == "inpaint":
        return {"strength": first.strength, "mask_image": masks}
    if task == "fill":
        return {"mask_image": masks}
    # Kontext would resize the source to one of its preferred resolutions and scale the output to `max_area`:
    # the fitted source (sides multiples of 16) goes in as it is, and the output has the size asked for.
    return {"_auto_resize": False, "max_area": width * height}


def _cropped(task: str, first: WorkItem) -> bool:
    return task == "inpaint" and first.mask_padding > 0


def check_masks(task: str, images: list[Image.Image], masks: list[Image.Image] | None) -> None:
    if task not in MASKED_TASKS:
        if masks is not None:
            raise ValueError(f"the {task} task takes no mask")
        return
    if masks is None or len(masks) != len(images):
        raise ValueError(f"the {task} task needs one mask per image")
    for image, mask in zip(images, masks):
        if mask.mode != "L" or mask.size != image.size:
            shown = f"{mask.mode} {mask.size}"
            raise ValueError(f"a mask must be an 'L' image of its image's size {image.size}, not {shown}")


def described(config: PipelineConfig) -> str:
    task = f", task {config.task}" if config.task != DEFAULT_TASK else ""  # as `plan` names it
    return f"{shown_path(config.model)} ({config.quantization.describe()}{task})"


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
    import diffusers

    try:
        if config.is_single_file:
            pipe = load_single_file_pipeline(config, dtype)
        else:
            pipe = getattr(diffusers, config.pipeline_class).from_pretrained(
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
    check_task_weights(pipe, config)
    return pipe


def check_task_weights(pipe, config: PipelineConfig) -> None:
    """FLUX.1-Fill's transformer also takes the masked image's latents and the mask (in 8x8 patches): any other
    weights under the fill task, or Fill weights under another task, fail only at the first call, with a shape."""
    latent = pipe.vae.config.latent_channels * 4  # packed 2x2
    fill = 2 * latent + 4 * pipe.vae_scale_factor**2
    found = pipe.transformer.config.in_channels
    wanted = fill if config.task == "fill" else latent
    if found != wanted:
        needs = "FLUX.1-Fill weights (e.g. black-forest-labs/FLUX.1-Fill-dev)" if config.task == "fill" else (
            "FLUX.1 weights that are not FLUX.1-Fill's")  # fmt: skip
        raise PipelineLoadError(
            f"model '{config.model}': its transformer takes {found} input channels where the {config.task} task "
            f"needs {wanted}: use {needs}"
        )


def _explain_load_failure(config: PipelineConfig, exc: Exception) -> str:
    """The hub's own reasons (a gated or unknown repo, a file neither cached nor downloadable), told from the
    exception types it raises, or the words diffusers wraps them in, never from text that holds a path (a local
    folder named `aggregated-flux` or `offline-models/` is no gated or uncached hub model)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    model = f"model '{config.model}' (revision '{config.revision}')"
    chain = _chain(exc)
    if not config.is_local_folder:  # a whole pipeline from a local folder never reaches the hub
        if any(isinstance(e, GatedRepoError) for e in chain) or _says(chain, "Cannot access gated repo"):
            return (f"{model} is gated: accept its license on huggingface.co, then set HF_TOKEN (or run "
                    "`hf auth login`)")  # fmt: skip
        if any(isinstance(e, RepositoryNotFoundError) for e in chain):
            return (f"{model} was not found on the Hugging Face Hub (check the name, or set HF_TOKEN for a private "
                    "model)")  # fmt: skip
        offline = (LocalEntryNotFoundError, OfflineModeIsEnabled)
        if any(isinstance(e, offline) for e in chain) or _says(chain, "installation#offline-mode"):
            return (f"{model} is not in the local cache and could not be downloaded (no network, or "
                    "local_files_only)")  # fmt: skip
    return f"could not load {model}: {first_line(exc, None)}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during, however deep (diffusers wraps the hub's errors)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _says(chain: list[BaseException], words: str) -> bool:
    """Whether the hub or diffusers said `words`: their fixed wording (a URL, a sentence), never a path's."""
    return any(words in str(e) for e in chain)


def _out_of_open_files(exc: BaseException | None) -> bool:
    """An EMFILE among the exception and those it was raised from (a library may wrap the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def quiet_libraries(verbose: bool) -> None:
    """diffusers/transformers log loading chatter and progress bars; our own progress bar says what matters."""
    import diffusers
    import transformers

    if not verbose:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        # transformers imports torchao whenever it is installed, quanto runs included: its optional kernels that
        # this machine cannot load, the pytree registrations torch warns about, and a CUDA build of torch on a
        # machine without CUDA saying so as quanto loads its extensions, are not the user's business
        for name in ("torchao", "torch.utils._pytree", "torch.utils.cpp_extension"):
            logging.getLogger(name).setLevel(logging.ERROR)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
