"""A folder sitting where an item's result file (or its caption file) goes is that item's failure, naming the path:
the job's other results are written, the summary counts it, and the run ends with exit 1, not 3."""

from __future__ import annotations

import csv

from .conftest import PHOTOS, run_manifest

MANIFEST = f"""
jobs:
  - name: j
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "rocket.jpg"}, {PHOTOS / "coffee.jpg"}]
    prompts: a tiger
    file_name: "{{stem}}"
    width: 32
    height: 32
    num_inference_steps: 2
    seed: 1
    captions: true
"""


def _failures(job):
    with open(job / "failures.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_at_a_result_name_fails_that_item_only(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    job = tmp_path / "out" / "j"
    (job / "rocket.png").mkdir(parents=True)
    (job / "rocket.png" / "mine.txt").write_text("kept")
    out = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert "2 written" in out and "1 failed (a folder is where the result file goes: 1)" in out, out
    assert (job / "cat.png").is_file() and (job / "coffee.png").is_file()
    assert (job / "rocket.png" / "mine.txt").read_text() == "kept"
    [row] = _failures(job)
    assert row["stage"] == "write"
    assert row["error"] == f"cannot write {job / 'rocket.png'}: a folder is there (move or rename it, then run again)"
    assert not (job / "rocket.txt").exists()
    # once the folder is moved away, the next run makes the item and nothing else
    (job / "rocket.png" / "mine.txt").unlink()
    (job / "rocket.png").rmdir()
    out = run_manifest(tmp_path, tiny_config, "run")
    assert "1 written, 2 already done, 0 failed" in out, out
    assert (job / "rocket.png").is_file() and (job / "rocket.txt").read_text() == "a tiger"
    assert _failures(job) == []


def test_a_folder_at_a_caption_name_fails_the_item_before_its_result_is_written(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    job = tmp_path / "out" / "j"
    (job / "cat.txt").mkdir(parents=True)
    out = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert "2 written" in out and "1 failed" in out, out
    assert not (job / "cat.png").exists()
    [row] = _failures(job)
    assert row["error"].startswith(f"cannot write {job / 'cat.txt'}: a folder is there")
