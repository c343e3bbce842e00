"""batch-edit: batch image editing with one resident FLUX.1 pipeline (img2img, inpaint, fill or kontext)."""

__version__ = "0.1.0"
