"""What README tells a newcomer about a CSV's caption cell and `fit` at extreme aspect ratios, checked."""

from __future__ import annotations

import shutil

from batch_edit.manifest import load_manifest
from batch_edit.sources import fit_size

from .conftest import PHOTOS


def test_a_csv_caption_cell_is_used_instead_of_the_txt_and_an_empty_one_falls_back_to_it(tmp_path):
    for stem in ("cat", "rocket"):
        shutil.copy(PHOTOS / "cat.jpg", tmp_path / f"{stem}.jpg")
        (tmp_path / f"{stem}.txt").write_text(f"the {stem} file's caption")
    (tmp_path / "rows.csv").write_text(
        'source,prompt,caption\ncat.jpg,"{caption}, watercolor",a tabby cat\nrocket.jpg,"{caption}, at night",\n'
    )
    [job] = load_manifest(tmp_path / "rows.csv").jobs
    captions = [ref.caption for grid in job.grids for ref in grid.sources]
    assert captions == ["a tabby cat", "the rocket file's caption"]


def test_fit_keeps_each_side_within_16_to_4096_whatever_the_aspect_ratio():
    assert fit_size(600, 400, 1024, 1024, "fit") == (1248, 832)  # area close to the one asked
    assert fit_size(2, 20000, 64, 64, "fit") == (16, 4096)  # neither that area nor that ratio
