"""A crash while a result's record line was appended leaves that line cut short: the result is there, its record
not. The next run makes the item again and moves the file to .batch-edit/pruned/ first (nothing is lost); its
summary says the file is the job's own result whose record was cut short or lost, not a file it did not make."""

from __future__ import annotations

import json

from PIL import Image

from batch_edit.formats import embedded_record

from .conftest import PHOTOS, run_manifest

YAML = f"""jobs:
  - name: jpg
    sources: {PHOTOS / "coffee.jpg"}
    prompts: a tiger
    strength: [0.6, 0.8]
    num_inference_steps: 2
    width: 64
    height: 64
    format: jpeg
"""


def test_a_result_whose_record_line_was_cut_is_said_to_be_the_jobs_own(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(YAML)
    run_manifest(tmp_path, tiny_config, "run")
    folder = tmp_path / "out" / "jpg"
    records = folder / ".batch-edit" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    cut = json.loads(lines[-1])
    records.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a crash mid-append

    ran = run_manifest(tmp_path, tiny_config, "run")
    assert "it did not make" not in ran, ran
    line = (
        f"job jpg: moved 1 result(s) of its own whose record was cut short or lost (a crash as it was recorded) to "
        f".batch-edit/pruned/ and made them again: {cut['file_name']}"
    )
    assert line in ran, ran
    with Image.open(folder / ".batch-edit" / "pruned" / cut["file_name"]) as moved:
        assert embedded_record(moved)["item_id"] == cut["item_id"]  # the job's own result, kept
    assert "nothing to do" in run_manifest(tmp_path, tiny_config, "run")
