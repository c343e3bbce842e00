"""FLUX.1's full-size architecture with random weights, per pipeline task, for the GPU benchmarks: no download.

Speed and memory do not depend on weight values, so the published component configs are instantiated directly
on the device in the run's dtype (`device="meta"` builds the whole pipeline without memory, as the tests do).
img2img, inpaint and kontext run FLUX.1-dev's transformer (FLUX.1-Kontext-dev has the same architecture: the
source's tokens join the sequence, no weights are added); fill runs FLUX.1-Fill-dev's, which also takes the
masked source's latents and the mask. The text encoders, VAE and scheduler are FLUX.1-dev's for every task.
"""

from __future__ import annotations

from contextlib import contextmanager

# FLUX.1-dev's published component configs (black-forest-labs/FLUX.1-dev, */config.json).
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
T5_V1_1_XXL = dict(  # the encoder half of google/t5-v1_1-xxl
    d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu", vocab_size=32128,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
    tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)  # fmt: skip
CLIP_L_TEXT = dict(  # openai/clip-vit-large-patch14's text tower
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
    vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
)  # fmt: skip
FLUX_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, norm_num_groups=32,
    sample_size=1024, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False,
)  # fmt: skip
FLUX_DEV_SCHEDULER = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)  # fmt: skip
VAE_SCALE = 2 ** (len(FLUX_VAE["block_out_channels"]) - 1)  # pixels per latent cell: 8
PACKED_CHANNELS = FLUX_VAE["latent_channels"] * 4  # latents go in as 2x2 patches: 64
# FLUX.1-Fill-dev (its transformer/config.json): the noisy latents, the masked source's latents and the mask in
# 8x8 pixel cells (x 2x2 patches) side by side, 2 x 64 + 4 x 64 = 384 channels in; the noise's 64 out.
FLUX_FILL_TRANSFORMER = dict(
    FLUX_DEV_TRANSFORMER, in_channels=2 * PACKED_CHANNELS + 4 * VAE_SCALE**2, out_channels=PACKED_CHANNELS
)
MODELS = {  # whose architecture each task's benchmark builds (named in the tables)
    "img2img": "FLUX.1-dev",
    "inpaint": "FLUX.1-dev",
    "fill": "FLUX.1-Fill-dev",
    "kontext": "FLUX.1-Kontext-dev",
}


def transformer_config(task: str = "img2img") -> dict:
    return FLUX_FILL_TRANSFORMER if task == "fill" else FLUX_DEV_TRANSFORMER


def build_flux_dev_pipeline(device: str, dtype, seed: int = 0, task: str = "img2img"):
    """The task's pipeline (FluxImg2ImgPipeline, FluxInpaintPipeline, FluxFillPipeline, FluxKontextPipeline) with
    FLUX.1's full-size architecture and random weights, created directly on `device` in `dtype` (so the ~12B
    transformer never exists in float32). `device="meta"` builds it without memory."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from batch_edit.pipeline_config import PIPELINE_CLASSES

    torch.manual_seed(seed)
    with default_dtype(dtype, torch), torch.device(device):  # default init runs where the weights live
        transformer = FluxTransformer2DModel(**transformer_config(task))
        vae = AutoencoderKL(**FLUX_VAE)
    (text_encoder, clip_tokenizer), (text_encoder_2, t5_tokenizer) = build_text_encoders(device, dtype)
    return getattr(diffusers, PIPELINE_CLASSES[task])(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer.eval(),
    )


def build_text_encoders(device: str, dtype):
    """((CLIP-L, its tokenizer), (T5 v1.1 XXL's encoder, its tokenizer)): FLUX.1's text encoders at full size with
    random weights on `device` in `dtype`, and the project's offline tokenizers."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from batch_edit.tiny_model import _clip_tokenizer, _t5_tokenizer

    clip_tokenizer, t5_tokenizer = _clip_tokenizer(), _t5_tokenizer()
    # The offline CLIP tokenizer's special ids, so the encoder pools at the token this tokenizer ends with.
    clip_ids = dict(
        bos_token_id=clip_tokenizer.bos_token_id,
        eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id,
    )
    with default_dtype(dtype, torch), torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, **clip_ids))
        text_encoder_2 = T5EncoderModel(T5Config(**T5_V1_1_XXL))
    return (text_encoder.eval(), clip_tokenizer), (text_encoder_2.eval(), t5_tokenizer)


@contextmanager
def default_dtype(dtype, torch):
    """Modules built inside are created in `dtype` (a 12B transformer must never exist in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
