"""`batch-edit reproduce`: re-render a recorded item and compare it with the stored image."""

from __future__ import annotations

import shutil

import pandas as pd

from .conftest import PHOTOS, batch_edit

MANIFEST = f"""
jobs:
  - name: sweep
    sources: {PHOTOS / "cat.jpg"}
    prompts: 'a "tiger", photo: 35mm'
    strength: [0.5, 0.7]
    seed: [1, 2]
    num_inference_steps: 4
    width: 64
    height: 48
"""


def test_reproduce_says_identical_then_notices_a_replaced_image(tmp_path, tiny_config):
    (tmp_path / "sweep.yaml").write_text(MANIFEST)
    run = batch_edit("run", "sweep.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metadata = tmp_path / "out" / "sweep" / "metadata.csv"
    rows = pd.read_csv(metadata)
    assert set(rows["batch_size"]) == {2}  # 2 strengths: two calls of 2 items

    first, other = rows.iloc[0], rows.iloc[1]
    # no --pipeline: the config the run recorded in the job folder is used
    same = batch_edit("reproduce", str(metadata), "--item", first.item_id)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("identical")

    shutil.copy(metadata.parent / other.file_name, metadata.parent / first.file_name)
    changed = batch_edit("reproduce", str(metadata), "--item", first.item_id, "--pipeline", str(tiny_config))
    assert changed.returncode == 1, changed.stderr
    assert changed.stdout.startswith("different") and "/255" in changed.stdout
    assert "content has changed" not in changed.stdout  # the image was replaced, not the source

    missing = batch_edit("reproduce", str(metadata), "--item", first.item_id[:-1] + "x")
    assert missing.returncode == 2 and "no item" in missing.stderr and "did you mean" in missing.stderr


def test_reproduce_says_when_the_sources_content_changed_since_the_run(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "job.yaml").write_text(MANIFEST.replace(str(PHOTOS / "cat.jpg"), "photo.jpg"))
    run = batch_edit("run", "job.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metadata = tmp_path / "out" / "sweep" / "metadata.csv"
    item = pd.read_csv(metadata).iloc[0].item_id
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "photo.jpg")
    changed = batch_edit("reproduce", str(metadata), "--item", item)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert changed.stdout.startswith("different") and "the source's content has changed since the run" in changed.stdout


def test_a_recorded_config_whose_model_moved_says_to_pass_another(tmp_path, tiny_model):
    from .conftest import write_pipeline_config

    shutil.copytree(tiny_model, tmp_path / "model")
    config = write_pipeline_config(tmp_path / "c.yaml", tmp_path / "model")
    (tmp_path / "sweep.yaml").write_text(MANIFEST.replace("[0.5, 0.7]", "0.5").replace("[1, 2]", "1"))
    assert (
        batch_edit("run", "sweep.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path).returncode == 0
    )
    metadata = tmp_path / "out" / "sweep" / "metadata.csv"
    item = pd.read_csv(metadata, dtype={"item_id": str}).item_id[0]
    (tmp_path / "model").rename(tmp_path / "moved")
    recorded = batch_edit("reproduce", str(metadata), "--item", item)
    assert recorded.returncode == 2 and f"folder not found: {tmp_path / 'model'}" in recorded.stderr
    assert "in the config the run recorded" in recorded.stderr and "pass --pipeline CONFIG" in recorded.stderr
    moved = write_pipeline_config(tmp_path / "moved.yaml", tmp_path / "moved")
    again = batch_edit("reproduce", str(metadata), "--item", item, "--pipeline", str(moved))
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr
