"""A mask drawn on an EXIF-rotated photo's stored pixels (its size the source's stored size, width and height
swapped by the rotation; the mask itself without a rotation) is turned as the source is, so it covers the region it
was drawn on; a mask of the displayed size is taken as drawn on the displayed photo, as before."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import run_manifest

YAML = """jobs:
  - {name: j, sources: photo.jpg, masks: masks/, prompts: p, width: 64, height: 96, num_inference_steps: 2,
     keep_sources: true, composite: false}
"""


def _kept_mask(tmp_path) -> np.ndarray:
    (kept,) = (tmp_path / "out" / "j" / "sources").glob("photo-mask-*.png")
    return np.asarray(Image.open(kept).convert("L"))


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_mask_of_the_stored_size_is_turned_as_its_source(tmp_path, tiny_task_config, orientation):
    config = tiny_task_config("inpaint")
    raw = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))  # stored 96x64
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw.save(tmp_path / "photo.jpg", exif=exif, quality=95)  # shown 64x96
    (tmp_path / "masks").mkdir()
    stored = np.zeros((64, 96), np.uint8)
    stored[:, :32] = 255  # the left third of the stored pixels
    Image.fromarray(stored).save(tmp_path / "masks" / "photo.png")
    (tmp_path / "m.yaml").write_text(YAML)
    run_manifest(tmp_path, config, "run")
    mask = _kept_mask(tmp_path)
    assert mask.shape == (96, 64)
    # what the stored left third becomes on the shown photo: turned as exif_transpose turns the source's pixels
    method = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}[orientation]
    expected = np.asarray(Image.fromarray(stored).transpose(method))
    assert (mask == expected).all()
    assert (mask[:32].all() and not mask[32:].any()) if orientation == 6 else (mask[64:].all() and not mask[:64].any())


def test_a_mask_of_the_displayed_size_is_used_as_it_is(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    raw = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    raw.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    (tmp_path / "masks").mkdir()
    shown = np.zeros((96, 64), np.uint8)
    shown[:, :20] = 255
    Image.fromarray(shown).save(tmp_path / "masks" / "photo.png")
    (tmp_path / "m.yaml").write_text(YAML)
    run_manifest(tmp_path, config, "run")
    assert (_kept_mask(tmp_path) == shown).all()
