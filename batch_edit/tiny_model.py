"""A tiny, randomly initialised FLUX.1 pipeline of each task (img2img, inpaint, fill, kontext) for offline tests.

Every component is the real diffusers/transformers class (so the real code paths run), just with a few
channels and one block each; the tokenizers are built from in-memory vocabularies so nothing is downloaded.
The weights come from a fixed seed: the same command writes the same model on every machine.
"""

from __future__ import annotations

import string
from pathlib import Path

from .pipeline_config import DEFAULT_TASK, PIPELINE_CLASSES

# The VAE downsamples by 8 like FLUX's, so the tiny pipeline asks for the same multiple-of-16 sides.
TINY_SEED = 0
VAE_SCALE = 8  # 2 ** (VAE blocks - 1)
LATENT_CHANNELS = 4
TEXT_DIM = 128  # quanto's qint4 groups weights by 128 along the input dimension


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2, CLIP) uses for the bytes 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return list(symbols.values())


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    vocab["th"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[("t", "h")], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces.append((ch, -2.0))
        pieces.append(("\u2581" + ch, -2.5))
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


def build_tiny_pipeline(task: str = DEFAULT_TASK):
    """Return the task's pipeline (FluxImg2ImgPipeline, FluxInpaintPipeline, ...) with tiny random weights
    (float32, CPU). Only Fill's transformer differs: it also takes the masked image's latents and the mask."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(TINY_SEED)
    packed = LATENT_CHANNELS * 4  # latents go in as 2x2 patches
    transformer = FluxTransformer2DModel(
        patch_size=1,
        # FluxFillPipeline: the noisy latents, the masked image's latents, and the mask in 8x8 pixel cells (x 2x2)
        in_channels=2 * packed + 4 * VAE_SCALE**2 if task == "fill" else packed,
        out_channels=packed if task == "fill" else None,  # None: as many as it takes in
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=[4, 6, 6],
    )
    clip_tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=TEXT_DIM,
            intermediate_size=TEXT_DIM * 2,
            num_attention_heads=4,
            num_hidden_layers=1,
            vocab_size=len(clip_tokenizer),
            projection_dim=TEXT_DIM,
        )
    )
    t5_tokenizer = _t5_tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=TEXT_DIM,
            d_kv=32,
            d_ff=TEXT_DIM * 2,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    vae = AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return getattr(diffusers, PIPELINE_CLASSES[task])(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def write_tiny_model(directory: Path, verbose: bool = False, task: str = DEFAULT_TASK) -> Path:
    """Save the task's tiny pipeline to `directory` (safetensors) so `from_pretrained` can load it."""
    from .engine import quiet_libraries

    quiet_libraries(verbose)  # the optional-backend warnings and shard progress bars say nothing useful here
    pipe = build_tiny_pipeline(task)
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


# Layers the tiny LoRA adapts, with their (out, in) features: attention projections of both block kinds, the
# single block's output projection, and the CLIP encoder's query projection (so both components get fused).
TINY_LORA_LAYERS = {
    "transformer.transformer_blocks.0.attn.to_q": (32, 32),
    "transformer.transformer_blocks.0.attn.to_k": (32, 32),
    "transformer.transformer_blocks.0.attn.to_v": (32, 32),
    "transformer.transformer_blocks.0.attn.to_out.0": (32, 32),
    "transformer.single_transformer_blocks.0.attn.to_q": (32, 32),
    "transformer.single_transformer_blocks.0.attn.to_v": (32, 32),
    "transformer.single_transformer_blocks.0.proj_out": (32, 160),
    "text_encoder.encoder.layers.0.self_attn.q_proj": (TEXT_DIM, TEXT_DIM),
}


def write_tiny_lora(path: Path, rank: int = 4, seed: int = 1, magnitude: float = 0.5) -> Path:
    """Write a LoRA for the tiny pipeline in the PEFT layout diffusers loads for FLUX (`<layer>.lora_A.weight`,
    `<layer>.lora_B.weight`, no alpha: scale = 1). `magnitude` 0 gives a LoRA that changes nothing."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer, (out_features, in_features) in TINY_LORA_LAYERS.items():
        tensors[f"{layer}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) / in_features**0.5
        tensors[f"{layer}.lora_B.weight"] = magnitude * torch.randn(out_features, rank, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
