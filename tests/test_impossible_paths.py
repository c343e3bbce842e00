"""Paths no file system takes (a name over its length limit, a NUL byte) and paths it refuses to look at (a folder
without permission): a clear error naming the path and where it was given (exit 2) where the manifest names them,
an item's own failure where only that item is affected (a mask template lengthening one long source name); never
a traceback."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image

from batch_edit.masks import pair_masks
from batch_edit.sources import expand_source, source_ref

from .conftest import batch_edit, noise_image, run_manifest

LONG = "x" * 300


def _plan(tmp_path, config, manifest: str, *more: str):
    result = batch_edit("plan", manifest, "--pipeline", str(config), *more, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_a_csv_row_naming_a_file_name_too_long_is_refused_at_its_row(tmp_path, tiny_config):
    noise_image(tmp_path / "a.png", 1)
    (tmp_path / "m.csv").write_text(f"source,prompt\n{LONG}.png,p\na.png,p\n")
    code, said = _plan(tmp_path, tiny_config, "m.csv")
    assert code == 2, said
    assert "row 1" in said and "field 'source'" in said and "too long" in said, said


@pytest.mark.parametrize(("name", "what"), [(f"{LONG}.png", "too long"), ("x\\0y.png", "NUL")])
def test_a_yaml_source_no_file_system_takes_is_refused_naming_its_field(tmp_path, tiny_config, name, what):
    noise_image(tmp_path / "a.png", 1)
    (tmp_path / "m.yaml").write_text(f'jobs:\n  - {{name: j, sources: [a.png, "{name}"], prompts: p}}\n')
    code, said = _plan(tmp_path, tiny_config, "m.yaml")
    assert code == 2, said
    assert "field 'sources[1]'" in said and what in said, said


def test_an_output_root_with_a_nul_byte_is_refused(tmp_path, tiny_config):
    noise_image(tmp_path / "a.png", 1)
    (tmp_path / "m.yaml").write_text('output_root: "o\\0ut"\njobs:\n  - {name: j, sources: a.png, prompts: p}\n')
    code, said = _plan(tmp_path, tiny_config, "m.yaml")
    assert code == 2, said
    assert "output_root" in said and "NUL" in said, said


def test_a_mask_template_making_a_name_too_long_fails_that_item_only(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    stem = "q" * 250
    noise_image(tmp_path / "photos" / f"{stem}.png", 1)
    noise_image(tmp_path / "photos" / "b.png", 2)
    (tmp_path / "masks").mkdir()
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[8:40, 8:40] = 255
    Image.fromarray(pixels).save(tmp_path / "masks" / "b_mask.png")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: j, sources: photos/, masks: 'masks/{stem}_mask.png', prompts: p, width: 32, height: 32,\n"
        "     num_inference_steps: 2}\n"
    )
    code, said = _plan(tmp_path, config, "m.yaml", "--output-root", "out")
    assert code == 1 and "without a mask: 1 source(s)" in said, said
    ran = run_manifest(tmp_path, config, "run", code=1)
    assert "1 written" in ran and "1 failed" in ran, ran
    assert "Traceback" not in ran


def test_a_source_in_a_folder_without_permission_is_no_traceback(tmp_path, monkeypatch):
    noise_image(tmp_path / "locked" / "a.png", 1)
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # as a folder without search permission answers a user that is not root
        if str(path).startswith(str(tmp_path / "locked") + "/"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    (ref,) = expand_source("locked/a.png", tmp_path)  # its item fails when loaded ("could not read file")
    assert ref.key == (tmp_path / "locked" / "a.png").as_posix() and not ref.stat
    assert source_ref("locked/a.png", tmp_path).key == ref.key
    (mask,) = pair_masks("locked/{stem}.png", tmp_path, (ref,))
    assert mask.key == ref.key
