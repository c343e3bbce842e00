"""`reproduce` on an item differing by at most 1/255 (float rounding: another torch thread count, batch size,
device or library version): exit 1 and the figures as for any difference, and a line saying where such tiny
differences usually come from; not said of larger differences (nor where the records show an input changed)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
from PIL import Image, PngImagePlugin

from batch_edit.reproduce import ROUNDING_NOTE

from .conftest import PHOTOS, batch_edit


def _run(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "job.yaml").write_text(
        "jobs:\n  - name: j\n    sources: photo.jpg\n    prompts: p\n    num_inference_steps: 2\n    width: 64\n"
        "    height: 64\n"
    )
    run = batch_edit("run", "job.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metadata = tmp_path / "out" / "j" / "metadata.csv"
    return metadata, next(csv.DictReader(metadata.open(encoding="utf-8")))


def _nudge(path, by: int) -> None:
    """The stored image with one pixel's red changed by `by`, its text chunks kept."""
    with Image.open(path) as stored:
        stored.load()
        text = dict(stored.text)
        pixels = np.asarray(stored.convert("RGB")).astype(np.int16)
    pixels[0, 0, 0] += by if pixels[0, 0, 0] + by <= 255 else -by
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.fromarray(pixels.astype(np.uint8)).save(path, pnginfo=info)


def test_a_difference_of_one_level_is_said_to_be_rounding_most_likely(tmp_path, tiny_config):
    metadata, row = _run(tmp_path, tiny_config)
    _nudge(metadata.parent / row["file_name"], 1)
    result = batch_edit("reproduce", str(metadata), "--item", row["item_id"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "differs from" in result.stdout and "by up to 1/255" in result.stdout
    assert ROUNDING_NOTE in result.stdout and "float rounding" in ROUNDING_NOTE


def test_a_larger_difference_gets_no_rounding_line(tmp_path, tiny_config):
    metadata, row = _run(tmp_path, tiny_config)
    _nudge(metadata.parent / row["file_name"], 40)
    result = batch_edit("reproduce", str(metadata), "--item", row["item_id"])
    assert result.returncode == 1 and "by up to 40/255" in result.stdout
    assert "float rounding" not in result.stdout
