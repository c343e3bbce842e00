"""`batch-edit reproduce` reading a job's listing: metadata.csv and failures.csv as a spreadsheet saves them again,
and an item whose row a later item of the same source, prompt and parameters took."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from batch_edit.errors import ReproduceError
from batch_edit.reproduce import find_row

from .conftest import PHOTOS, batch_edit

MANIFEST = """
jobs:
  - name: j
    sources: photo.jpg
    prompts: a tiger
    strength: 0.5
    num_inference_steps: 2
    width: 64
    height: 48
"""


def _run(folder, tiny_config):
    run = batch_edit("run", "j.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=folder)
    assert run.returncode == 0, run.stderr
    return pd.read_csv(folder / "out" / "j" / "metadata.csv").iloc[0]


def test_a_metadata_csv_saved_again_with_a_byte_order_mark_is_reproduced(tmp_path, tiny_config):
    """Excel's "CSV UTF-8" adds a UTF-8 byte-order mark; a run takes that re-save for no change, and so does
    reproduce: the first column is still file_name."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "j.yaml").write_text(MANIFEST)
    row = _run(tmp_path, tiny_config)
    metadata = tmp_path / "out" / "j" / "metadata.csv"
    metadata.write_bytes(b"\xef\xbb\xbf" + metadata.read_bytes())
    same = batch_edit("reproduce", str(metadata), "--item", row.item_id)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("identical")


def test_a_listing_saved_as_utf16_reads_and_one_in_a_code_page_is_refused_at_its_line(tmp_path):
    text = "file_name,item_id,prompt\r\nb.png,b1,un tigre\r\na.png,a1,un caf\u00e9\r\n"
    metadata = tmp_path / "metadata.csv"
    metadata.write_bytes(text.encode("utf-16"))  # Excel's "Unicode Text": UTF-16 with its byte-order mark
    assert find_row(metadata, "a1")["prompt"] == "un caf\u00e9"
    metadata.write_bytes(text.encode("cp1252"))  # Excel's plain "CSV" on a Western European Windows
    with pytest.raises(ReproduceError) as refused:
        find_row(metadata, "a1")
    assert "line 3, column 16: not UTF-8 text (byte 0xe9" in str(refused.value)
    assert "CSV UTF-8" in str(refused.value)


def test_a_failure_listed_in_a_failures_csv_with_a_byte_order_mark_is_said(tmp_path):
    """A copied folder without its records: failures.csv alone says why an item is not in metadata.csv."""
    (tmp_path / "metadata.csv").write_text("file_name,item_id\n")
    failures = "item_id,stage,error_type,error\nf1,load,SourceError,file not found\n"
    (tmp_path / "failures.csv").write_bytes(b"\xef\xbb\xbf" + failures.encode())
    with pytest.raises(ReproduceError) as refused:
        find_row(tmp_path / "metadata.csv", "f1")
    assert "item f1 failed in its latest run (load: SourceError: file not found; from failures.csv)" in str(
        refused.value
    )


def test_an_item_whose_row_a_changed_source_took_is_said_superseded(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "j.yaml").write_text(MANIFEST)
    old = _run(tmp_path, tiny_config)
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "photo.jpg")  # new content under the same path
    new = _run(tmp_path, tiny_config)
    assert new.item_id != old.item_id
    with pytest.raises(ReproduceError) as refused:
        find_row(tmp_path / "out" / "j" / "metadata.csv", old.item_id)
    message = str(refused.value)
    assert f"item {old.item_id} was superseded by item {new.item_id} ({new.file_name}) of the same" in message
    assert "of the same source, prompt and parameters (they differ in the source's content)" in message
    assert f"its image {old.file_name} is still in the job folder" in message
    assert "no item" not in message


@pytest.mark.parametrize("item", [(), ("--item", "a1")])
def test_a_job_folder_given_is_named_as_a_folder_with_or_without_an_item(tmp_path, item):
    """Not first asked for --item, then told the path is a folder."""
    folder = tmp_path / "out" / "j"
    folder.mkdir(parents=True)
    (folder / "metadata.csv").write_text("item_id\n")
    result = batch_edit("reproduce", str(folder), *item)
    assert result.returncode == 2
    expected = f"error: {folder} is a folder; reproduce reads a job's metadata.csv (pass its metadata.csv)"
    assert result.stderr.strip() == expected
