"""A job folder loads as a Hugging Face dataset as it is; with keep_sources, as before/after pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import PHOTOS, batch_edit

MANIFEST = f"""
defaults:
  num_inference_steps: 4
  strength: 0.6
  width: 64
  height: 48
jobs:
  - name: pairs
    keep_sources: true
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "rocket.jpg"}]
    prompts: ['a tiger, photo', 'a watercolor']
    seed: [1, 2]
  - name: plain
    sources: {PHOTOS / "coffee.jpg"}
    prompts: a cup of tea
    seed: [1, 2, 3]
"""


def test_job_folders_load_with_the_imagefolder_loader(tmp_path, tiny_config):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    plain = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out" / "plain"), split="train")
    assert plain.num_rows == 3 and {"image", "prompt", "seed", "item_id"} <= set(plain.features)
    assert sorted(plain["seed"]) == [1, 2, 3] and plain[0]["image"].size == (64, 48)

    folder = tmp_path / "out" / "pairs"
    metadata = pd.read_csv(folder / "metadata.csv")
    assert len(metadata) == 8 and metadata["source_image_file_name"].nunique() == 2  # one file per fitted source
    pairs = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert pairs.num_rows == 8
    assert type(pairs.features["source_image"]).__name__ == "Image"
    assert isinstance(pairs[0]["source"], str)  # the source path column stays a string
    row = pairs[0]
    assert row["image"].size == row["source_image"].size == (64, 48)
