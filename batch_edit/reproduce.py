"""Re-render one recorded item from its metadata row and compare it with the image on disk."""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BeforeValidator, Field, ValidationError, create_model

from . import job_files
from .errors import BatchEditError, UnsafeOutputError
from .formats import as_stored
from .local_files import open_regular
from .masks import MaskLoader, composited
from .outputs import PIPELINES_DIR, SOURCES_DIR, STATE_DIR
from .parameters import axes, needing
from .pipeline_config import PipelineConfig, load_pipeline_config
from .plan import WorkItem
from .records import JobRecords, is_bare_name
from .result_files import KEPT_MASK_COLUMN, SOURCE_IMAGE_COLUMN
from .source_identity import file_identity
from .sources import FetchOptions, SourceError, fit_image, load_image, source_ref
from .validation import describe_validation_error

CONFIG_HASH = re.compile(r"[0-9a-f]{16}")


class ReproduceError(BatchEditError):
    """The item, its image, its source or its pipeline config cannot be found."""


@dataclass(frozen=True)
class Comparison:
    item_id: str
    stored: Path
    max_difference: int  # largest per-channel difference, out of 255
    differing_fraction: float  # share of pixels with any difference
    size_matches: bool
    source_changed: bool = False  # the local source's bytes are not those the run hashed (its records say)
    kept_source: str = ""  # the kept fitted source (keep_sources) re-rendered from, in the source's place
    kept_because: str = ""  # why the source as given could not stand in

    @property
    def identical(self) -> bool:
        return self.size_matches and self.max_difference == 0


@dataclass(frozen=True)
class _Source:
    """The fitted image the pipeline is given, the original's size (None: only the kept fitted copy is known) and
    the kept copy used in the source's place, with why."""

    fitted: Image.Image
    original_size: tuple[int, int] | None
    kept: str = ""
    because: str = ""


def reproduce(
    metadata_csv: Path,
    item_id: str,
    config_path: Path | None,
    load_engine: Callable[[PipelineConfig], object],
    fetch: FetchOptions = FetchOptions(),
) -> Comparison:
    folder = metadata_csv.parent
    row = find_row(metadata_csv, item_id)
    if not is_bare_name(row.get("file_name")):
        name = row.get("file_name")
        raise ReproduceError(f"{metadata_csv}: item {item_id}: file_name {name!r} is not a file of the job folder")
    missing = ", ".join(name for name in REQUIRED_COLUMNS if name not in row)
    if missing:
        raise ReproduceError(f"{metadata_csv}: not a batch-edit metadata.csv: it lacks the column(s) {missing}")
    config = load_pipeline_config(config_path or _recorded_config(folder, row.get("pipeline_config") or ""))
    try:
        copies = _RowValues.model_validate(row).batch_size
        item = item_from_row(row)
    except ValidationError as exc:  # a hand-edited cell: the manifest's limits, so the engine never sees it
        problem = describe_validation_error(exc, f"{metadata_csv}: item {item_id}")[0]
        raise ReproduceError(problem) from None
    except ValueError as exc:
        raise ReproduceError(f"{metadata_csv}: item {item_id}: a value cannot be read: {exc}") from None
    # blank exactly where the task takes no such parameter (strength for fill and kontext)
    unlike = [p.column for p in axes() if p.taken_by(config.task) == (getattr(item, p.name) is None)]
    if unlike:
        raise ReproduceError(
            f"{metadata_csv}: item {item_id}: column(s) {', '.join(unlike)} do not fit the {config.task} task of "
            "the pipeline config (blank where it takes the parameter, or set where it takes none)"
        )
    record = _record(folder, item_id)
    source = _pipeline_source(folder, row, record, item, fetch)
    mask = _fitted_mask(folder, row, record, item, source, fetch)
    engine = load_engine(config)
    # Same batch size as the original call (`copies`): on a GPU, results repeat bitwise only at that batch size.
    masks = {"masks": [mask] * copies} if mask is not None else {}
    (image, *_) = engine.generate([item] * copies, [source.fitted] * copies, **masks)
    result = compare(composited(item, image, source.fitted, mask), folder / row["file_name"], item_id)
    if source.kept:
        return replace(result, kept_source=source.kept, kept_because=source.because)
    return replace(result, source_changed=not result.identical and _source_changed(record, item))


