"""A job's `format` or `file_name` changed after one of its sources was archived (deleted once done): the archived
item keeps its result under the name it has (still done, listed in metadata.csv, kept by `prune` with its kept
copy and caption), and `plan`/`run` say so; the other items are made again, and `plan` says why."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import noise_image as _image, run_manifest as _run

YAML = """jobs:
  - name: arch
    sources: img/
    prompts: x
    width: 64
    height: 64
    num_inference_steps: 2
    strength: 0.5
    keep_sources: true
    captions: true
"""


def _listed(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "out" / "arch" / "metadata.csv", dtype=str)


@pytest.mark.parametrize("change", ["    format: webp\n", '    file_name: "{stem}-s{seed}"\n'])
def test_an_archived_item_keeps_its_result_when_the_job_names_results_otherwise(tmp_path, tiny_config, change):
    _image(tmp_path / "img" / "cat.png", 1)
    _image(tmp_path / "img" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML)
    _run(tmp_path, tiny_config, "run")
    before = _listed(tmp_path)
    dog = before[before.source.str.endswith("dog.png")].iloc[0]
    folder = tmp_path / "out" / "arch"
    (tmp_path / "img" / "dog.png").unlink()
    (tmp_path / "m.yaml").write_text(YAML + change)

    planned = _run(tmp_path, tiny_config, "plan")
    assert "2 item(s), 1 already done" in planned, planned
    assert "missing" not in planned and "gone: 1 source file(s)" in planned, planned
    kept = f"1 archived item(s) keep their result under the name or format the job gave it before ({dog.file_name})"
    assert kept in planned, planned
    why = (
        "only because the job's file_name now names them otherwise"
        if "file_name" in change
        else "in the job's new format"
    )
    again = f"1 done item(s) will be made again {why}"
    assert again in planned, planned

    ran = _run(tmp_path, tiny_config, "run")
    assert "1 written, 1 already done, 0 failed" in ran, ran
    assert "archived item(s) keep their result" in ran, ran
    after = _listed(tmp_path)
    assert dog.file_name in after.file_name.tolist()  # still listed
    assert len(after) == 2
    assert pd.read_csv(folder / "failures.csv").empty
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")

    pruned = _run(tmp_path, tiny_config, "prune")
    assert dog.file_name not in pruned and dog.source_image_file_name not in pruned, pruned
    assert (folder / dog.file_name).is_file() and (folder / dog.source_image_file_name).is_file()
    assert (folder / (dog.file_name.rsplit(".", 1)[0] + ".txt")).read_text() == "x"
    assert dog.file_name in _listed(tmp_path).file_name.tolist()
    # no caption is written for the archived item under the name the job now gives it
    assert sorted(p.name for p in folder.glob("dog*.txt")) == [dog.file_name.rsplit(".", 1)[0] + ".txt"]
