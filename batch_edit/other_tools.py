"""Key names other image tools use (AUTOMATIC1111/Forge, ComfyUI, diffusers), each with what a manifest writes
instead: an unknown YAML key or CSV column spelled as one of those gets this hint rather than a spelling guess,
which for these names is often wrong (`cfg` is nothing like `guidance_scale`) or absent."""

from __future__ import annotations

# name -> (a key the manifest's place takes, for the hint to apply there; the hint). A YAML job or `defaults:`
# and a CSV header take every parameter; the top level of a manifest or a pipeline config takes none, and gets
# no hint (the key written there would be just as wrong).
_GUIDANCE_TEXT = (
    "write 'guidance_scale', FLUX.1's distilled guidance as Forge's 'Distilled CFG Scale' or ComfyUI's FluxGuidance "
    "set it (img2img's default 3.5)"
)
_GUIDANCE = ("guidance_scale", _GUIDANCE_TEXT)
_CFG = ("guidance_scale", f"{_GUIDANCE_TEXT}; a Stable Diffusion CFG value such as 7 does not carry over")
_STRENGTH = (
    "strength",
    (
        "write 'strength', above 0 and at most 1 as A1111's denoising strength or ComfyUI's denoise (the fill and "
        "kontext tasks take none)"
    ),
)
_VARIATIONS = ("variations", "write 'variations', the number of seeds (an image each) per source, prompt and setting")
OTHER_TOOLS: dict[str, tuple[str, str]] = {
    "steps": ("num_inference_steps", "write 'num_inference_steps'"),
    "cfg": _CFG,
    "cfg_scale": _CFG,
    "guidance": _GUIDANCE,
    "denoise": _STRENGTH,
    "denoising_strength": _STRENGTH,
    "seeds": (
        "seed",
        (
            "write 'seed' (one value; in YAML also a list, an image per seed) or 'variations', the number of seeds per "
            "source, prompt and setting"
        ),
    ),
    "n_iter": _VARIATIONS,
    "batch_count": _VARIATIONS,
    "size": ("width", "write 'width' and 'height', each a multiple of 16"),
    "batch_size": (
        "variations",
        (
            "images per pipeline call are the pipeline config's 'batch_size', not a manifest's; for more images per "
            "source and prompt write 'variations'"
        ),
    ),
}


def other_tool_hint(key: str, allowed: list[str] | tuple[str, ...]) -> str | None:
    """What to write instead of `key`, another tool's name, where the keys `allowed` there take it; None for a
    name that is not one of those (or a place that takes no parameters). `CFG Scale` reads as `cfg_scale`."""
    found = OTHER_TOOLS.get(key.strip().lower().replace(" ", "_").replace("-", "_"))
    if found is None or found[0] not in allowed:
        return None
    return found[1]
