"""CSV files as spreadsheets save them -> a header and rows with their line numbers.

Knows nothing of manifests: the encoding (UTF-8, or UTF-16 with its byte-order mark; anything else refused at
its line and column, saying how to save the file), the delimiter (comma, semicolon or tab: from Excel's
`sep=` line, else from the header line), header names matched ignoring case and surrounding spaces, fully empty
rows skipped, and malformed quoting refused with the line it starts on instead of silently merging the rows that
follow into one cell.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .text_encoding import TextEncodingError, decode_text_file

DELIMITERS = ",;\t"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
# A line that starts with an image file or URL and then a delimiter: the start of a row, not prompt text.
_IMAGE_LIKE = re.compile(r"\.(jpe?g|png|webp|bmp|tiff?|gif)$|^[A-Za-z][A-Za-z0-9+.-]*://", re.IGNORECASE)
# Excel's delimiter hint on the first line ("sep=;"); a spreadsheet that saves it again may quote it and pad it
# with delimiters.
_SEP_LINE = re.compile(r'"?sep=(.)"?[,;\t ]*', re.IGNORECASE)
SAVE_AS_UTF8 = 'save the file as "CSV UTF-8" in Excel (or choose the UTF-8 encoding elsewhere)'
_EXCEL_CODE_PAGE = ', the encoding of Excel\'s plain "CSV"'


class CsvTableError(ValueError):
    """Text that cannot be read as rows; the message starts with the line."""


@dataclass(frozen=True)
class CsvRecord:
    line: int  # where the row starts (a quoted cell can span lines)
    cells: tuple[str, ...]


@dataclass(frozen=True)
class CsvTable:
    delimiter: str
    header: tuple[str, ...]  # stripped and lower-cased; '' for a column without a name
    rows: tuple[CsvRecord, ...]  # rows whose every cell is empty or blank are left out

    def values(self, record: CsvRecord) -> dict[str, str]:
        """Column -> cell for the cells that hold something. Cells past the header, or under a column without a
        name, may only be blank (spreadsheets export such trailing columns)."""
        values = {}
        for index, cell in enumerate(record.cells):
            if not cell.strip():
                continue
            if index >= len(self.header):
                raise CsvTableError(
                    f"more cells than header columns: expected at most {len(self.header)}, "
                    f"found {len(record.cells)} (a cell holding a {DELIMITER_NAMES[self.delimiter]} must be quoted)"
                )
            if not self.header[index]:
                raise CsvTableError(f"a value in column {index + 1}, which has no name in the header")
            values[self.header[index]] = cell
        return values


def decode_csv(data: bytes) -> str:
    """The file's text (text_encoding): UTF-8, or UTF-16 with a byte-order mark (Excel's "Unicode Text"); Excel's
    plain "CSV" saves in the computer's code page, which is refused at the line and column where it shows."""
    try:
        return decode_text_file(data, SAVE_AS_UTF8, code_page_note=_EXCEL_CODE_PAGE)
    except TextEncodingError as exc:
        raise CsvTableError(str(exc)) from None


def read_csv_table(text: str, max_field: int) -> CsvTable:
    """Parse all of `text`. `max_field` bounds one cell (the caller's file-size cap, so no real cell trips it)."""
    delimiter, text = delimiter_of(text)
    with _field_size_limit(max_field):  # parsing happens while iterating: keep it all inside
        records = list(_records(text, delimiter))
    filled = [record for record in records if any(cell.strip() for cell in record.cells)]
    if not filled:
        raise CsvTableError("line 1: the file is empty: expected a header line such as 'source,prompt'")
    header, *rows = filled
    names = tuple(name.strip().lower() for name in header.cells)
    return CsvTable(delimiter, names, tuple(rows))


def delimiter_of(text: str) -> tuple[str, str]:
    """The delimiter (Excel's `sep=` line, else the header line's) and the text with a `sep=` line left empty.
    CsvTableError: a `sep=` line declaring a delimiter not read."""
    declared, text = _declared_delimiter(text)
    return declared or sniff_delimiter(text), text


def _declared_delimiter(text: str) -> tuple[str | None, str]:
    """The delimiter a first line `sep=X` declares, and the text with that line left empty (so line numbers stay
    the file's); (None, text) without one."""
    first = text.split("\n", 1)[0]
    declared = _SEP_LINE.fullmatch(first.strip(" "))
    if declared is None:
        return None, text
    delimiter = declared.group(1)
    if delimiter not in DELIMITERS:
        raise CsvTableError(
            f"line 1: 'sep=' declares the delimiter {delimiter!r}; only comma, semicolon and tab are read"
        )
    return delimiter, text[len(first) :]


def sniff_delimiter(text: str) -> str:
    """The delimiter the header line uses. Only the header is sniffed: prompts are free text full of commas
    and semicolons, and a multi-line cell breaks the Sniffer's per-line counting."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","  # one column, or nothing to go by: comma, and the header check says what is missing
    return delimiter if delimiter in DELIMITERS else ","


@contextlib.contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """csv's field limit (131,072 characters) is process-wide; raise it only while our reader runs."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _records(text: str, delimiter: str) -> Iterator[CsvRecord]:
    # strict: a quote closed in the middle of a cell, or the end of the file inside quotes, is an error, not a
    # guess; both are what an unterminated quote looks like from further down the file.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _quote_error(start, reader.line_num, str(exc), delimiter) from None
        record = CsvRecord(start, tuple(cells))
        _check_swallowed_rows(record, delimiter)
        yield record


def _quote_error(start: int, end: int, problem: str, delimiter: str) -> CsvTableError:
    advice = 'close the quote (write "" for a quote inside a quoted cell)'
    if "end of data" in problem:
        return CsvTableError(
            f"line {start}: unterminated quote: a quoted cell opened in the row on this line is never closed, so "
            f"every line after it would be read as one cell; {advice}"
        )
    if end > start:
        return CsvTableError(
            f"line {start}: unterminated quote: a quoted cell opened in the row on this line runs on to line {end}, "
            f"where a quote ends it in the middle of a cell; {advice}"
        )
    return CsvTableError(
        f"line {start}: a quoted cell must end with its closing quote followed by a {DELIMITER_NAMES[delimiter]} "
        f'or the end of the line ({problem}); write "" for a quote inside a quoted cell'
    )


def _check_swallowed_rows(record: CsvRecord, delimiter: str) -> None:
    """A quote left open can still close cleanly further down (a later cell ending in a quote): then a cell holds
    lines that start like rows, with an image file or URL and a delimiter. Multi-line prompts do not."""
    line = record.line
    for cell in record.cells:
        for offset, text in enumerate(cell.split("\n")[1:], 1):
            first, found, _ = text.partition(delimiter)
            if found and _IMAGE_LIKE.search(first.strip().strip('"')):
                raise CsvTableError(
                    f"line {line}: unterminated quote: the quoted cell opened here runs over line {line + offset}, "
                    "which reads like a row of its own; close the quote "
                    '(write "" for a quote inside a quoted cell)'
                )
        line += cell.count("\n")
