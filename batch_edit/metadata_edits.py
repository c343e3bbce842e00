"""Hand edits to `metadata.csv`, found before a rebuild replaces it: batch-edit records a digest of each
metadata.csv it writes (`.batch-edit/metadata-written`); a file whose cells no longer match it, or that has columns
batch-edit does not write, is kept as metadata-edited.csv (then ~2, ~3...) with a warning."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from pathlib import Path

from . import job_files
from .csv_table import CsvTableError, delimiter_of
from .errors import OutputError
from .parameters import PARAMETERS
from .validation import printable

log = logging.getLogger(__name__)

UNPARSED = "-"  # in place of the cells' digest of a file written during a job
WRITTEN_DIGESTS = "metadata-written"  # under .batch-edit/: the digests of the last two metadata.csv written
EDITED_METADATA = "metadata-edited"  # metadata-edited.csv: not a name the datasets loaders read as metadata
# pandas writes its index under an empty name, and reads an empty name back as "Unnamed: 0"
_UNNAMED = re.compile(r"\s*(Unnamed: \d+)?\s*")
_HEADER_BYTES = 64 * 1024  # where a header is looked for: a `sep=` line and the header line
# metadata.csv columns whose values are fractions (a spreadsheet writes "0,5" in a language with decimal commas),
# and booleans (Excel writes True back as TRUE)
_FRACTION_COLUMNS = frozenset({*(p.column for p in PARAMETERS if p.decimal_comma), "seconds"})
_BOOLEAN_COLUMNS = frozenset({*(p.column for p in PARAMETERS if p.value is bool), "seed_derived"})
_DECIMAL_COMMA = re.compile(r"\s*[0-9]+,[0-9]+\s*")


def content_digest(data: bytes) -> str:
    """A digest of the cells: a re-save that only adds a UTF-8 BOM, turns line ends to CRLF, quotes cells
    otherwise or writes a number another way (pandas reads a column with blanks as floats: 0 -> 0.0; a
    spreadsheet writes 0,5 where semicolons delimit, TRUE for True) changes no cell, so it is not an edit.
    Hashed row by row (a job of 100k rows is tens of megabytes), the same digest as the JSON of the list of rows
    that folders written before recorded."""
    delimiter, text = _delimited(data.decode("utf-8-sig", "replace").replace("\r\n", "\n"))
    try:
        return _rows_digest(_as_written(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), delimiter))
    except csv.Error:  # a cell past the csv module's size limit: the text itself then
        return _rows_digest([[text]])


def _delimited(text: str) -> tuple[str, str]:
    """The delimiter, and the text without a `sep=` line, as CSV manifests are read (a spreadsheet set for a
    language writing decimal commas saves with semicolons); a `sep=` line naming another: commas, the text as is."""
    try:
        return delimiter_of(text)
    except CsvTableError:
        return ",", text


def _as_written(rows, delimiter: str):
    """The rows with a spreadsheet's spellings of batch-edit's values spelled as batch-edit writes them: in the
    fraction columns a decimal comma where semicolons or tabs delimit (`0,5`, as CSV manifests read it), in the
    boolean ones any case (`TRUE`, as Excel writes True back). Other columns as they are: a prompt "1,5" or
    "TRUE" is text."""
    header = None
    for row in rows:
        if header is None:
            header = [name.strip() for name in row] if row else None
            yield row
            continue
        yield [_spelled(cell, name, delimiter) for cell, name in zip(row, header)] + row[len(header) :]


def _spelled(cell: str, column: str, delimiter: str) -> str:
    if column in _FRACTION_COLUMNS and delimiter != "," and _DECIMAL_COMMA.fullmatch(cell):
        return cell.replace(",", ".")
    if column in _BOOLEAN_COLUMNS and cell.strip().lower() in ("true", "false"):
        return cell.strip().capitalize()
    return cell


def _rows_digest(rows) -> str:
    digest, separator = hashlib.sha256(b"["), b""
    for row in rows:
        if row:
            digest.update(separator + json.dumps([_cell(cell) for cell in row], ensure_ascii=False).encode("utf-8"))
            separator = b", "
    digest.update(b"]")
    return digest.hexdigest()


def _raw_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cell(text: str) -> str:
    """A number as its value, whatever way it is written; any other cell as it is."""
    try:
        value = float(text)
    except ValueError:
        return text
    return repr(value) if math.isfinite(value) else text


class WrittenMetadata:
    """The digests of the metadata.csv batch-edit wrote last and the one before: a run stopped between
    recording a digest and replacing the file leaves a file that is either, and neither is a hand edit. Each
    written file has a line `CELLS RAW`: the digest of its cells, and the sha256 of its bytes, compared first
    (the file nearly always is what was written: parsing tens of megabytes every rebuild is not needed).
    Folders written before raw digests were recorded have lines of the cells' digest alone."""

    def __init__(self, state: Path):
        self.path = state / WRITTEN_DIGESTS
        self.written = self._read()  # (cells digest, raw digest or None), newest first

    def _read(self) -> list[tuple[str, str | None]] | None:
        """None: nothing recorded (a folder written before digests were)."""
        if job_files.lstat(self.path) is None:
            return None
        try:
            lines = job_files.read_bytes(self.path).decode("ascii").splitlines()
        except (OSError, UnicodeDecodeError):
            return []  # unreadable: compared with nothing, any difference counts as an edit and is kept
        return [(cells, raw[0] if raw else None) for cells, *raw in (line.split() for line in lines) if cells]

    def edited(self, data: bytes) -> bool:
        if self.written is None:
            return False
        if _raw_digest(data) in {raw for _, raw in self.written}:
            return False
        return content_digest(data) not in {cells for cells, _ in self.written}

    def record(self, data: bytes, cells: bool = True) -> None:
        """Before metadata.csv is replaced by `data` (or found to hold it already). `cells`: also the digest of
        its cells, which parses it (seconds for 100k rows): not on the rebuilds during a job, whose file a re-save
        without a change would then count as edited (a copy kept, nothing lost), only on the job's last."""
        raw = _raw_digest(data)
        newest = (self.written or [None])[0]
        if newest is not None and newest[1] == raw and (newest[0] != UNPARSED or not cells):
            return  # every rebuild that changes nothing: no parse
        cells = content_digest(data) if cells else UNPARSED
        # the same cells as the newest (its raw digest not recorded yet): that entry gains it
        earlier = (self.written or [])[1:2] if newest is not None and newest[0] == cells else (self.written or [])[:1]
        kept = [(cells, raw), *earlier]
        _write_synced(self.path, "".join(f"{c} {r}\n" if r else f"{c}\n" for c, r in kept).encode("ascii"))
        self.written = kept


