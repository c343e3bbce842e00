"""A source changed in place with its size and mtime kept (`touch -r`, `cp -p`, `exiftool -P`) is not noticed by
planning (size and mtime stand for the content recorded), but a run that loads it and finds other bytes fails
that item and makes the next plan read the file again: a re-run then makes its items from the new content,
instead of failing the same way at every run."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .conftest import batch_edit

YAML = """jobs:
  - {{name: j, sources: [a.bmp], prompts: {prompts}, width: 32, height: 32, num_inference_steps: 2, strength: 0.5}}
"""


def _run(tmp_path, config, code: int) -> str:
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_source_changed_with_its_size_and_mtime_kept_is_read_again_after_the_failure(tmp_path, tiny_config):
    source = tmp_path / "a.bmp"  # uncompressed: new pixels, the same size
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(source)
    (tmp_path / "m.yaml").write_text(YAML.format(prompts="[x]"))
    assert "1 written" in _run(tmp_path, tiny_config, 0)
    before = os.stat(source)
    Image.fromarray(np.full((64, 96, 3), 200, np.uint8)).save(source)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(source).st_size == before.st_size
    (tmp_path / "m.yaml").write_text(YAML.format(prompts="[x, y]"))

    failed = _run(tmp_path, tiny_config, 1)  # the new item is planned from the content recorded: its load fails
    assert "1 already done" in failed and "1 failed" in failed, failed
    again = _run(tmp_path, tiny_config, 0)  # read again: both prompts' items of the new content are made
    assert "2 written" in again and "0 failed" in again, again
    assert "nothing to do" in _run(tmp_path, tiny_config, 0)
