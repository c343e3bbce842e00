"""A mask of another aspect ratio than its source (the mask of another image, most likely) is still stretched to the
source as before, but the run says so, once per mask and source size; a smaller or larger mask of the source's
shape (each side within a pixel of the source's scaled alike), or one drawn on a turned photo's stored pixels, is
said nothing of."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from batch_edit.masks import other_aspect

from .conftest import run_manifest

YAML = """jobs:
  - {name: j, sources: photos/, masks: masks/, prompts: [p, q], width: 32, height: 32, num_inference_steps: 1}
"""


@pytest.mark.parametrize(
    "mask, source, other",
    [
        ((96, 64), (96, 64), False),
        ((48, 32), (96, 64), False),  # half size
        ((333, 250), (1000, 750), False),  # a third, rounded
        ((17, 12), (1000, 750), False),  # tiny: within a pixel
        ((64, 64), (96, 64), True),
        ((64, 96), (96, 64), True),  # turned
        ((100, 70), (96, 64), True),
    ],
)
def test_other_aspect(mask, source, other):
    assert other_aspect(mask, source) is other


def _photo(path, size, exif_orientation=None):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif, quality=95)
    else:
        image.save(path)


def _mask(path, size):
    pixels = np.zeros((size[1], size[0]), np.uint8)
    pixels[:, : size[0] // 2] = 255
    Image.fromarray(pixels).save(path)


def test_a_mask_of_another_shape_is_said_once(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    _photo(tmp_path / "photos" / "wide.png", (96, 64))
    _mask(tmp_path / "masks" / "wide.png", (64, 96))  # another image's mask
    _photo(tmp_path / "photos" / "half.png", (96, 64))
    _mask(tmp_path / "masks" / "half.png", (48, 32))
    _photo(tmp_path / "photos" / "turned.jpg", (96, 64), exif_orientation=6)  # shown 64x96
    _mask(tmp_path / "masks" / "turned.png", (96, 64))  # drawn on the stored pixels
    (tmp_path / "m.yaml").write_text(YAML)
    printed = run_manifest(tmp_path, config, "run")
    said = [line for line in printed.splitlines() if "stretched to the source's shape" in line]
    assert len(said) == 1, printed  # two items (prompts p and q) use the mask: said once
    assert "masks/wide.png is 64x96" in said[0] and "photos/wide.png is 96x64" in said[0]
    assert (tmp_path / "out" / "j" / "metadata.csv").read_text().count("\n") == 7  # all six made, as before