def _record(folder: Path, item_id: str) -> dict:
    """The item's latest record ({} where the folder has none readable): its source's hash and kept copies."""
    try:
        return JobRecords(folder.parent, folder.name).read_records().get(item_id, {})
    except BatchEditError:
        return {}


def _pipeline_source(folder: Path, row: dict, record: dict, item: WorkItem, fetch: FetchOptions) -> _Source:
    """The source as given, fitted again as the run fitted it (so the fitting is checked too), while it is the
    run's; where it is gone (a deleted file, a URL that no longer serves) or its content changed, the fitted copy
    the job kept (keep_sources): a PNG of the very RGB pixels the pipeline was given, so nothing is lost."""
    kept = _kept_name(row, record, SOURCE_IMAGE_COLUMN)
    try:
        original = load_image(item.source, fetch)
    except SourceError as exc:
        if not kept:
            hint = " (the job kept no copy of it: keep_sources: true keeps one)"
            raise ReproduceError(f"cannot load the source {item.source.key}: {exc}{hint}") from None
        return _Source(_read_kept(folder, kept, "RGB"), None, kept, f"the source cannot be loaded: {exc}")
    if kept and _source_changed(record, item):
        because = "the source's content has changed since the run (its sha256 is not the one recorded)"
        return _Source(_read_kept(folder, kept, "RGB"), None, kept, because)
    return _Source(fit_image(original, item.width, item.height, item.resize), original.size)


def _source_changed(record: dict, item: WorkItem) -> bool:
    """Whether the local source's content differs from what the item's record hashed when it ran (False where
    that is not known: a URL, no record of the hash)."""
    recorded = record.get("source_sha256")
    if item.source.is_url or not isinstance(recorded, str) or not recorded:
        return False
    return file_identity(item.source.key)[1] not in ("", recorded)


def _kept_name(row: dict, record: dict, column: str) -> str:
    """The copy under sources/ that the row (else the item's record) names in `column`; "" where none is kept.
    The record as well: metadata.csv names masks as given for all rows where some have no kept mask."""
    for name in (row.get(column), record.get(column)):
        folder, _, bare = name.partition("/") if isinstance(name, str) else ("", "", "")
        if folder == SOURCES_DIR and is_bare_name(bare):
            return name
    return ""


def _read_kept(folder: Path, name: str, mode: str) -> Image.Image:
    """A kept fitted copy as the run wrote it: a PNG of the mode the pipeline was given. Anything else (a lossy
    format, another mode) is not bit for bit the image the run used, so it cannot stand in for it."""
    try:
        with open(open_regular(folder / name), "rb") as handle, Image.open(handle, formats=["PNG"]) as stored:
            if stored.mode != mode:
                raise ValueError(f"its mode is {stored.mode}, not the {mode} of the copy the run kept")
            stored.load()
            return stored.copy()
    except UnidentifiedImageError:
        problem = "it is not a PNG, so not the lossless copy of the image the run was given"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    raise ReproduceError(f"cannot use the kept copy {folder / name}: {problem}")


def _fitted_mask(folder: Path, row: dict, record: dict, item: WorkItem, source: _Source, fetch: FetchOptions):
    """The mask the item was made through (None without one): the fitted mask kept under sources/ (keep_sources),
    else the mask file as given (`mask`; older rows name it as mask_file_name), fitted again as the run fitted it."""
    kept = _kept_name(row, record, KEPT_MASK_COLUMN)
    if kept:
        return _read_kept(folder, kept, "L")
    name = row.get(KEPT_MASK_COLUMN) or row.get("mask") or ""
    if not name:
        return None
    if source.original_size is None:  # fitted with the original's geometry, which the kept source no longer tells
        raise ReproduceError(f"cannot fit the mask {name}: {source.because}, and the job kept no fitted mask")
    try:
        return MaskLoader(fetch).fitted(replace(item, mask=source_ref(name, Path("/"))), source.original_size)
    except (OSError, SourceError) as exc:
        raise ReproduceError(f"cannot load the mask {name}: {exc}") from None


# The columns of every row (a mask parameter's are in masked jobs only)
REQUIRED_COLUMNS = ("file_name", "item_id", "job", "source", "prompt", "seed_derived", *(p.column for p in needing()))