def keep_if_edited(path: Path, written: WrittenMetadata, written_columns: set[str]) -> None:
    """Before metadata.csv is replaced: keep a copy of it where it was edited since batch-edit wrote it, or has
    columns batch-edit does not write (ratings, notes, a pandas index), and say so once."""
    if job_files.lstat(path) is None:
        return
    try:
        data = job_files.read_bytes(path)
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    header = _header(data)
    added = [column for column in header if column.strip() not in written_columns]
    if not added and not written.edited(data):
        return
    kept = _free_name(path.parent)
    _write_synced(kept, data, replace=False)
    if added:
        found = f"has columns batch-edit does not write ({_describe(added)})"
    else:
        found = "was edited since batch-edit wrote it (values changed, rows sorted or removed)"
    log.warning("%s %s: kept as %s; metadata.csv is rebuilt from the records", path, found, kept.name)


def _header(data: bytes) -> list[str]:
    """The header's column names, its delimiter found as CSV manifests' is (only the first lines decoded)."""
    delimiter, text = _delimited(data[:_HEADER_BYTES].decode("utf-8-sig", "replace").replace("\r\n", "\n"))
    first = next((line for line in text.splitlines() if line.strip()), "")
    return next(csv.reader([first], delimiter=delimiter), [])


def _describe(columns: list[str]) -> str:
    named = [column for column in columns if not _UNNAMED.fullmatch(column)]
    shown = ", ".join(printable(column) for column in named[:3]) + (
        f" and {len(named) - 3} more" if len(named) > 3 else ""
    )
    unnamed = len(columns) - len(named)
    if unnamed:
        what = "an unnamed column" if unnamed == 1 else f"{unnamed} unnamed columns"
        shown += (", " if shown else "") + f"{what}: a pandas or spreadsheet index?"
    return shown


def _free_name(folder: Path) -> Path:
    kept, number = folder / f"{EDITED_METADATA}.csv", 1
    while job_files.lstat(kept) is not None:
        number += 1
        kept = folder / f"{EDITED_METADATA}~{number}.csv"
    return kept


def _write_synced(path: Path, data: bytes, replace: bool = True) -> None:
    """Write `path`, on disk before anything follows: atomically (`replace`), else as a new file."""
    try:
        (job_files.write_whole if replace else job_files.write_new)(path, data, sync=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
