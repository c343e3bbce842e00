"""Images and their masks side by side in one folder (`cat.png`, `cat_mask.png`, a template `{stem}_mask.png`): the
files the job's mask spec pairs with its sources are not its sources too; `plan` says how many it left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from .conftest import noise_image, run_manifest

YAML = """jobs:
  - {{name: j, sources: {sources}, masks: '{masks}', prompts: p, seed: 5, width: 32, height: 32,
     num_inference_steps: 2, strength: 0.5}}
"""


def _mask(path) -> None:
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[8:40, 8:40] = 255
    Image.fromarray(pixels).save(path)


def _folder(tmp_path, sources: str, masks: str) -> None:
    for n, stem in enumerate(("cat", "dog")):
        noise_image(tmp_path / "photos" / f"{stem}.png", n)
        _mask(tmp_path / "photos" / f"{stem}_mask.png")
    (tmp_path / "m.yaml").write_text(YAML.format(sources=sources, masks=masks))


def test_masks_beside_their_images_are_not_sources(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, "photos/", "photos/{stem}_mask.png")
    planned = run_manifest(tmp_path, config, "plan")
    assert "2 item(s)" in planned, planned
    assert "without a mask" not in planned
    assert "2 file(s) taken as masks left out of the sources" in planned, planned
    assert planned.count("taken as masks") == 1
    run_manifest(tmp_path, config, "run")
    made = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv", dtype=str)
    assert sorted(made["source"].map(lambda s: s.rsplit("/", 1)[-1])) == ["cat.png", "dog.png"]
    assert "nothing to do" in run_manifest(tmp_path, config, "run")


def test_a_glob_of_the_same_folder_leaves_its_masks_out_too(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, "'photos/*.png'", "photos/{stem}_mask.png")
    planned = run_manifest(tmp_path, config, "plan")
    assert "2 item(s)" in planned and "without a mask" not in planned, planned


def test_a_mask_listed_by_name_as_a_source_stays_a_source(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, "[photos/cat.png, photos/dog.png, photos/cat_mask.png]", "photos/{stem}_mask.png")
    planned = run_manifest(tmp_path, config, "plan", code=1)  # asked for by name: its own mask is missing
    assert "3 item(s)" in planned and "without a mask: 1 source(s)" in planned, planned
    assert "taken as masks" not in planned