def _blank_is_one(value):
    return value or 1  # rows written before batch sizes were recorded leave the cell empty


def _blank_is_none(value):
    return None if value == "" else value  # a parameter the task takes none of (strength for kontext)


# The row's values a re-render uses, held to the limits a manifest has (extra columns are ignored).
_RowValues = create_model(
    "_RowValues",
    **{
        # blank: a parameter the task does not take (strength for kontext); a mask parameter's column is optional
        p.column: (Annotated[p.value | None, BeforeValidator(_blank_is_none)], ...) if p.needs is None
        else (p.value, p.default_for())
        for p in axes()
    },  # fmt: skip
    batch_size=(Annotated[int, BeforeValidator(_blank_is_one), Field(ge=1, le=64)], 1),
)


def find_row(metadata_csv: Path, item_id: str) -> dict:
    if metadata_csv.is_dir():
        hint = " (pass its metadata.csv)" if (metadata_csv / "metadata.csv").is_file() else ""
        raise ReproduceError(f"{metadata_csv} is a folder; reproduce reads a job's metadata.csv{hint}")
    try:  # a regular file only: a FIFO or /dev/zero given as the CSV must not hang or fill memory
        with open(open_regular(metadata_csv), encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            # a manifest CSV, say: "no item" would send the user looking for a wrong id
            missing = ", ".join(name for name in ("file_name", "item_id") if name not in (reader.fieldnames or ()))
            if missing:
                raise ReproduceError(f"{metadata_csv}: not a batch-edit metadata.csv: it lacks the column(s) {missing}")
            rows = list(reader)
    except FileNotFoundError:
        raise ReproduceError(f"{metadata_csv}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReproduceError(f"{metadata_csv}: cannot be read as a metadata CSV: {exc}") from None
    for row in rows:
        if row.get("item_id") == item_id:
            return row
    close = difflib.get_close_matches(item_id, [row.get("item_id", "") for row in rows], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ReproduceError(f"{metadata_csv}: no item {item_id!r}{hint}")


def item_from_row(row: dict) -> WorkItem:
    ref = source_ref(row["source"], Path("/"))
    return WorkItem(
        job=row["job"],
        item_id=row["item_id"],
        source=ref,
        prompt=row["prompt"],
        seed_derived=row["seed_derived"] == "True",
        # the value as the item asked it (not the fitted size)
        **{p.name: _cell_value(row, p) for p in axes()},
    )


def _cell_value(row: dict, p):
    if p.column not in row:  # a mask parameter's column is in masked jobs only
        return p.default_for()
    return p.parse(row[p.column]) if row[p.column] != "" else None  # blank: a parameter its task does not take


def compare(image: Image.Image, stored_path: Path, item_id: str) -> Comparison:
    try:
        with open(open_regular(stored_path), "rb") as handle, Image.open(handle) as stored:  # a FIFO never blocks
            stored_pixels = np.asarray(stored.convert("RGB"), dtype=np.int16)
            image = as_stored(image, stored)  # jpeg/webp: compared after the same lossy encoding
    except (FileNotFoundError, OSError) as exc:
        raise ReproduceError(f"cannot read the stored image {stored_path}: {exc}") from None
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    if pixels.shape != stored_pixels.shape:
        return Comparison(item_id, stored_path, 255, 1.0, size_matches=False)
    difference = np.abs(pixels - stored_pixels)
    return Comparison(
        item_id, stored_path, int(difference.max()), float((difference.max(axis=2) > 0).mean()), size_matches=True
    )


def _recorded_config(folder: Path, name: str) -> Path:
    """The config the row names (`.batch-edit/pipelines/<hash>.yaml`); rows written before configs were kept per
    hash name none, and use the one config such runs kept, `.batch-edit/pipeline.yaml`."""
    if name and not CONFIG_HASH.fullmatch(name):
        raise ReproduceError(f"{folder}: pipeline_config {name!r} is not a config hash; pass --pipeline")
    path = folder / STATE_DIR / (f"{PIPELINES_DIR}/{name}.yaml" if name else "pipeline.yaml")
    try:
        job_files.refuse_unsafe(path)
    except UnsafeOutputError as exc:
        raise ReproduceError(str(exc)) from None
    if not path.exists():
        raise ReproduceError(f"{folder} has no recorded pipeline config ({path}); pass --pipeline")
    return path
