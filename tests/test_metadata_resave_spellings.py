"""metadata.csv re-saved by a spreadsheet set for a language writing decimal commas: `0,5` where semicolons or tabs
delimit is the number 0.5, as CSV manifests read it, and TRUE/FALSE (Excel's spelling of True/False) the same
boolean. Neither is a hand edit; a changed value still is."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from batch_edit.metadata_edits import content_digest

from .test_listing_fixes import _kept, _metadata, listed  # noqa: F401 (listed: a fixture)

FRACTIONS = {"strength", "guidance_scale", "seconds"}


def _resave(path: Path, delimiter: str = ";", commas: set[str] = FRACTIONS, upper_booleans: bool = True, edit=None):
    """As a spreadsheet in such a language saves it: a BOM, `delimiter`, CRLF, decimal commas in `commas`, and
    booleans upper case."""
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    header = rows[0]
    for row in rows[1:]:
        for i, name in enumerate(header):
            if name in commas and "." in row[i]:
                row[i] = row[i].replace(".", ",")
            if upper_booleans and row[i] in ("True", "False"):
                row[i] = row[i].upper()
    if edit:
        edit(rows)
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(text.getvalue().encode("utf-8-sig"))
    return path.read_bytes()


def test_a_resave_with_decimal_commas_and_upper_case_booleans_is_not_an_edit(listed, caplog):  # noqa: F811
    data = _resave(_metadata(listed))
    assert b";3,5;" in data, "the resave writes decimal commas"
    assert b";TRUE;" in data or b";FALSE;" in data, "and upper-case booleans"
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_a_tab_delimited_resave_with_decimal_commas_is_not_an_edit(listed, caplog):  # noqa: F811
    _resave(_metadata(listed), delimiter="\t")
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "WARNING" not in caplog.text and _kept(listed) == []


def test_decimal_commas_with_a_changed_value_are_still_an_edit(listed, caplog):  # noqa: F811
    def rate(rows):
        rows[1][rows[0].index("strength")] = "0,25"  # a value another than the one written

    _resave(_metadata(listed), edit=rate)
    with caplog.at_level(logging.WARNING):
        listed.rebuild_csvs()
    assert "was edited since batch-edit wrote it" in caplog.text and _kept(listed) == ["metadata-edited.csv"]


def test_a_comma_delimited_cell_holding_a_decimal_comma_is_text_not_a_number():
    """Where commas delimit, "0,5" can only be a quoted cell: text another than 0.5, so a change."""
    written = content_digest(b"strength,prompt\n0.5,x\n")
    assert content_digest(b'strength,prompt\n"0,5",x\n') != written
    assert content_digest(b"strength;prompt\n0,5;x\n") == written


def test_only_number_columns_read_decimal_commas_and_only_boolean_columns_upper_case():
    """A prompt "1,5" is text in any file; a prompt "TRUE" is not the prompt "True"."""
    assert content_digest(b'prompt,seed_derived\n"1,5",True\n') != content_digest(b"prompt;seed_derived\n1.5;True\n")
    assert content_digest(b"prompt;seed_derived\n1,5;TRUE\n") == content_digest(b'prompt,seed_derived\n"1,5",True\n')
    assert content_digest(b"prompt;seed_derived\nTRUE;True\n") != content_digest(b"prompt,seed_derived\nTrue,True\n")
