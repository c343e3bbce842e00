"""What a job folder holds and what a run says: a masked job's mask column that `datasets` accepts with or without
kept sources (and older folders that still reproduce), refused download sizes and deadlines that are not finite,
the caption of a rejected item, and what `--overwrite --limit` leaves."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from .conftest import PHOTOS, batch_edit


def _masked_job(tmp_path, name: str = "masked", keep: bool = False) -> str:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "cat.png")
    return f"""
  - name: {name}
    sources: {PHOTOS / "cat.jpg"}
    masks: cat.png
    prompts: a tiger
    strength: 0.7
    num_inference_steps: 2
    seed: 1
    width: 64
    height: 64
    keep_sources: {str(keep).lower()}
"""


def _run_masked(tmp_path, tiny_task_config, *jobs: str):
    (tmp_path / "m.yaml").write_text("jobs:" + "".join(jobs))
    config = str(tiny_task_config("inpaint"))
    result = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return config


def _load(folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))


def test_a_masked_job_without_kept_sources_names_its_mask_outside_a_file_name_column(tmp_path, tiny_task_config):
    _run_masked(tmp_path, tiny_task_config, _masked_job(tmp_path), _masked_job(tmp_path, "kept", keep=True))
    folder = tmp_path / "out" / "masked"
    row = pd.read_csv(folder / "metadata.csv").iloc[0]
    assert "mask_file_name" not in row and row["mask"] == str(tmp_path / "cat.png")
    loaded = _load(folder, tmp_path)
    assert loaded.num_rows == 1 and loaded[0]["mask"] == str(tmp_path / "cat.png")  # a string, not an image
    kept = _load(tmp_path / "out" / "kept", tmp_path)  # the fitted mask under sources/: an image column
    assert "mask" not in pd.read_csv(tmp_path / "out" / "kept" / "metadata.csv")
    assert type(kept.features["mask"]).__name__ == "Image" and kept[0]["mask"].size == (64, 64)


def test_a_folder_whose_records_name_the_mask_as_a_file_name_lists_it_as_mask_and_reproduces(
    tmp_path, tiny_task_config
):
    """Records written before the mask column had the mask file as given under mask_file_name."""
    config = _run_masked(tmp_path, tiny_task_config, _masked_job(tmp_path))
    folder = tmp_path / "out" / "masked"
    records = folder / ".batch-edit" / "records.jsonl"
    old = [json.loads(line) for line in records.read_text().splitlines()]
    old = [{**r, "mask_file_name": r["mask"]} if r["status"] == "ok" else r for r in old]
    records.write_text("".join(json.dumps(r) + "\n" for r in old))
    (folder / "metadata.csv").unlink()
    rerun = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert rerun.returncode == 0 and "0 written, 1 already done" in rerun.stdout, rerun.stdout + rerun.stderr
    rows = pd.read_csv(folder / "metadata.csv", dtype=str)  # as text: a hash may look like a number (1e5...)
    assert "mask_file_name" not in rows and list(rows["mask"]) == [str(tmp_path / "cat.png")]
    assert _load(folder, tmp_path).num_rows == 1
    # a metadata.csv as the earlier version wrote it: the mask file as given under mask_file_name
    rows.rename(columns={"mask": "mask_file_name"}).to_csv(folder / "metadata.csv", index=False)
    for _ in range(2):
        again = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", rows["item_id"][0], cwd=tmp_path)
        assert again.returncode == 0 and "identical" in again.stdout, again.stdout + again.stderr
        rows.to_csv(folder / "metadata.csv", index=False)  # then the current form


@pytest.mark.parametrize("option", ["--max-download-mb", "--fetch-timeout"])
@pytest.mark.parametrize("value", ["inf", "1e400", "-inf"])
def test_a_size_or_deadline_that_is_not_finite_is_refused_cleanly(tmp_path, tiny_config, option, value):
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - name: j\n    sources: {PHOTOS / 'cat.jpg'}\n    prompts: a\n")
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), option, value, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"argument {option}:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_download_size_too_large_or_too_small_to_count_in_bytes_is_refused(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - name: j\n    sources: {PHOTOS / 'cat.jpg'}\n    prompts: a\n")
    for value, problem in (("1e300", "at most 1048576"), ("1e-9", "at least one byte")):
        result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--max-download-mb", value, cwd=tmp_path)
        assert result.returncode == 2 and problem in result.stderr, result.stdout + result.stderr


def _captioned_sweep(tmp_path, tiny_config, *args: str):
    (tmp_path / "m.yaml").write_text(f"""jobs:
  - name: j
    sources: {PHOTOS / "cat.jpg"}
    prompts: a tiger
    strength: [0.3, 0.5]
    captions: true
    width: 64
    height: 64
    num_inference_steps: 2
""")
    return batch_edit(*args, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)


def test_prune_rejected_moves_the_caption_of_a_deleted_image_out_of_the_job_folder(tmp_path, tiny_config):
    assert _captioned_sweep(tmp_path, tiny_config, "run").returncode == 0
    folder = tmp_path / "out" / "j"
    deleted, kept = pd.read_csv(folder / "metadata.csv")["file_name"]
    (folder / deleted).unlink()
    caption = deleted.rsplit(".", 1)[0] + ".txt"
    dry = _captioned_sweep(tmp_path, tiny_config, "prune", "--rejected", "--dry-run")
    assert dry.returncode == 0 and f"was deleted) and move its caption {caption}" in dry.stdout, dry.stdout + dry.stderr
    assert (folder / caption).is_file()
    result = _captioned_sweep(tmp_path, tiny_config, "prune", "--rejected")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (folder / caption).exists()
    assert (folder / ".batch-edit" / "pruned" / caption).read_text() == "a tiger"
    assert (folder / kept.rsplit(".", 1)[0]).with_suffix(".txt").is_file()  # the kept result's caption stays
    assert list(pd.read_csv(folder / "metadata.csv")["file_name"]) == [kept]


def test_overwrite_with_limit_does_not_say_the_rest_is_left_for_later(tmp_path, tiny_config):
    assert _captioned_sweep(tmp_path, tiny_config, "run").returncode == 0
    result = _captioned_sweep(tmp_path, tiny_config, "run", "--overwrite", "--limit", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left for later" not in result.stdout
    assert "1 not redone (--overwrite --limit 1 redoes the first 1 each time)" in result.stdout


def test_prune_moves_the_caption_of_a_deleted_image_whose_item_left_the_plan(tmp_path, tiny_config):
    assert _captioned_sweep(tmp_path, tiny_config, "run").returncode == 0
    folder = tmp_path / "out" / "j"
    dropped = pd.read_csv(folder / "metadata.csv")["file_name"][0]  # strength 0.3, then taken out of the plan
    (folder / dropped).unlink()
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("[0.3, 0.5]", "0.5"))
    caption = dropped.rsplit(".", 1)[0] + ".txt"
    args = ("m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    dry = batch_edit("prune", "--dry-run", *args, cwd=tmp_path)
    assert f"would move the caption {caption} of the deleted {dropped}" in dry.stdout, dry.stdout + dry.stderr
    assert batch_edit("prune", *args, cwd=tmp_path).returncode == 0
    assert not (folder / caption).exists() and (folder / ".batch-edit" / "pruned" / caption).is_file()
