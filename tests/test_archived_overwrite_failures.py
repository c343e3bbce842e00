"""An archived item (its source deleted once done) stays done after an --overwrite failed it: later runs skip it,
`plan` lists its source as gone (not missing), failures.csv does not list it, metadata.csv and `prune` keep its
result."""

from __future__ import annotations

import pandas as pd

from .conftest import noise_image as _image, run_manifest as _run

YAML = """jobs:
  - {name: arch, sources: {sources}, prompts: x, width: 64, height: 64, num_inference_steps: 2, strength: 0.5,
     keep_sources: true, format: jpeg}
"""


def _rows(tmp_path, name: str) -> list[str]:
    return pd.read_csv(tmp_path / "out" / "arch" / name, dtype=str)["source"].tolist()


def _check_archived_item_stays_done(tmp_path, config, sources: str) -> None:
    _image(tmp_path / "img" / "cat.png", 1)
    _image(tmp_path / "img" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.replace("{sources}", sources))
    _run(tmp_path, config, "run")
    listed = pd.read_csv(tmp_path / "out" / "arch" / "metadata.csv", dtype=str)["file_name"].tolist()
    (tmp_path / "img" / "dog.png").unlink()
    assert "file not found: 1" in _run(tmp_path, config, "run", "--overwrite", code=1)

    for _ in range(2):  # every later plain run: nothing to do, exit 0
        out = _run(tmp_path, config, "run")
        assert "failed (" not in out, out
        assert "nothing to do" in out, out
    planned = _run(tmp_path, config, "plan")
    assert "2 item(s), 2 already done" in planned, planned
    assert "missing" not in planned and "gone: 1 source file(s)" in planned, planned
    assert _rows(tmp_path, "failures.csv") == []
    assert sorted(pd.read_csv(tmp_path / "out" / "arch" / "metadata.csv", dtype=str)["file_name"]) == sorted(listed)
    pruned = _run(tmp_path, config, "prune", "--dry-run")
    assert "would move 0" in pruned and "kept 2" in pruned, pruned
    _run(tmp_path, config, "prune")
    assert all((tmp_path / "out" / "arch" / name).is_file() for name in listed)


def test_an_archived_folder_file_stays_done_after_a_failed_overwrite(tmp_path, tiny_config):
    _check_archived_item_stays_done(tmp_path, tiny_config, "img/")


def test_an_archived_file_listed_by_name_stays_done_after_a_failed_overwrite(tmp_path, tiny_config):
    _check_archived_item_stays_done(tmp_path, tiny_config, "[img/cat.png, img/dog.png]")
