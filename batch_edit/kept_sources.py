"""Kept fitted copies (`keep_sources`) for results made without them: `keep_sources` turned on in a job that
already has results, or a kept copy deleted or emptied since. Nothing is rendered again: a fitted source is a pure
function of the source's content and the item's size and resize mode, so the copy is the one the run gave the
pipeline, made by the same loading, checks and fitting as the run's (`worker.prepare`) and named and encoded as a
new result's (`result_files.kept_copies`). A source (or mask) that is gone, changed since the result was made, or a
URL (not downloaded again for this) gives no copy."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from .fetch_options import FetchOptions
from .masks import MaskLoader
from .plan import WorkItem
from .records import SOURCES_DIR, is_bare_name
from .result_files import KEPT_DIGESTS, KEPT_MASK_COLUMN, SOURCE_IMAGE_COLUMN, kept_copies
from .source_decoding import SourceError, applied_orientation, decode_image
from .sources import SourceRef, fit_image, source_bytes


def lacks_copies(item: WorkItem, record: dict, exists: Callable[[str], bool]) -> bool:
    """Whether a finished item of a job keeping its sources has no kept source (or, masked, no kept mask): its
    record names none, or the file it names is not there (`exists`)."""
    columns = [SOURCE_IMAGE_COLUMN] + [KEPT_MASK_COLUMN] * (item.mask is not None)
    return not all(_kept_name(record.get(column)) and exists(record[column]) for column in columns)


def kept_listing(folder: Path) -> set[str]:
    """The names ("sources/NAME") of what a job's `sources/` holds, from one listing of it: thousands of kept
    copies are checked without a stat each. A hidden name (a write in progress) is none."""
    try:
        names = os.listdir(folder)
    except OSError:  # none yet (or not a folder: JobOutput.check refuses that before anything is written)
        return set()
    return {f"{SOURCES_DIR}/{name}" for name in names if not name.startswith(".")}


def whole_copies(folder: Path) -> set[str]:
    """The names ("sources/NAME") of the kept copies a job's `sources/` holds that may be whole, from one listing
    of it with each entry's size (nothing opened or read): an emptied file, a folder or a link is no copy."""
    try:
        with os.scandir(folder) as entries:
            return {f"{SOURCES_DIR}/{entry.name}" for entry in entries if _filled(entry)}
    except OSError:  # none yet (or not a folder: JobOutput.check refuses that before anything is written)
        return set()


def _filled(entry: os.DirEntry) -> bool:
    """A kept copy, not empty: a hidden name (a write in progress) is none. Linux lists no sizes: one stat each."""
    if entry.name.startswith("."):
        return False
    try:
        return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size > 0
    except OSError:  # gone meanwhile
        return False


def copies_named(records: Iterable[dict]) -> set[str]:
    """The kept copies ("sources/NAME") these records name."""
    columns = (SOURCE_IMAGE_COLUMN, KEPT_MASK_COLUMN)
    return {record[column] for record in records for column in columns if _kept_name(record.get(column))}


class FittedCopies:
    """Finished items' kept copies, each source decoded once while the items made from it follow each other (a
    sweep's); masks through the run's own loader (its checks, and its cache)."""

    def __init__(self):
        self.fetch = FetchOptions()
        self.masks = MaskLoader(self.fetch)
        self._last: tuple[SourceRef, Image.Image] | None = None

    def copies(self, item: WorkItem, record: dict) -> tuple[dict, tuple[tuple[str, bytes], ...]]:
        """The record fields naming the item's kept copies and their (name, PNG), as the run would have made them;
        SourceError where they cannot be the run's."""
        if item.source.is_url or (item.mask is not None and item.mask.is_url):
            raise SourceError("a URL, not downloaded again to keep its fitted copy")
        original = self._source(item.source, record)
        fitted = fit_image(original, item.width, item.height, item.resize)
        mask = self.masks.fitted(
            item, original.size, applied_orientation(original)
        )  # its content checked against the item's id, as the run's
        fields, files = kept_copies(item, fitted, mask)
        for column, digest_field in KEPT_DIGESTS.items():
            recorded = record.get(digest_field)
            if isinstance(recorded, str) and recorded and column in fields and fields[digest_field] != recorded:
                raise SourceError("its fitted copy would not be the one the run kept (other pixels)")
        return fields, files

    def _source(self, ref: SourceRef, record: dict) -> Image.Image:
        if self._last is not None and self._last[0] == ref:
            return self._last[1]
        data = source_bytes(ref, self.fetch)  # refused where the content is not the one the item's id hashed
        recorded = record.get("source_sha256")
        if isinstance(recorded, str) and recorded and hashlib.sha256(data).hexdigest() != recorded:
            raise SourceError("changed since its result was made")
        image = decode_image(data)
        self._last = (ref, image)
        return image


def _kept_name(name) -> bool:
    folder, _, bare = name.partition("/") if isinstance(name, str) else ("", "", "")
    return folder == SOURCES_DIR and is_bare_name(bare)
