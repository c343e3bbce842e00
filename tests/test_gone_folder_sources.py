"""Sources a folder or glob gave, moved out once their items were done, keep those items (done, listed, kept by
`prune`), as sources listed by name do; a folder or glob left empty stands for them; one that never matched
anything is refused. A source gone keeps the content it had when last seen. A glob matching no image because of
case says so."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from .conftest import noise_image as _image, run_manifest as _run

YAML = """jobs:
  - {{name: arch, sources: {sources}, prompts: x, seed: 5, width: 64, height: 64, num_inference_steps: 2,
     strength: 0.5}}
"""


def _listed(tmp_path) -> list[list[str]]:
    return pd.read_csv(tmp_path / "out" / "arch" / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist()


@pytest.mark.parametrize("sources", ["img7/", "'img7/*.*'"])
def test_images_moved_out_of_a_folder_or_glob_keep_their_finished_items(tmp_path, tiny_config, sources):
    _image(tmp_path / "img7" / "cat.jpg", 1)
    _image(tmp_path / "img7" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.format(sources=sources))
    _run(tmp_path, tiny_config, "run")
    made = _listed(tmp_path)
    assert len(made) == 2
    (tmp_path / "archive").mkdir()
    shutil.move(tmp_path / "img7" / "dog.png", tmp_path / "archive" / "dog.png")

    planned = _run(tmp_path, tiny_config, "plan")
    assert "2 item(s), 2 already done" in planned, planned
    assert "not in the plan" not in _run(tmp_path, tiny_config, "prune", "--dry-run")
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) == made

    shutil.move(tmp_path / "img7" / "cat.jpg", tmp_path / "archive" / "cat.jpg")  # the folder left empty
    planned = _run(tmp_path, tiny_config, "plan")
    assert "2 item(s), 2 already done" in planned, planned
    assert "matches no image" not in planned
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")
    assert "not in the plan" not in _run(tmp_path, tiny_config, "prune", "--dry-run")
    assert _listed(tmp_path) == made
    assert all((tmp_path / "out" / "arch" / name).is_file() for _, name in made)

    shutil.rmtree(tmp_path / "img7")  # the folder removed too
    assert "2 item(s), 2 already done" in _run(tmp_path, tiny_config, "plan")
    _run(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) == made


def test_a_file_gone_from_a_folder_made_again_with_overwrite_fails_and_keeps_its_result(tmp_path, tiny_config):
    _image(tmp_path / "img7" / "cat.jpg", 1)
    _image(tmp_path / "img7" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="img7"))
    _run(tmp_path, tiny_config, "run")
    made = _listed(tmp_path)
    (tmp_path / "img7" / "dog.png").unlink()
    assert "file not found: 1" in _run(tmp_path, tiny_config, "run", "--overwrite", code=1)
    assert _listed(tmp_path) == made  # its result stays, and the file stays in the plan, as a file listed does
    # and it is still done: no run could make it again (tests/test_archived_overwrite_failures.py)
    assert "2 item(s), 2 already done" in _run(tmp_path, tiny_config, "plan")
    assert "not in the plan" not in _run(tmp_path, tiny_config, "prune", "--dry-run")


def test_a_file_of_the_same_name_back_in_the_folder_is_a_new_source(tmp_path, tiny_config):
    _image(tmp_path / "img7" / "cat.jpg", 1)
    _image(tmp_path / "img7" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="img7"))
    _run(tmp_path, tiny_config, "run")
    made = dict(_listed(tmp_path))
    (tmp_path / "img7" / "dog.png").unlink()
    _image(tmp_path / "img7" / "dog.png", 3)  # other content under the same name
    assert "2 item(s), 1 already done" in _run(tmp_path, tiny_config, "plan")
    _run(tmp_path, tiny_config, "run")
    now = dict(_listed(tmp_path))
    assert len(now) == 2 and len(set(now) & set(made)) == 1
    assert "not in the plan" in _run(tmp_path, tiny_config, "prune", "--dry-run")  # the old dog result


def test_a_folder_or_glob_that_never_matched_an_image_is_still_refused(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.yaml").write_text(YAML.format(sources="empty"))
    out = _run(tmp_path, tiny_config, "plan", code=2)
    assert "field 'sources[0]': source 'empty' matches no image" in out, out
    _image(tmp_path / "img7" / "cat.jpg", 1)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="img7"))
    _run(tmp_path, tiny_config, "run")
    (tmp_path / "m.yaml").write_text(YAML.format(sources="[img7, empty, 'img7/*.gif']"))  # a job with records
    out = _run(tmp_path, tiny_config, "plan", code=2)
    assert "field 'sources[1]': source 'empty' matches no image" in out, out
    assert "field 'sources[2]': source 'img7/*.gif' matches no image" in out, out


@pytest.mark.parametrize("old_time", [False, True], ids=["copied-back", "restored-with-its-time"])
def test_a_gone_source_keeps_the_content_it_had_when_last_seen(tmp_path, tiny_config, old_time):
    _image(tmp_path / "img4" / "cat.jpg", 1)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="img4/cat.jpg"))
    original = (tmp_path / "img4" / "cat.jpg").read_bytes()
    first_time = (tmp_path / "img4" / "cat.jpg").stat().st_mtime_ns
    _run(tmp_path, tiny_config, "run")
    first = _listed(tmp_path)
    _image(tmp_path / "img4" / "cat.jpg", 2)
    _run(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) != first
    (tmp_path / "img4" / "cat.jpg").write_bytes(original)  # back to the first content
    if old_time:  # as `cp -p` or a backup restores it: the size and time the first run recorded
        os.utime(tmp_path / "img4" / "cat.jpg", ns=(first_time, first_time))
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) == first
    records = (tmp_path / "out" / "arch" / ".batch-edit" / "records.jsonl").read_bytes()
    assert "nothing to do" in _run(tmp_path, tiny_config, "run")
    assert (tmp_path / "out" / "arch" / ".batch-edit" / "records.jsonl").read_bytes() == records  # nothing new
    (tmp_path / "img4" / "cat.jpg").unlink()
    _run(tmp_path, tiny_config, "run")
    assert _listed(tmp_path) == first
    assert first[0][1] not in _run(tmp_path, tiny_config, "prune", "--dry-run")


def test_a_glob_missing_files_by_case_says_globs_are_case_sensitive(tmp_path, tiny_config):
    _image(tmp_path / "cam" / "IMG_0001.JPG", 1)
    (tmp_path / "m.yaml").write_text(YAML.format(sources="'cam/*.jpg'"))
    out = _run(tmp_path, tiny_config, "plan", code=2)
    assert "matches no image" in out and "globs are case-sensitive" in out and "IMG_0001.JPG" in out, out


def test_a_masked_source_moved_out_of_its_folder_keeps_its_items_with_its_mask(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    for seed, stem in enumerate(("cat", "dog")):
        _image(tmp_path / "img7" / f"{stem}.png", seed)
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[8:40, 8:40] = 255
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "m.yaml").write_text(
        YAML.format(sources="img7").replace("strength: 0.5}", "strength: 0.5, masks: masks}")
    )
    _run(tmp_path, config, "run")
    made = _listed(tmp_path)
    shutil.move(tmp_path / "img7" / "cat.png", tmp_path / "cat.archived.png")  # first by path: listed first still
    assert "2 item(s), 2 already done" in _run(tmp_path, config, "plan")
    assert "not in the plan" not in _run(tmp_path, config, "prune", "--dry-run")
    assert "nothing to do" in _run(tmp_path, config, "run")
    assert _listed(tmp_path) == made  # in the same order
