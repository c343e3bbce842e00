"""Re-render one recorded item from its metadata row and compare it with the image on disk."""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BeforeValidator, Field, ValidationError, create_model

from . import job_files
from .csv_manifest import DECIMAL_COMMA
from .csv_table import CsvTableError, decode_csv, delimiter_of
from .errors import BatchEditError, PipelineLoadError, ReproduceError, UnsafeOutputError
from .formats import as_stored, embedded_record
from .local_files import open_regular
from .masks import composited
from .outputs import PIPELINES_DIR, STATE_DIR
from .parameters import axes, needing
from .pipeline_config import MASKED_TASKS, PipelineConfig, load_pipeline_config
from .plan import WorkItem
from .records import JobRecords, is_bare_name, supersede_key
from .reproduce_inputs import changed_since_the_run, fitted_mask, names_a_mask, pipeline_source
from .sources import FetchOptions, source_ref
from .validation import describe_validation_error

CONFIG_HASH = re.compile(r"[0-9a-f]{16}")
NO_IMAGE = ", so there is no image to compare"
# a difference of at most 1/255 where the records show no input changed
ROUNDING_NOTE = (
    "differences this small usually come from float rounding (a torch thread count, batch size, device or library "
    "version other than the run's), not from different inputs"
)
CACHED_IN_COMPANY_NOTE = (
    "it was made with first_block_cache in a batch of {}, by a version that cached steps for a whole batch: "
    "which steps it skipped depended on the other items of that batch; re-rendered alone, as step caching now "
    "runs, it need not match"
)


@dataclass(frozen=True)
class Comparison:
    item_id: str
    stored: Path
    max_difference: int  # largest per-channel difference, out of 255
    differing_fraction: float  # share of pixels with any difference
    size_matches: bool
    kept_source: str = ""  # the kept fitted source (keep_sources) re-rendered from, in the source's place
    kept_because: str = ""  # why the source as given could not stand in
    # lines under the verdict: what stood in for a missing kept copy, and (when different) what the records show
    # changed since the run (the source's or the mask's content, a LoRA or checkpoint file)
    notes: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return self.size_matches and self.max_difference == 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def named_item(path: Path, item_id: str | None) -> tuple[Path, str]:
    """The metadata.csv and the item `reproduce` was asked for: a job's metadata.csv with `item_id`, or a result
    image in its job folder, whose embedded record names the item (`item_id`, if also given, must agree)."""
    refuse_folder(path)  # a job folder given for its metadata.csv: said before asking for --item
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        if item_id is None:
            raise ReproduceError(f"{path}: --item ITEM_ID is needed with a metadata.csv (or give a result image)")
        return path, item_id
    record = embedded_record(read_stored(path).image)
    if not record or not isinstance(record.get("item_id"), str):
        raise ReproduceError(
            f"{path}: carries no batch-edit record (not a result batch-edit wrote, or its metadata was stripped): "
            "give the job's metadata.csv and --item ITEM_ID"
        )
    named = record["item_id"]
    if item_id is not None and item_id != named:
        raise ReproduceError(f"{path}: is the result of item {named}, not of --item {item_id}")
    metadata = path.parent / "metadata.csv"
    if not metadata.is_file():
        raise ReproduceError(
            f"{path}: item {named}'s result, but no metadata.csv is beside it (a copy outside its job folder?): "
            f"give the job's metadata.csv and --item {named}"
        )
    return metadata, named


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
    given = config_path or _recorded_config(folder, row.get("pipeline_config") or "")
    config = load_pipeline_config(given, recorded=config_path is None)  # recorded: as its version wrote it
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
    _refuse_unfit_mask(metadata_csv, item_id, row, record, config.task)
    stored = read_stored(folder / row["file_name"])  # before the model loads, which takes minutes on a GPU
    source = pipeline_source(folder, row, record, item, fetch)
    mask = fitted_mask(folder, row, record, item, source, fetch)
    try:
        engine = load_engine(config)
    except PipelineLoadError as exc:
        if config_path is not None:
            raise
        raise PipelineLoadError(
            f"{exc} (in the config the run recorded, {given}: pass --pipeline CONFIG to re-render with another, "
            "such as the model's new place)"
        ) from None
    # Same batch size as the original call (`copies`): on a GPU, results repeat bitwise only at that batch size.
    # Step caching runs one item per call; a record of a larger batch was made in company it cannot be given.
    in_company = copies if config.first_block_cache and copies > 1 else 0
    copies = 1 if in_company else copies
    masks = {"masks": [mask.image] * copies} if mask.image is not None else {}
    try:
        (image, *_) = engine.generate([item] * copies, [source.fitted] * copies, **masks)
    except ValueError as exc:  # the engine's own checks of what it is given: the item, not the images, is at fault
        raise ReproduceError(f"{metadata_csv}: item {item_id}: the pipeline cannot re-render it: {exc}") from None
    result = compare(composited(item, image, source.fitted, mask.image), stored, item_id)
    notes = tuple(note for note in (source.note, mask.note) if note)
    if not result.identical:
        changed = changed_since_the_run(record, row, source, mask.as_given, config if not config_path else None)
        if changed or in_company:
            notes += changed or (CACHED_IN_COMPANY_NOTE.format(in_company),)
        elif result.size_matches and result.max_difference <= 1:
            notes += (ROUNDING_NOTE,)
    return replace(result, kept_source=source.kept, kept_because=source.because, notes=notes)


