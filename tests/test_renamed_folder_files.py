"""A photo renamed inside a job's source folder: `plan` and `run` say its item runs again because it was made
before at another path; once made, `plan` says the old result duplicates it and `prune` moves the old result (its
caption and kept copy) out, after which the old path is no longer planned. A file gone with no such twin stays
archived (done, kept)."""

from __future__ import annotations

import pandas as pd

from .conftest import noise_image as _image, run_manifest as _run

YAML = """jobs:
  - {name: ren, sources: img/, prompts: x, seed: 5, width: 64, height: 64, num_inference_steps: 2, strength: 0.5,
     keep_sources: true, captions: true}
"""


def _listed(tmp_path) -> dict[str, str]:
    table = pd.read_csv(tmp_path / "out" / "ren" / "metadata.csv", dtype=str)
    return dict(zip(table.source.str.rsplit("/", n=1).str[-1], table.file_name))


def test_a_photo_renamed_in_the_folder_is_noted_and_its_old_result_retired_by_prune(tmp_path, tiny_config):
    _image(tmp_path / "img" / "a.png", 1)
    _image(tmp_path / "img" / "b.png", 2)
    _image(tmp_path / "img" / "c.png", 3)
    (tmp_path / "m.yaml").write_text(YAML)
    _run(tmp_path, tiny_config, "run")
    old = _listed(tmp_path)
    folder = tmp_path / "out" / "ren"
    (tmp_path / "img" / "a.png").rename(tmp_path / "img" / "cat.png")
    (tmp_path / "img" / "c.png").unlink()  # archived: no twin, its result stays

    for command in ("plan", "run"):
        said = _run(tmp_path, tiny_config, command)
        assert "1 item(s) to run were made before from the same images at another path" in said, said
    assert set(_listed(tmp_path)) == {"a.png", "b.png", "c.png", "cat.png"}

    planned = _run(tmp_path, tiny_config, "plan")
    assert "1 result(s) of files the job's folder or glob no longer finds duplicate results" in planned, planned
    dry = _run(tmp_path, tiny_config, "prune", "--dry-run")
    assert f"would move {old['a.png']}" in dry and "renamed to" in dry and "cat.png" in dry, dry
    assert old["c.png"] not in dry
    _run(tmp_path, tiny_config, "prune")
    assert set(_listed(tmp_path)) == {"b.png", "c.png", "cat.png"}
    assert (folder / ".batch-edit" / "pruned" / old["a.png"]).is_file()
    assert not (folder / old["a.png"]).exists() and not (folder / old["a.png"].replace(".png", ".txt")).exists()
    assert (folder / old["c.png"]).is_file()
    after = _run(tmp_path, tiny_config, "plan")
    assert "3 item(s), 3 already done" in after and "a.png" not in after, after
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")
