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
import os
import re
from pathlib import Path

from . import job_files
from .errors import OutputError

log = logging.getLogger(__name__)

WRITTEN_DIGESTS = "metadata-written"  # under .batch-edit/: the digests of the last two metadata.csv written
EDITED_METADATA = "metadata-edited"  # metadata-edited.csv: not a name the datasets loaders read as metadata
# pandas writes its index under an empty name, and reads an empty name back as "Unnamed: 0"
_UNNAMED = re.compile(r"\s*(Unnamed: \d+)?\s*")


def content_digest(data: bytes) -> str:
    """A digest of the cells: a re-save that only adds a UTF-8 BOM, turns line ends to CRLF, quotes cells
    otherwise or writes a number another way (pandas reads a column with blanks as floats: 0 -> 0.0) changes
    no cell, so it is not an edit."""
    text = data.decode("utf-8-sig", "replace").replace("\r\n", "\n")
    try:
        cells = [[_cell(cell) for cell in row] for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error:  # a cell past the csv module's size limit: the text itself then
        cells = [[text]]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode("utf-8")).hexdigest()


def _cell(text: str) -> str:
    """A number as its value, whatever way it is written; any other cell as it is."""
    try:
        value = float(text)
    except ValueError:
        return text
    return repr(value) if math.isfinite(value) else text


class WrittenMetadata:
    """The digests of the metadata.csv batch-edit wrote last and the one before: a run stopped between
    recording a digest and replacing the file leaves a file that is either, and neither is a hand edit."""

    def __init__(self, state: Path):
        self.path = state / WRITTEN_DIGESTS
        self.digests = self._read()

    def _read(self) -> list[str] | None:
        """None: nothing recorded (a folder written before digests were)."""
        if job_files.lstat(self.path) is None:
            return None
        try:
            return job_files.read_bytes(self.path).decode("ascii").split()
        except (OSError, UnicodeDecodeError):
            return []  # unreadable: compared with nothing, any difference counts as an edit and is kept

    def edited(self, data: bytes) -> bool:
        return self.digests is not None and content_digest(data) not in self.digests

    def record(self, data: bytes) -> None:
        """Before metadata.csv is replaced by `data` (or found to hold it already)."""
        digest = content_digest(data)
        if self.digests and self.digests[0] == digest:
            return
        kept = [digest, *(self.digests or [])[:1]]
        _write_synced(self.path, "".join(f"{d}\n" for d in kept).encode("ascii"))
        self.digests = kept


def keep_if_edited(path: Path, written: WrittenMetadata, written_columns: set[str]) -> None:
    """Before metadata.csv is replaced: keep a copy of it where it was edited since batch-edit wrote it, or has
    columns batch-edit does not write (ratings, notes, a pandas index), and say so once."""
    if job_files.lstat(path) is None:
        return
    try:
        data = job_files.read_bytes(path)
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    header = next(csv.reader([data.decode("utf-8-sig", "replace").partition("\n")[0].rstrip("\r")]), [])
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


def _describe(columns: list[str]) -> str:
    named = [column for column in columns if not _UNNAMED.fullmatch(column)]
    shown = ", ".join(named[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")
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
        if replace:
            job_files.write_whole(path, data, sync=True)
            return
        with job_files.open_new(path) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
