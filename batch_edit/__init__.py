"""batch-edit: batch image editing with one resident FLUX.1 img2img pipeline."""

__version__ = "0.1.0"
