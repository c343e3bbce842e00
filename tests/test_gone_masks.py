"""A mask deleted (or archived) once its items were done keeps the identity last recorded for it, as a source
does: its items stay done under their ids in `plan` and `run`, `plan` says the mask is gone without calling it an
error, and `prune` keeps their results."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifest
from batch_edit.source_identity import identify_sources, recorded_hashes

from .conftest import batch_edit

YAML = """jobs:
  - {{name: masked, sources: photos, masks: '{masks}', prompts: 'a fox', seed: 5, width: 64, height: 64,
     num_inference_steps: 2, strength: 0.5}}
"""


def _folder(tmp_path, masks: str) -> None:
    rng = np.random.default_rng(0)
    for stem in ("cat", "dog"):
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{stem}.png")
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[8:40, 8:40] = 255
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "m.yaml").write_text(YAML.format(masks=masks))


def _run(tmp_path, config, *args: str, code: int = 0) -> str:
    result = batch_edit(*args, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("masks", ["masks", "masks/*.png", "masks/{stem}.png"])
def test_a_finished_item_whose_mask_went_away_stays_done_listed_and_kept_by_prune(tmp_path, tiny_task_config, masks):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, masks)
    _run(tmp_path, config, "run")
    folder = tmp_path / "out" / "masked"
    made = pd.read_csv(folder / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist()
    shutil.move(tmp_path / "masks" / "dog.png", tmp_path / "dog-mask.archived.png")

    planned = _run(tmp_path, config, "plan")  # exit 0: a run would load no mask that is gone
    assert "2 item(s), 2 already done" in planned, planned
    assert f"gone: 1 mask file(s) of items already done (their results stay): {tmp_path / 'masks' / 'dog.png'}" in (
        planned
    )
    assert "without a mask" not in planned
    assert "nothing to do" in _run(tmp_path, config, "run")
    assert pd.read_csv(folder / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist() == made
    assert "would move 0, would reject 0, kept 2" in _run(tmp_path, config, "prune", "--dry-run")

    # an item of that source not made yet still needs the mask: it is named, and its run fails at load
    (tmp_path / "m.yaml").write_text(YAML.format(masks=masks).replace("'a fox'", "['a fox', 'a wolf']"))
    planned = _run(tmp_path, config, "plan", code=1)
    assert "4 item(s), 2 already done" in planned and "without a mask: 1 source(s)" in planned, planned
    assert "gone:" not in planned
    output = _run(tmp_path, config, "run", code=1)
    assert "1 written" in output and "1 failed" in output, output
    listed = pd.read_csv(folder / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist()
    assert len(listed) == 3 and all(row in listed for row in made)
    (error,) = pd.read_csv(folder / "failures.csv")["error"]
    assert error == f"mask: file not found: {(tmp_path / 'masks' / 'dog.png').as_posix()}"

    shutil.move(tmp_path / "dog-mask.archived.png", tmp_path / "masks" / "dog.png")  # back: the item is retried
    assert "1 written" in _run(tmp_path, config, "run")


def test_a_mask_is_given_back_only_where_the_spec_would_pair_it_and_its_file_is_gone(tmp_path):
    _folder(tmp_path, "masks")
    (tmp_path / "other").mkdir()
    (tmp_path / "masks" / "dog.png").rename(tmp_path / "other" / "dog.png")  # dog's mask: in another folder now
    (job,) = load_manifest(tmp_path / "m.yaml").jobs
    dog = job.grids[0].sources[1]

    def mask_after(*recorded: str) -> str:
        records = [{"source": dog.key, "mask": key, "mask_stat": "", "mask_sha256": "ab" * 32} for key in recorded]
        return identify_sources([job], recorded_hashes(records))[0].grids[0].masks[1].key

    looked_for = f"{(tmp_path / 'masks').as_posix()}/dog.*"
    assert job.grids[0].masks[1].key == looked_for
    gone, elsewhere = (tmp_path / "masks" / "dog.jpg").as_posix(), (tmp_path / "other" / "dog.png").as_posix()
    assert mask_after(gone) == gone  # recorded with dog, under masks/, its stem: gone since
    assert mask_after(elsewhere) == looked_for  # still there, but not where the spec looks
    assert mask_after((tmp_path / "masks" / "cat.png").as_posix()) == looked_for  # another stem
    assert (
        mask_after(gone, (tmp_path / "masks" / "dog.webp").as_posix()) == (tmp_path / "masks" / "dog.webp").as_posix()
    )


@pytest.mark.parametrize("masks", ["masks", "masks/*.png", "masks/*"])
def test_a_masks_folder_emptied_or_removed_once_its_items_were_done_keeps_them_done(tmp_path, tiny_task_config, masks):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, masks)
    _run(tmp_path, config, "run")
    (tmp_path / "archive").mkdir()
    for stem in ("cat", "dog"):
        shutil.move(tmp_path / "masks" / f"{stem}.png", tmp_path / "archive" / f"{stem}.png")
    for _ in ("emptied", "removed"):
        planned = _run(tmp_path, config, "plan")
        assert "2 item(s), 2 already done" in planned and "gone: 2 mask file(s)" in planned, planned
        assert "nothing to do" in _run(tmp_path, config, "run")
        assert "would move 0, would reject 0, kept 2" in _run(tmp_path, config, "prune", "--dry-run")
        if (tmp_path / "masks").exists():
            (tmp_path / "masks").rmdir()
    # items still to make from those sources need their masks: listed without one, each failing at load
    (tmp_path / "m.yaml").write_text(YAML.format(masks=masks).replace("'a fox'", "['a fox', 'a wolf']"))
    planned = _run(tmp_path, config, "plan", code=1)
    assert "4 item(s), 2 already done" in planned and "without a mask: 2 source(s)" in planned, planned
    # a job with no finished item to give a mask back to: refused, naming the job and field
    refused = batch_edit("plan", "m.yaml", "--pipeline", str(config), "--output-root", "other", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "m.yaml: jobs[0] ('masked'): field 'masks': none of its 2 source(s) has a mask" in refused.stderr


def test_the_mask_given_back_is_the_one_recorded_last_with_its_source(tmp_path, tiny_task_config):
    config = tiny_task_config("inpaint")
    _folder(tmp_path, "masks")
    _run(tmp_path, config, "run")  # cat with masks/cat.png
    first = tmp_path / "cat-first.png"
    shutil.move(tmp_path / "masks" / "cat.png", first)
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "masks" / "cat.webp", lossless=True)
    assert "1 written" in _run(tmp_path, config, "run")  # cat with masks/cat.webp: another item
    (tmp_path / "masks" / "cat.webp").unlink()
    shutil.copy(first, tmp_path / "masks" / "cat.png")
    assert "2 written" in _run(tmp_path, config, "run", "--overwrite")  # cat with masks/cat.png again, recorded last
    folder = tmp_path / "out" / "masked"
    listed = pd.read_csv(folder / "metadata.csv", dtype=str)
    with_png = listed[listed["mask"].str.endswith("cat.png")][["item_id", "file_name"]].values.tolist()
    shutil.move(tmp_path / "masks" / "cat.png", tmp_path / "cat-archived.png")

    planned = _run(tmp_path, config, "plan")
    assert f"gone: 1 mask file(s) of items already done (their results stay): {tmp_path / 'masks' / 'cat.png'}" in (
        planned
    )
    pruned = _run(tmp_path, config, "prune", "--dry-run")
    assert "would move 1, would reject 0, kept 2" in pruned and with_png[0][1] not in pruned, pruned
    assert "nothing to do" in _run(tmp_path, config, "run")
    assert pd.read_csv(folder / "metadata.csv", dtype=str)[["item_id", "file_name"]].values.tolist()[:1] == with_png


def test_a_glob_gives_back_only_a_mask_it_would_pair_and_a_link_spelling_is_the_folder(tmp_path):
    _folder(tmp_path, "masks/*.jpg")
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    (job,) = load_manifest(tmp_path / "m.yaml").jobs
    dog = job.grids[0].sources[1]

    def mask_after(recorded: str) -> str:
        records = [{"source": dog.key, "mask": recorded, "mask_stat": "", "mask_sha256": "ab" * 32}]
        return identify_sources([job], recorded_hashes(records))[0].grids[0].masks[1].key

    jpg = (tmp_path / "masks" / "dog.jpg").as_posix()
    assert job.grids[0].masks[1].key == jpg  # the file `masks/*.jpg` pairs with dog, not there
    assert mask_after(jpg) == jpg
    with pytest.raises(ManifestError):  # a png is not what the glob pairs: no mask at all
        mask_after((tmp_path / "masks" / "dog.png").as_posix())
    (tmp_path / "m.yaml").write_text(YAML.format(masks="masks"))
    (tmp_path / "masks" / "dog.png").unlink()
    (job,) = load_manifest(tmp_path / "m.yaml").jobs
    linked = (tmp_path / "link" / "masks" / "dog.jpg").as_posix()  # recorded through a link to the folder
    assert mask_after(linked) == linked
