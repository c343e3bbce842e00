"""metadata.csv as a project lives with it: cells edited by hand kept in a copy before a rebuild replaces them (a
re-save by another tool is not an edit), rows of items the manifest no longer has without a position that names
another item, and a renamed job's name on its rows."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import errno
import io
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from batch_edit import job_files
from batch_edit.errors import OutputError
from batch_edit.metadata_edits import WRITTEN_DIGESTS
from batch_edit.outputs import JobOutput

from .conftest import PHOTOS, batch_edit
from .test_outputs import EXTRA, PIPELINE_YAML, make, picture

WARNING = "metadata.csv is rebuilt from the records"


@pytest.fixture
def listed(tmp_path):
    """A job folder with three results listed in plan order."""
    output = JobOutput(tmp_path / "out", "job")
    output.open(PIPELINE_YAML)
    items = tuple(dataclasses.replace(make(f"s{i}", prompt=f"prompt {i}"), index=i) for i in range(3))
    for i, item in enumerate(items):
        output.write_image(item, picture(offset=i), EXTRA)
    output.follow_plan(items)
    output.rebuild_csvs()
    yield output
    output.close()


def _metadata(output: JobOutput) -> Path:
    return output.folder / "metadata.csv"


def _rewrite(path: Path, edit, **writer_options) -> bytes:
    """metadata.csv read, changed by `edit` (a function of its rows, header first) and saved as given."""
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    text = io.StringIO(newline="")
    csv.writer(text, **writer_options).writerows(edit(rows))
    path.write_bytes(text.getvalue().encode("utf-8"))
    return path.read_bytes()


def _kept(output: JobOutput) -> list[str]:
    return sorted(p.name for p in output.folder.glob("metadata-edited*"))


# --------------------------------------------------------------------------- cells edited by hand


def test_a_corrected_prompt_and_sorted_rows_are_kept_in_a_copy_before_the_rebuild(listed, caplog):
    built = _metadata(listed).read_bytes()

    def correct_and_sort(rows):
        rows[2][rows[0].index("prompt")] = "prompt 1, hand-corrected caption"
        return [rows[0], *reversed(rows[1:])]

    edited = _rewrite(_metadata(listed), correct_and_sort)
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()  # nothing new recorded: the rebuild alone would silently undo the edit
    assert (listed.folder / "metadata-edited.csv").read_bytes() == edited
    assert _metadata(listed).read_bytes() == built
    assert caplog.text.count("WARNING") == 1, caplog.text
    assert f"metadata.csv was edited since batch-edit wrote it (values changed, rows sorted or removed): kept as " \
           f"metadata-edited.csv; {WARNING}" in caplog.text  # fmt: skip
    caplog.clear()
    listed.rebuild_csvs()  # warned once: the rebuilt file is batch-edit's own
    assert "WARNING" not in caplog.text and _kept(listed) == ["metadata-edited.csv"]
    _rewrite(_metadata(listed), lambda rows: rows[:-1])  # a row removed by hand: a second copy, the first kept
    listed.rebuild_csvs()
    assert _kept(listed) == ["metadata-edited.csv", "metadata-edited~2.csv"]
    assert (listed.folder / "metadata-edited.csv").read_bytes() == edited


@pytest.mark.parametrize(
    "resave",
    [
        lambda data: codecs.BOM_UTF8 + data,
        lambda data: data.replace(b"\r\n", b"\n"),  # batch-edit writes CRLF, as the csv module does
        lambda data: codecs.BOM_UTF8 + data.replace(b"\r\n", b"\n"),
    ],
    ids=["bom", "lf", "bom-and-lf"],
)
def test_a_resave_that_changes_no_cell_is_not_an_edit(listed, caplog, resave):
    _metadata(listed).write_bytes(resave(_metadata(listed).read_bytes()))
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_cells_quoted_otherwise_are_not_an_edit(listed, caplog):
    _rewrite(_metadata(listed), lambda rows: rows, quoting=csv.QUOTE_ALL, lineterminator="\n")
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_numbers_written_another_way_are_not_an_edit(listed, caplog):
    def as_floats(rows):  # what pandas writes for a column it read as floats (one with blanks)
        header, *body = rows
        numeric = {i for i, name in enumerate(header) if name in ("index", "seed", "num_inference_steps")}
        return [header, *([f"{float(c)}" if i in numeric and c else c for i, c in enumerate(row)] for row in body)]

    assert b".0," in _rewrite(_metadata(listed), as_floats)
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_a_folder_from_before_digests_compares_only_columns_until_its_first_rebuild(listed, caplog):
    (listed.state / WRITTEN_DIGESTS).unlink()
    _rewrite(_metadata(listed), lambda rows: [rows[0], *reversed(rows[1:])])
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()  # as before: nothing to compare the cells with, no column added
    assert "WARNING" not in caplog.text and _kept(listed) == []
    assert (listed.state / WRITTEN_DIGESTS).is_file()  # recorded now: the next edit is found
    edited = _rewrite(_metadata(listed), lambda rows: [rows[0], *reversed(rows[1:])])
    listed.rebuild_csvs()
    assert (listed.folder / "metadata-edited.csv").read_bytes() == edited


def test_a_rebuild_stopped_before_replacing_metadata_csv_finds_no_edit_next_time(listed, monkeypatch, caplog):
    """The digest is recorded before the file is replaced: the file left behind is the one written before."""
    added = dataclasses.replace(make("s3", prompt="prompt 3"), index=3)
    listed.write_image(added, picture(offset=3), EXTRA)
    listed.follow_plan((*listed._plan, added))
    real = job_files.open_new

    def disk_full_for_metadata(path: Path, text: bool = False):
        if "metadata.csv" in Path(path).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(job_files, "open_new", disk_full_for_metadata)
    with pytest.raises(OutputError, match="cannot write .*metadata.csv"):
        listed.rebuild_csvs()
    monkeypatch.setattr(job_files, "open_new", real)
    with caplog.at_level(logging.WARNING):
        assert listed.rebuild_csvs() == (4, 0)
    assert "WARNING" not in caplog.text and _kept(listed) == []


@pytest.mark.parametrize(
    ("index_label", "shown"),
    [
        (None, "(an unnamed column: a pandas or spreadsheet index?)"),  # pandas' to_csv() default
        ("Unnamed: 0", "(an unnamed column: a pandas or spreadsheet index?)"),  # read back and saved again
    ],
)
def test_a_pandas_index_saved_with_metadata_csv_is_named_in_the_warning(listed, caplog, index_label, shown):
    frame = pd.read_csv(_metadata(listed), dtype=str, keep_default_na=False)
    frame.to_csv(_metadata(listed), index_label=index_label)
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert f"metadata.csv has columns batch-edit does not write {shown}: kept as metadata-edited.csv" in caplog.text


def test_an_unnamed_column_is_named_after_the_columns_added_by_hand(listed, caplog):
    frame = pd.read_csv(_metadata(listed), dtype=str, keep_default_na=False).assign(rating="5")
    frame.to_csv(_metadata(listed))
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "does not write (rating, an unnamed column: a pandas or spreadsheet index?): kept as" in caplog.text


# --------------------------------------------------------------------------- rows the manifest no longer has


def test_rows_of_items_no_longer_planned_have_no_position(tmp_path):
    output = JobOutput(tmp_path / "out", "job")
    output.open(PIPELINE_YAML)
    first = tuple(dataclasses.replace(make(f"s{i}"), index=i) for i in range(3))
    for i, item in enumerate(first):
        output.write_image(item, picture(offset=i), EXTRA)
    # the middle item removed from a YAML grid: the last one moves up to index 1
    output.follow_plan((first[0], dataclasses.replace(first[2], index=1)))
    output.rebuild_csvs()
    rows = pd.read_csv(output.folder / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(rows["item_id"]) == [first[0].item_id, first[2].item_id, first[1].item_id]
    assert list(rows["index"]) == ["0", "1", ""]
    assert "row" not in rows  # a YAML job has no CSV rows to blank
    output.close()


def _csv_manifest(folder: Path, prompts: list[int]) -> None:
    lines = "".join(f"{PHOTOS / 'cat.jpg'},prompt {i},{i},32,32,2,0.5\n" for i in prompts)
    (folder / "rows.csv").write_text("source,prompt,seed,width,height,num_inference_steps,strength\n" + lines)


def test_a_removed_csv_row_leaves_no_two_rows_claiming_one_position(tmp_path, tiny_config):
    command = ["run", "rows.csv", "--pipeline", str(tiny_config), "--output-root", "out"]
    _csv_manifest(tmp_path, [1, 2, 3])
    assert batch_edit(*command, cwd=tmp_path).returncode == 0
    _csv_manifest(tmp_path, [1, 3, 4])  # row 2 removed, one added
    result = batch_edit(*command, cwd=tmp_path)
    assert result.returncode == 0 and "1 written, 2 already done" in result.stdout, result.stdout + result.stderr
    rows = pd.read_csv(tmp_path / "out" / "rows" / "metadata.csv", dtype=str, keep_default_na=False)
    listed = list(zip(rows["row"], rows["index"], rows["prompt"]))
    assert listed == [("1", "0", "prompt 1"), ("2", "1", "prompt 3"), ("3", "2", "prompt 4"), ("", "", "prompt 2")]


# --------------------------------------------------------------------------- a renamed job


def test_a_renamed_job_whose_folder_moved_lists_its_new_name_on_every_planned_row(tmp_path, tiny_config):
    def manifest(name: str, prompts: str) -> list[str]:
        (tmp_path / "m.yaml").write_text(
            f"jobs:\n  - {{name: {name}, sources: {PHOTOS / 'cat.jpg'}, prompts: {prompts}, width: 32, height: 32,"
            " num_inference_steps: 2, strength: 0.5}\n"
        )
        return ["run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out"]

    assert batch_edit(*manifest("old", "[x, y]"), cwd=tmp_path).returncode == 0
    shutil.move(tmp_path / "out" / "old", tmp_path / "out" / "new")
    result = batch_edit(*manifest("new", "[x, y, z]"), cwd=tmp_path)
    assert result.returncode == 0 and "1 written, 2 already done" in result.stdout, result.stdout + result.stderr
    rows = pd.read_csv(tmp_path / "out" / "new" / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(rows["prompt"]) == ["x", "y", "z"] and list(rows["job"]) == ["new", "new", "new"]
