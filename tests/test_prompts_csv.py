"""Prompts longer than T5 reads, CSV files as Excel saves them (encodings, `sep=`), and sources that moved."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import pytest

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifest, load_manifests

from .conftest import PHOTOS, batch_edit


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photos" / "cat.jpg")
    return tmp_path


def refusal(path: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    return str(info.value)


def rows(path: Path) -> list[tuple[str, str, int | None]]:
    return [(Path(g.sources[0].key).name, g.prompts[0], g.seed[0]) for job in load_manifest(path).jobs for g in job.grids]


# ---------------------------------------------------------------- CSV encodings and Excel's sep= line


def test_a_cp1252_csv_is_refused_at_its_line_and_column_saying_how_to_save_it(folder):
    path = folder / "excel.csv"
    path.write_bytes("source,prompt,seed\nphotos/cat.jpg,café crème,1\n".encode("cp1252"))
    message = refusal(path)
    assert message.startswith(f"{path}: line 2, column 19: not UTF-8 text (byte 0xe9, 'é' in Windows-1252")
    assert '"CSV UTF-8"' in message and "\n" not in message


def test_the_line_of_a_bad_byte_counts_crlf_and_cr_line_ends_once(folder):
    path = folder / "excel.csv"
    path.write_bytes(b"source,prompt\r\nphotos/cat.jpg,a\r\rphotos/cat.jpg,\x81b\r\n")
    assert "line 4, column 16: not UTF-8 text (byte 0x81); save the file as" in refusal(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_its_byte_order_mark_is_read(folder, codec):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-delimited."""
    path = folder / "unicode.txt.csv"
    bom = codecs.BOM_UTF16_LE if codec == "utf-16-le" else codecs.BOM_UTF16_BE
    path.write_bytes(bom + "source\tprompt\tseed\r\nphotos/cat.jpg\tcafé crème\t1\r\n".encode(codec))
    assert rows(path) == [("cat.jpg", "café crème", 1)]


def test_utf16_without_a_byte_order_mark_is_refused_at_the_first_nul(folder):
    path = folder / "unicode.csv"
    path.write_bytes("source,prompt\n".encode("utf-16-le"))
    assert refusal(path).startswith(f"{path}: line 1, column 2: a NUL character (UTF-16 text without a byte-order")


def test_utf8_with_a_byte_order_mark_is_read(folder):
    path = folder / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + "source,prompt\nphotos/cat.jpg,café\n".encode())
    assert rows(path) == [("cat.jpg", "café", None)]


@pytest.mark.parametrize("sep_line", ["sep=;", "SEP=;", '"sep=;"', '"sep=;";;', "sep=; "])
def test_excels_sep_line_sets_the_delimiter_and_is_not_the_header(folder, sep_line):
    path = folder / "sep.csv"
    path.write_text(f"{sep_line}\nsource;prompt;seed\nphotos/cat.jpg;a tiger, watercolor;1\n")
    assert rows(path) == [("cat.jpg", "a tiger, watercolor", 1)]


def test_the_sep_line_keeps_the_files_line_numbers(folder):
    path = folder / "sep.csv"
    path.write_text("sep=,\nsource,prompt,strength\nphotos/cat.jpg,a tiger,2\n")
    assert "row 1 (line 3)" in refusal(path)


def test_a_sep_line_naming_another_delimiter_is_refused(folder):
    path = folder / "sep.csv"
    path.write_text("sep=|\nsource|prompt\nphotos/cat.jpg|a tiger\n")
    assert refusal(path) == (
        f"{path}: line 1: 'sep=' declares the delimiter '|'; only comma, semicolon and tab are read"
    )
