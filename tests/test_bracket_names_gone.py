"""A source or mask listed by name whose name holds glob characters (`shot [1].png`), deleted once its items were
done, is that file gone (archived: done, listed, kept), not a glob matching nothing that refuses the run; a CSV
cell, never a glob, naming nothing there is a file not found."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from .conftest import batch_edit, noise_image, run_manifest

YAML = """jobs:
  - {{name: j, sources: {sources}, prompts: p, seed: 5, width: 32, height: 32, num_inference_steps: 2,
     strength: 0.5}}
"""


def _listed(tmp_path, job: str = "j") -> list[list[str]]:
    return pd.read_csv(tmp_path / "out" / job / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist()


def test_a_source_with_brackets_in_its_name_deleted_is_archived(tmp_path, tiny_config):
    noise_image(tmp_path / "shot [1].png", 1)
    noise_image(tmp_path / "other.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="['shot [1].png', other.png]"))
    run_manifest(tmp_path, tiny_config, "run")
    made = _listed(tmp_path)
    (tmp_path / "shot [1].png").unlink()
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "2 item(s), 2 already done" in planned, planned
    assert "gone: 1 source file(s)" in planned, planned
    assert "not in the plan" not in run_manifest(tmp_path, tiny_config, "prune", "--dry-run")
    assert "nothing to do" in run_manifest(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) == made


def test_a_glob_that_never_matched_is_still_refused(tmp_path, tiny_config):
    noise_image(tmp_path / "other.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="['shot [1].png', other.png]"))
    planned = run_manifest(tmp_path, tiny_config, "plan", code=2)
    assert "matches no image" in planned, planned


def test_a_csv_cell_with_brackets_naming_nothing_is_a_file_not_found(tmp_path, tiny_config):
    noise_image(tmp_path / "pic [2].png", 1)
    noise_image(tmp_path / "other.png", 2)
    (tmp_path / "c.csv").write_text("source,prompt,width,height,num_inference_steps\npic [2].png,p,32,32,2\n"
                                    "other.png,p,32,32,2\n")  # fmt: skip
    args = ("c.csv", "--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit("run", *args, cwd=tmp_path).returncode == 0
    made = _listed(tmp_path, "c")
    (tmp_path / "pic [2].png").unlink()
    planned = batch_edit("plan", *args, cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "2 item(s), 2 already done" in planned.stdout + planned.stderr
    assert _listed(tmp_path, "c") == made
    (tmp_path / "new.csv").write_text("source,prompt\nnever [3].png,p\n")  # never there: the row's item fails
    never = batch_edit("plan", "new.csv", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert "is a glob" not in never.stdout + never.stderr
    assert never.returncode == 1, never.stdout + never.stderr
    assert "missing: 1 of 1 source file(s)" in never.stdout + never.stderr


def test_a_mask_with_brackets_in_its_name_deleted_is_archived(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    noise_image(tmp_path / "a.png", 1)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[8:40, 8:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask [v1].png")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: j, sources: a.png, masks: 'mask [v1].png', prompts: p, seed: 5, width: 32, height: 32,\n"
        "     num_inference_steps: 2, strength: 0.5}\n"
    )
    run_manifest(tmp_path, config, "run")
    made = _listed(tmp_path)
    (tmp_path / "mask [v1].png").unlink()
    planned = run_manifest(tmp_path, config, "plan")
    assert "1 item(s), 1 already done" in planned, planned
    assert f"gone: 1 mask file(s) of items already done (their results stay): {tmp_path / 'mask [v1].png'}" in planned
    assert "nothing to do" in run_manifest(tmp_path, config, "run")
    assert _listed(tmp_path) == made
