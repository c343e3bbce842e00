"""An archived item (its source deleted once done) whose --overwrite failed keeps that failure as its outcome when
its result, unchanged, is found under a new modification time (touched): the failure is appended again carrying
the time, never a success, so once its source is back a run retries it as it would untouched; the file is read
once, not at every run."""

from __future__ import annotations

import json
import os

import pandas as pd

from .conftest import noise_image, run_manifest

YAML = """jobs:
  - {name: arch, sources: [img/cat.png, img/dog.png], prompts: x, width: 32, height: 32, num_inference_steps: 2,
     strength: 0.5, seed: 1, file_name: "{stem}"}
"""


def _latest(job, item_id: str) -> dict:
    lines = (job / ".batch-edit" / "records.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["item_id"] == item_id][-1]


def test_a_touched_archived_result_keeps_the_failure_after_it(tmp_path, tiny_config):
    for seed, name in enumerate(("cat", "dog")):
        noise_image(tmp_path / "img" / f"{name}.png", seed)
    (tmp_path / "m.yaml").write_text(YAML)
    job = tmp_path / "out" / "arch"
    run_manifest(tmp_path, tiny_config, "run")
    dog_id = pd.read_csv(job / "metadata.csv", dtype=str).set_index("file_name").loc["dog.png", "item_id"]
    kept = tmp_path / "dog.png"
    kept.write_bytes((tmp_path / "img" / "dog.png").read_bytes())
    (tmp_path / "img" / "dog.png").unlink()
    assert "file not found: 1" in run_manifest(tmp_path, tiny_config, "run", "--overwrite", code=1)
    assert _latest(job, dog_id)["status"] == "failed"

    result = job / "dog.png"
    os.utime(result, ns=(result.stat().st_atime_ns, result.stat().st_mtime_ns + 5_000_000_000))
    out = run_manifest(tmp_path, tiny_config, "run")
    assert "nothing to do" in out, out
    latest = _latest(job, dog_id)
    assert latest["status"] == "failed", latest  # not a success hiding the failure
    assert latest["verified_result"]["file_mtime_ns"] == result.stat().st_mtime_ns
    lines = (job / ".batch-edit" / "records.jsonl").read_text().count("\n")
    run_manifest(tmp_path, tiny_config, "run")  # the new time is recorded: nothing appended again
    assert (job / ".batch-edit" / "records.jsonl").read_text().count("\n") == lines
    assert pd.read_csv(job / "failures.csv").empty  # archived: done by its result, not listed

    (tmp_path / "img" / "dog.png").write_bytes(kept.read_bytes())  # the source back: its failure is retried
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "2 item(s), 1 already done" in planned, planned
    out = run_manifest(tmp_path, tiny_config, "run")
    assert "1 written, 1 already done, 0 failed" in out, out
