"""What a refused `file_name` says: names, templates and source stems echoed as other user text is (cut after
80 characters, with their full length), however long the names a template makes."""

from __future__ import annotations

import shutil

from .conftest import PHOTOS, batch_edit


def test_a_long_clashing_name_and_its_source_are_echoed_cut(tmp_path, tiny_config):
    stem = "s" * 120
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / f"{stem}.jpg")
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: a, sources: {stem}.jpg, prompts: x, seed: [1, 2], file_name: '{{job}}{{stem}}{{stem}}'}}]\n"
    )
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    name = "a" + stem[:48] * 2  # {stem} in a name: the stem made safe, its first 48 characters
    assert f"gives two items the name '{name[:80]}… ({len(name)} characters)': " in result.stderr
    assert f"({stem[:80]}… (120 characters), seed 1)" in result.stderr  # what tells the two apart
    assert stem[:81] not in result.stderr
