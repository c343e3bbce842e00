"""`batch-edit reproduce IMAGE`: a result image in its job folder names its own item (its embedded record), so
neither the metadata.csv nor the item id need be looked up."""

from __future__ import annotations

import shutil

import pandas as pd
from PIL import Image

from .conftest import PHOTOS, batch_edit

MANIFEST = f"""
jobs:
  - name: j
    sources: {PHOTOS / "cat.jpg"}
    prompts: a tiger
    seed: [1, 2]
    num_inference_steps: 2
    width: 32
    height: 32
"""


def test_a_result_image_is_reproduced_by_its_embedded_record(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    run = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "out" / "j"
    first, other = pd.read_csv(folder / "metadata.csv").itertuples(index=False)
    image = folder / first.file_name
    same = batch_edit("reproduce", str(image))
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith(f"identical: item {first.item_id} ")

    wrong = batch_edit("reproduce", str(image), "--item", other.item_id)
    assert wrong.returncode == 2 and f"is the result of item {first.item_id}, not of --item {other.item_id}" in (
        wrong.stderr
    )
    copied = tmp_path / "elsewhere.png"
    shutil.copy(image, copied)
    away = batch_edit("reproduce", str(copied))
    assert away.returncode == 2 and "no metadata.csv is beside it" in away.stderr
    assert f"give the job's metadata.csv and --item {first.item_id}" in away.stderr
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    plain = batch_edit("reproduce", str(tmp_path / "plain.png"))
    assert plain.returncode == 2 and "carries no batch-edit record" in plain.stderr
    no_item = batch_edit("reproduce", str(folder / "metadata.csv"))
    assert no_item.returncode == 2 and "--item ITEM_ID is needed with a metadata.csv" in no_item.stderr
