"""metadata.csv re-saved by a spreadsheet set for a language writing decimal commas (semicolons, `sep=;`, 0,9):
read with the delimiter CSV manifests are read with, by the rebuild's edit check and by `reproduce`."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from tests.conftest import batch_edit, image_file
from tests.test_listing_fixes import _kept, _metadata, listed  # noqa: F401 (listed: a fixture)


def _resave(path: Path, edit=lambda rows: rows, sep_line: bool = True, decimal_commas: bool = True) -> bytes:
    """metadata.csv as European Excel saves it: semicolons, decimal commas, with or without its `sep=;` line."""
    rows = edit(list(csv.reader(path.open(encoding="utf-8", newline=""))))
    text = io.StringIO(newline="")
    if sep_line:
        text.write("sep=;\r\n")
    writer = csv.writer(text, delimiter=";")
    for row in rows:
        writer.writerow([cell.replace(".", ",") if decimal_commas and _decimal(cell) else cell for cell in row])
    path.write_bytes(text.getvalue().encode("utf-8"))
    return path.read_bytes()


def _decimal(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return "." in cell


def test_a_semicolon_resave_with_a_column_added_names_that_column(listed, caplog):  # noqa: F811
    _resave(_metadata(listed), lambda rows: [[*rows[0], "rating"], *([*row, "5"] for row in rows[1:])])
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "has columns batch-edit does not write (rating): kept as metadata-edited.csv" in caplog.text


def _new_prompt(rows: list[list[str]]) -> list[list[str]]:
    rows[1][rows[0].index("prompt")] = "a new prompt"
    return rows


def test_a_semicolon_resave_with_a_value_changed_is_an_edit_of_values_not_of_columns(listed, caplog):  # noqa: F811
    edited = _resave(_metadata(listed), _new_prompt, sep_line=False)  # decimal commas alone are no edit
    assert b";" in edited and b"," not in edited.split(b"\r\n")[0]
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "does not write" not in caplog.text
    assert "was edited since batch-edit wrote it" in caplog.text and _kept(listed) == ["metadata-edited.csv"]


def test_a_semicolon_resave_changing_no_cell_is_not_an_edit(listed, caplog):  # noqa: F811
    _resave(_metadata(listed), decimal_commas=False)
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_a_long_added_column_name_is_cut_in_the_warning(listed, caplog):  # noqa: F811
    long = "note " * 40
    _resave(_metadata(listed), lambda rows: [[*rows[0], long], *([*row, ""] for row in rows[1:])])
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert long not in caplog.text and f"{long[:80]}… ({len(long)} characters)" in caplog.text


def test_reproduce_reads_a_semicolon_metadata_csv_with_decimal_commas(tmp_path, tiny_config):
    image_file(tmp_path / "a.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - name: j\n    sources: a.png\n    prompts: p\n    num_inference_steps: 2\n    strength: 0.75\n"
        "    guidance_scale: 3.5\n    width: 64\n    height: 64\n"
    )
    out = tmp_path / "out"
    result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config), "--output-root", str(out))
    assert result.returncode == 0, result.stderr
    metadata = out / "j" / "metadata.csv"
    item = next(csv.DictReader(metadata.open(encoding="utf-8")))["item_id"]
    assert b"0,75" in _resave(metadata)
    result = batch_edit("reproduce", str(metadata), "--item", item)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("identical:")
