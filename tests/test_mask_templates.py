"""Mask templates (`masks: masks/{stem}_mask.png`): {stem} filled in as it is, and a folder where a template
names a source's mask that source's missing mask, not a refusal of the manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifest

from .conftest import batch_edit
from .conftest import image_file as image


@pytest.fixture
def folder(tmp_path) -> Path:
    for stem in ("cat", "dog"):
        image(tmp_path / "photos" / f"{stem}.jpg", color=(40, 90, 140))
    image(tmp_path / "masks" / "cat_mask.png", mode="L", box=(8, 8, 40, 30))
    return tmp_path


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        ("masks/{stem:>3}_mask.png", "{stem:>3}: a format spec ':>3' is not supported in a mask template"),
        ("masks/{stem!r}_mask.png", "{stem!r}: a conversion '!r' is not supported in a mask template"),
        ("masks/{stem_mask.png", "malformed placeholder"),
    ],
)
def test_a_mask_template_takes_stem_as_it_is(folder, template, refused):
    """A spec would pad or cut the stem (`{stem:>3}` looks for '  a_mask.png'), as prompts refuse it."""
    (folder / "m.yaml").write_text(f"jobs: [{{name: a, sources: photos, prompts: x, masks: '{template}'}}]\n")
    with pytest.raises(ManifestError) as error:
        load_manifest(folder / "m.yaml")
    assert f"m.yaml: jobs[0] ('a'): field 'masks': mask template '{template}': " in str(error.value)
    assert refused in str(error.value)


def test_a_folder_where_a_template_names_a_mask_fails_that_sources_items_only(folder, tiny_task_config):
    (folder / "masks" / "dog_mask.png").mkdir()  # as a mask not there: the other sources' items run
    (folder / "m.yaml").write_text(
        "jobs: [{name: a, sources: photos, prompts: x, masks: 'masks/{stem}_mask.png', num_inference_steps: 2, "
        "strength: 0.5, width: 64, height: 48}]\n"
    )
    config = str(tiny_task_config("inpaint"))
    planned = batch_edit("plan", "m.yaml", "--pipeline", config, cwd=folder)
    assert "without a mask: 1 source(s): " in planned.stdout, planned.stdout + planned.stderr
    assert "is a folder" not in planned.stderr
    result = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=folder)
    assert result.returncode == 1, result.stderr  # one item failed
    assert [Path(source).stem for source in pd.read_csv(folder / "out" / "a" / "metadata.csv")["source"]] == ["cat"]
    (error,) = pd.read_csv(folder / "out" / "a" / "failures.csv")["error"]
    assert error == f"mask: {(folder / 'masks' / 'dog_mask.png').as_posix()} is a folder, not an image file"
