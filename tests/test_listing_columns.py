"""metadata.csv's and failures.csv's columns follow the job (its masks, its task, `keep_sources`), not which of
its items happen to have succeeded or failed; and `keep_sources` turned on in a job with finished items gives
them their fitted copies at the next run, without rendering them again."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from batch_edit.job_listing import METADATA_COLUMNS

from .conftest import batch_edit

MASK_COLUMNS = ["mask_blur", "mask_padding", "composite"]


def sources(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "src").mkdir()
    (folder / "masks").mkdir()
    for stem in "ab":
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "src" / f"{stem}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "masks" / "black.png")


def run(folder: Path, config, manifest: str) -> str:
    (folder / "m.yaml").write_text(
        "output_root: out\ndefaults: {width: 64, height: 64, num_inference_steps: 2, strength: 0.5, seed: 3}\n"
        + manifest
    )
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), cwd=folder)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.stderr


def header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- columns follow the job


def test_a_masked_job_has_its_mask_and_task_columns_whatever_succeeded_or_failed(tmp_path, tiny_task_config):
    sources(tmp_path)
    run(
        tmp_path,
        tiny_task_config("inpaint"),
        """jobs:
  - {name: ok, sources: src/a.png, masks: masks/a.png, prompts: x}
  - {name: allfail, sources: src/a.png, masks: masks/black.png, prompts: x}
  - {name: kept, sources: src/a.png, masks: masks/black.png, prompts: x, keep_sources: true}
""",
    )
    out = tmp_path / "out"
    masked = ["task", *MASK_COLUMNS, "mask"]
    assert header(out / "ok" / "metadata.csv") == [*METADATA_COLUMNS, *masked]
    assert header(out / "allfail" / "metadata.csv") == [*METADATA_COLUMNS, *masked]  # nothing succeeded
    assert header(out / "ok" / "failures.csv")[-4:] == [*MASK_COLUMNS, "mask"]  # nothing failed
    assert pd.read_csv(out / "ok" / "failures.csv").empty and "mask" in pd.read_csv(out / "ok" / "failures.csv")
    # a job keeping its sources: the columns its results will have, image columns for imagefolder
    expected = [*METADATA_COLUMNS, "task", "source_image_file_name", *MASK_COLUMNS, "mask_file_name"]
    assert header(out / "kept" / "metadata.csv") == expected


def test_a_plain_img2img_job_keeps_the_columns_it_always_had(tmp_path, tiny_config):
    sources(tmp_path)
    (tmp_path / "src" / "bad.png").write_bytes(b"not a png")
    run(tmp_path, tiny_config, "jobs:\n  - {name: plain, sources: [src/a.png, src/bad.png], prompts: x}\n")
    assert header(tmp_path / "out" / "plain" / "metadata.csv") == METADATA_COLUMNS
    assert "mask" not in header(tmp_path / "out" / "plain" / "failures.csv")


# ---------------------------------------------------------------- keep_sources turned on later


LATE = """jobs:
  - {{name: late, sources: "src/[ab].png", masks: "masks/{{stem}}.png", prompts: x{keep}}}
  - {{name: early, sources: "src/[ab].png", masks: "masks/{{stem}}.png", prompts: x, keep_sources: true}}
"""


def test_keep_sources_turned_on_later_gives_finished_items_the_copies_a_new_result_has(tmp_path, tiny_task_config):
    sources(tmp_path)
    config = tiny_task_config("inpaint")
    run(tmp_path, config, LATE.format(keep=""))
    late, early = tmp_path / "out" / "late", tmp_path / "out" / "early"
    image = (late / pd.read_csv(late / "metadata.csv").file_name[0]).read_bytes()
    before = records(late)
    stderr = run(tmp_path, config, LATE.format(keep=", keep_sources: true"))
    assert "WARNING" not in stderr, stderr

    rows, fresh = pd.read_csv(late / "metadata.csv"), pd.read_csv(early / "metadata.csv")
    assert header(late / "metadata.csv") == header(early / "metadata.csv")  # mask_file_name: every row has one
    for column in ("source_image_file_name", "mask_file_name"):
        assert list(rows[column]) == list(fresh[column])  # named as a new result names them
        for name in rows[column]:
            assert (late / name).read_bytes() == (early / name).read_bytes()  # the very copy the run fits
    assert (late / rows.file_name[0]).read_bytes() == image  # nothing rendered again
    after = records(late)
    assert after[: len(before)] == before and len(after) == len(before) + 2  # appended, one per item
    kept_fields = {"source_image_file_name", "source_image_pixels_sha256", "mask_file_name", "mask_image_pixels_sha256"}
    for old, new in zip(before, after[len(before) :]):
        assert {k: v for k, v in new.items() if k not in kept_fields | {"sources_kept_at"}} == old
    # the items stay done: a third run renders nothing and appends nothing
    run(tmp_path, config, LATE.format(keep=", keep_sources: true"))
    assert records(late) == after


def test_a_deleted_kept_copy_comes_back_and_a_changed_source_gives_one_warning(tmp_path, tiny_task_config):
    sources(tmp_path)
    config = tiny_task_config("inpaint")
    run(tmp_path, config, LATE.format(keep=""))
    late = tmp_path / "out" / "late"
    # both sources' content changed, their size and mtime kept: the plan reuses the recorded hashes, so the items
    # still count as finished, but their fitted copies would not be the run's
    originals = {}
    for stem in "ab":
        path = tmp_path / "src" / f"{stem}.png"
        seen, originals[path] = os.stat(path), path.read_bytes()
        changed = bytearray(originals[path])
        changed[len(changed) // 2] ^= 0xFF
        path.write_bytes(bytes(changed))
        os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    stderr = run(tmp_path, config, LATE.format(keep=", keep_sources: true"))
    warnings = [line for line in stderr.splitlines() if "no fitted copy under sources/" in line]
    assert len(warnings) == 1 and "job 'late': 2 finished item(s)" in warnings[0], stderr
    assert (tmp_path / "src" / "a.png").as_posix() in warnings[0] and "run --overwrite" in warnings[0]
    assert "source_image_file_name" not in header(late / "metadata.csv")  # as before: no empty cells

    early = tmp_path / "out" / "early"
    kept = early / pd.read_csv(early / "metadata.csv").source_image_file_name[0]
    copy = kept.read_bytes()
    kept.unlink()
    for path, data in originals.items():  # the content back: a deleted kept copy is written again, no new record
        path.write_bytes(data)
    before = records(early)
    run(tmp_path, config, LATE.format(keep=", keep_sources: true"))
    assert kept.read_bytes() == copy
    now = records(early)
    # the sources were rewritten (new mtimes, content recorded before): each finished item gets its record once
    # again with the new stat, for the same result; nothing else is appended
    assert now[: len(before)] == before
    again = {(r["item_id"], r["file_name"], r["status"]) for r in now[len(before) :]}
    assert again <= {(r["item_id"], r["file_name"], "ok") for r in before if r["status"] == "ok"}, again