def _refuse_unfit_mask(metadata_csv: Path, item_id: str, row: dict, record: dict, task: str) -> None:
    """A masked item needs a config of a masked task, and an item without a mask one of another task (a config
    given with --pipeline may be of any task): refused before the model loads."""
    masked = names_a_mask(row, record)
    if masked != (task in MASKED_TASKS):
        has = "has a mask" if masked else "has no mask"
        needs = "takes no mask" if masked else "needs one"
        raise ReproduceError(
            f"{metadata_csv}: item {item_id} {has}, but the {task} task of the pipeline config {needs}: "
            "pass a config of the task the item was made with"
        )


def _record(folder: Path, item_id: str) -> dict:
    """The item's latest record ({} where the folder has none readable): its source's hash and kept copies."""
    return _records(folder).get(item_id, {})


def _records(folder: Path) -> dict[str, dict]:
    """The latest record per item ({} where the folder has none readable)."""
    try:
        return JobRecords(folder.parent, folder.name).read_records()
    except BatchEditError:
        return {}


def _superseded(folder: Path, record: dict, records: dict[str, dict], in_csv: set) -> str:
    """A result no longer listed because another item of the same source path, prompt and parameters (of another
    content of the source or mask, or another pipeline) took its row: which item, as the records tell; "" where
    none did (metadata.csv edited by hand, say)."""
    key = supersede_key(record)
    # a failure or a pruning supersedes no result (JobRecords.listed_ids)
    others = [r for r in records.values() if r is not record and r["status"] in ("ok", "rejected")]
    same = [other for other in others if supersede_key(other) == key]
    if not same:
        return ""
    other = next((other for other in same if other["item_id"] in in_csv), same[-1])
    changed = [
        what
        for field, what in (("source_sha256", "the source's content"), ("mask_sha256", "the mask's content"),
                            ("pipeline_config", "the pipeline config"))
        if record.get(field) != other.get(field)
    ]  # fmt: skip
    differ = f" (they differ in {' and '.join(changed)})" if changed else ""
    made = f"({other['file_name']})" if other["status"] == "ok" else f"(since {other['status']})"
    still = (folder / record["file_name"]).is_file()
    kept = f"; its image {record['file_name']} is still in the job folder" if still else ""
    return (
        f"was superseded by item {other['item_id']} {made} of the same source, prompt and parameters{differ}: "
        f"metadata.csv lists one of them, so it has no row to re-render {record['item_id']} from{kept}"
    )


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
        p.column: (Annotated[p.value | None, BeforeValidator(_blank_is_none)], ...)
        if p.needs is None
        else (p.value, p.default_for())
        for p in axes()
    },  # fmt: skip
    batch_size=(Annotated[int, BeforeValidator(_blank_is_one), Field(ge=1, le=64)], 1),
)


def refuse_folder(path: Path) -> None:
    if path.is_dir():
        hint = " (pass its metadata.csv)" if (path / "metadata.csv").is_file() else ""
        raise ReproduceError(f"{path} is a folder; reproduce reads a job's metadata.csv{hint}")


