"""`reproduce`: URL sources fetched with the options `run` takes; a missing kept copy (source or mask) falling back
to the file as given or named plainly; a failed item, a missing stored image and what changed since the run
(a redrawn mask, a LoRA rewritten in place) said in so many words."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from PIL import Image

from batch_edit.reproduce import ReproduceError, reproduce
from batch_edit.tiny_model import write_tiny_lora

from .conftest import PHOTOS, batch_edit
from .http_fixtures import LoopbackServer
from .test_repro_masks import kept_job, masks_folder, run_kept


def reproduced(metadata, item: str, *flags: str):
    return batch_edit("reproduce", str(metadata), "--item", item, *flags)


def one_line_refusal(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "Errno" not in line and "Traceback" not in line, line
    return line


# ---------------------------------------------------------------- fetch options


def test_reproduce_reaches_a_private_url_with_the_fetch_options_run_takes(tmp_path, tiny_config):
    with LoopbackServer(image=(PHOTOS / "cat.jpg").read_bytes()) as server:
        metadata, rows = run_kept(
            tmp_path, tiny_config, kept_job(server.url("/ok.png"), keep=False), "--allow-private-urls"
        )
        item = rows.item_id[0]
        refused = one_line_refusal(reproduced(metadata, item))
        assert "private address 127.0.0.1 refused" in refused
        again = reproduced(metadata, item, "--allow-private-urls", "--fetch-timeout", "20", "--max-download-mb", "5")
        assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr
        capped = one_line_refusal(reproduced(metadata, item, "--allow-private-urls", "--max-download-mb", "0.001"))
        assert f"cannot load the source {server.url('/ok.png')}" in capped
    # the same validation as run's
    bad = batch_edit("reproduce", str(metadata), "--item", item, "--fetch-timeout", "0")
    assert bad.returncode == 2 and "--fetch-timeout: must be greater than 0" in bad.stderr


# ---------------------------------------------------------------- missing kept copies


def masked_run(tmp_path, tiny_task_config, keep: bool = True):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    masks_folder(tmp_path)
    manifest = kept_job("photo.jpg", keep=keep, extra="    masks: masks\n    mask_blur: 4\n")
    metadata, rows = run_kept(tmp_path, tiny_task_config("inpaint"), manifest)
    return metadata, rows.iloc[0]


def test_a_deleted_kept_mask_falls_back_to_the_mask_file_as_given(tmp_path, tiny_task_config):
    metadata, row = masked_run(tmp_path, tiny_task_config)
    kept_mask = metadata.parent / row.mask_file_name
    kept_mask.unlink()
    again = reproduced(metadata, row.item_id)
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr
    assert f"the kept mask {kept_mask} is missing, so the mask file as given was fitted again" in again.stdout


def test_a_deleted_kept_mask_with_the_source_gone_too_is_refused_naming_both(tmp_path, tiny_task_config):
    metadata, row = masked_run(tmp_path, tiny_task_config)
    (metadata.parent / row.mask_file_name).unlink()
    (tmp_path / "photo.jpg").unlink()  # the kept source stands in, but the mask as given needs the original's size
    line = one_line_refusal(reproduced(metadata, row.item_id))
    assert f"cannot fit the mask {tmp_path / 'masks' / 'photo.png'}: the source cannot be loaded" in line
    assert f"the kept mask {metadata.parent / row.mask_file_name} is missing" in line


def test_a_deleted_kept_source_copy_is_named_not_an_errno(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg", extra="    strength: 0.6\n"))
    kept = metadata.parent / rows.source_image_file_name[0]
    kept.unlink()
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "photo.jpg")  # changed, and its kept copy gone: it stands in
    changed = reproduced(metadata, rows.item_id[0])
    assert changed.returncode == 1 and changed.stdout.startswith("different"), changed.stdout + changed.stderr
    assert f"the kept source copy {kept} is missing: re-rendered from the source as given" in changed.stdout
    assert "the source's content has changed since the run" in changed.stdout
    (tmp_path / "photo.jpg").unlink()
    line = one_line_refusal(reproduced(metadata, rows.item_id[0]))
    assert f"cannot load the source {tmp_path / 'photo.jpg'}: file not found" in line
    assert line.endswith(f", and its kept copy {kept} is missing")


# ---------------------------------------------------------------- failed items, stored images


def test_a_failed_item_is_said_to_have_failed_not_to_be_unknown(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "job.yaml").write_text(kept_job("[photo.jpg, broken.jpg]", keep=False))
    run = batch_edit("run", "job.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    metadata = tmp_path / "out" / "kept" / "metadata.csv"
    (failed,) = pd.read_csv(metadata.parent / "failures.csv").item_id
    line = one_line_refusal(reproduced(metadata, failed))
    assert f"item {failed} failed in its latest run (load: " in line and "no image to compare" in line
    assert "no item" not in line
    # a copied folder without its records: failures.csv still tells
    (metadata.parent / ".batch-edit" / "records.jsonl").unlink()
    line = one_line_refusal(reproduced(metadata, failed))
    assert f"item {failed} failed in its latest run" in line and "from failures.csv" in line


def test_a_missing_stored_image_is_refused_before_the_pipeline_loads(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg", keep=False))
    stored = metadata.parent / rows.file_name[0]
    stored.unlink()
    loads = []
    with pytest.raises(ReproduceError, match=f"cannot read the stored image {stored}: file not found"):
        reproduce(metadata, rows.item_id[0], None, loads.append)
    assert loads == []  # refused without loading the model
    stored.write_bytes(b"truncated")
    line = one_line_refusal(reproduced(metadata, rows.item_id[0]))
    assert f"cannot read the stored image {stored}: not an image" in line


# ---------------------------------------------------------------- what changed since the run


def test_a_redrawn_mask_is_named_where_the_re_render_differs(tmp_path, tiny_task_config):
    metadata, row = masked_run(tmp_path, tiny_task_config, keep=False)
    mask = Image.new("L", (640, 427), 0)
    mask.paste(255, (300, 200, 600, 400))
    mask.save(tmp_path / "masks" / "photo.png")
    changed = reproduced(metadata, row.item_id)
    assert changed.returncode == 1 and changed.stdout.startswith("different"), changed.stdout + changed.stderr
    assert "the mask's content has changed since the run (its sha256 is not the one recorded)" in changed.stdout
    assert "the source's content" not in changed.stdout


def test_a_lora_rewritten_in_place_is_named_where_the_re_render_differs(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    lora = write_tiny_lora(tmp_path / "ink.safetensors")
    manifest = kept_job("photo.jpg", keep=False, extra="    loras: [{path: ink.safetensors, scale: 0.8}]\n")
    metadata, rows = run_kept(tmp_path, tiny_config, manifest)
    same = reproduced(metadata, rows.item_id[0])
    assert same.returncode == 0 and same.stdout.startswith("identical"), same.stdout + same.stderr
    write_tiny_lora(lora, seed=2, magnitude=2.0)  # retrained in place
    os.utime(lora, ns=(10**18, 10**18))  # another modification time, whatever the clock's resolution
    changed = reproduced(metadata, rows.item_id[0])
    assert changed.returncode == 1 and changed.stdout.startswith("different"), changed.stdout + changed.stderr
    assert "a LoRA or model file was replaced or touched since the run" in changed.stdout
    assert f"pipeline_config {rows.pipeline_config[0]} hashed): {lora}" in changed.stdout
