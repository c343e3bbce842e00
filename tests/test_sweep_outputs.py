"""A sweep job end to end: its images carry their parameters, its folder is a dataset, it has a contact sheet."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from .conftest import PHOTOS, batch_edit

PROMPT = 'a "tiger" on a table: photo, 35mm, warm light'
SWEEP = f"""
jobs:
  - name: sweep
    sources: {PHOTOS / "coffee.jpg"}
    prompts: '{PROMPT}'
    strength: [0.5, 0.75]
    num_inference_steps: [4, 6]
    seed: [1, 2]
    width: 64
    height: 64
"""


def test_sweep_reads_back_as_automatic1111_parameters_loads_as_a_dataset_and_has_a_sheet(tmp_path, tiny_config):
    sd_parsers = pytest.importorskip("sd_parsers")
    datasets = pytest.importorskip("datasets")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    result = batch_edit("run", "sweep.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "sweep"
    metadata = pd.read_csv(folder / "metadata.csv")
    assert len(metadata) == 8

    parser = sd_parsers.ParserManager()
    for row in metadata.itertuples():
        with Image.open(folder / row.file_name) as image:
            info = parser.parse(image)
        (sampler,) = info.samplers
        assert sampler.prompts[0].value == row.prompt == PROMPT
        assert int(sampler.parameters["seed"]) == row.seed
        assert int(sampler.parameters["steps"]) == row.num_inference_steps
        assert float(info.metadata["Denoising strength"]) == row.strength
        assert (
            float(info.metadata["Distilled CFG Scale"]) == row.guidance_scale and sampler.parameters["cfg_scale"] == "1"
        )

    dataset = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert dataset.num_rows == 8 and sorted(dataset["item_id"]) == sorted(metadata["item_id"])

    (sheet,) = folder.glob("contact-sheet*.png")
    with Image.open(sheet) as image:
        assert image.width > 64 * 2 and image.height > 64 * 2  # the source plus a labelled grid of results