def find_row(metadata_csv: Path, item_id: str) -> dict:
    refuse_folder(metadata_csv)
    try:
        columns, rows = read_listing(metadata_csv)
    except FileNotFoundError:
        raise ReproduceError(f"{metadata_csv}: file not found") from None
    except (OSError, CsvTableError, csv.Error) as exc:
        raise ReproduceError(f"{metadata_csv}: cannot be read as a metadata CSV: {exc}") from None
    # a manifest CSV, say: "no item" would send the user looking for a wrong id
    missing = ", ".join(name for name in ("file_name", "item_id") if name not in columns)
    if missing:
        raise ReproduceError(f"{metadata_csv}: not a batch-edit metadata.csv: it lacks the column(s) {missing}")
    for row in rows:
        if row.get("item_id") == item_id:
            return row
    outcome = _latest_outcome(metadata_csv.parent, item_id, {row.get("item_id") for row in rows})
    if outcome:
        raise ReproduceError(f"{metadata_csv}: item {item_id} {outcome}")
    close = difflib.get_close_matches(item_id, [row.get("item_id", "") for row in rows], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ReproduceError(f"{metadata_csv}: no item {item_id!r}{hint}")


def _latest_outcome(folder: Path, item_id: str, in_csv: set) -> str:
    """Why an item of the job is not in its metadata.csv (`in_csv`: the ids it lists), from its latest record (else
    failures.csv, all a copied folder may keep): it failed, was rejected or pruned, or another item superseded it;
    "" where neither knows the item."""
    records = _records(folder)
    record = records.get(item_id, {})
    status = record.get("status")
    if status == "ok":
        return _superseded(folder, record, records, in_csv)
    listed = _failure_rows(folder, item_id)
    if status == "failed":  # failures.csv lists only the items the manifests planned at the last run
        where = "failures.csv lists it" if listed else "its record says so; failures.csv lists only planned items"
        return f"failed in its latest run ({_failure_text(record)}; {where}){NO_IMAGE}"
    if status == "pruned" and "failed_at" in record:  # a failure no longer planned: no image of it moved
        return f"failed in its latest run ({_failure_text(record)}), then was pruned as no longer planned{NO_IMAGE}"
    if status in ("rejected", "pruned"):
        where = " into .batch-edit/pruned/" if status == "pruned" else " (its image was deleted)"
        return f"was {status}{where}{NO_IMAGE}"
    return f"failed in its latest run ({_failure_text(listed[-1])}; from failures.csv){NO_IMAGE}" if listed else ""


def _failure_rows(folder: Path, item_id: str) -> list[dict]:
    try:
        return [row for row in read_listing(folder / "failures.csv")[1] if row.get("item_id") == item_id]
    except (OSError, CsvTableError, csv.Error):
        return []


def read_listing(path: Path) -> tuple[list[str], list[dict]]:
    """A job's metadata.csv or failures.csv: its columns and rows. Its text is read as CSV manifests are (a
    spreadsheet's re-save may add a byte-order mark, save UTF-16 with one, or use semicolons or tabs with decimal
    commas: no change to its cells); a regular file only, so a FIFO or /dev/zero given as the CSV cannot hang or
    fill memory. CsvTableError: not text."""
    with open(open_regular(path), "rb") as handle:
        delimiter, text = delimiter_of(decode_csv(handle.read()))
    # the header after a `sep=` line (left empty) or blank lines: DictReader would take an empty line as the header
    reader = csv.DictReader(io.StringIO(text.lstrip("\n"), newline=""), delimiter=delimiter)
    rows = list(reader)
    if delimiter != ",":  # a spreadsheet saving with ';' or tabs writes decimal commas too, as in CSV manifests
        for row in rows:
            for column in (p.column for p in axes() if p.decimal_comma):
                if DECIMAL_COMMA.fullmatch(row.get(column) or ""):
                    row[column] = row[column].replace(",", ".")
    return list(reader.fieldnames or ()), rows


def _failure_text(failure: dict) -> str:
    stage, kind, error = (str(failure.get(key) or "") for key in ("stage", "error_type", "error"))
    return f"{stage + ': ' if stage else ''}{kind + ': ' if kind else ''}{error or 'no error recorded'}"


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


@dataclass(frozen=True)
class StoredImage:
    path: Path
    pixels: np.ndarray  # RGB, as int16 so differences do not wrap
    image: Image.Image  # decoded, with the format (and record) a re-render is encoded like


def read_stored(path: Path) -> StoredImage:
    try:
        with open(open_regular(path), "rb") as handle, Image.open(handle) as stored:  # a FIFO never blocks
            stored.load()
            return StoredImage(path, np.asarray(stored.convert("RGB"), dtype=np.int16), stored)
    except FileNotFoundError:
        problem = "file not found"
    except UnidentifiedImageError:
        problem = "not an image Pillow can read"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    raise ReproduceError(f"cannot read the stored image {path}: {problem}")


def compare(image: Image.Image, stored: StoredImage, item_id: str) -> Comparison:
    stored_path, stored_pixels = stored.path, stored.pixels
    image = as_stored(image, stored.image)  # jpeg/webp: compared after the same lossy encoding
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
