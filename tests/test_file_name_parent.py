"""`{parent}` in a job's file_name: the source's folder name, so that same-named photos of nested folders get
names of their own without the item id."""

from __future__ import annotations

import shutil

import pandas as pd

from batch_edit.file_names import parent_name
from batch_edit.sources import SourceRef

from .conftest import PHOTOS, batch_edit


def test_same_named_photos_of_two_folders_are_told_apart_by_their_folder(tmp_path, tiny_config):
    for folder in ("north pole", "south"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photos" / folder / "cat.jpg")
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - name: j\n    sources: photos/*/cat.jpg\n    prompts: a\n    file_name: '{parent}-{stem}'\n"
        "    num_inference_steps: 2\n    width: 32\n    height: 32\n"
    )
    run = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(pd.read_csv(tmp_path / "out" / "j" / "metadata.csv").file_name) == [
        "north_pole-cat.png",
        "south-cat.png",
    ]


def test_a_urls_parent_is_its_last_folder_else_its_host():
    def ref(key, is_url):
        return SourceRef(key=key, is_url=is_url, stem="cat", fingerprint="", caption=None)

    assert parent_name(ref("https://example.com/shots/2024%20summer/cat.jpg", True)) == "2024_summer"
    assert parent_name(ref("https://example.com/cat.jpg", True)) == "example.com"
    assert parent_name(ref("/cat.jpg", False)) == "root"
