"""A result as the bytes of its file, made where the image was made: the record row (item, pipeline, timing) and
the image encoded with that row in its metadata chunks, or the item's failure. Pure: nothing here touches a job
folder, so a worker on another machine sends these small picklable values and the job folder's writer
(`outputs.py`) writes the bytes and appends the same row to the record."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass

from PIL import Image

from .errors import first_line
from .file_names import safe_stem
from .formats import exif_length, save_image
from .infotext import a1111_parameters
from .masks import mask_fields
from .parameters import axes, metadata_columns
from .plan import WorkItem
from .records import SOURCES_DIR, config_hash
from .source_decoding import SourceError

# Not `source_file_name`: imagefolder would name that image column `source`, which the source path already is.
SOURCE_IMAGE_COLUMN = "source_image_file_name"
# The fitted mask kept under sources/ (imagefolder's `mask` image column); only then: imagefolder refuses a
# *_file_name that is not a file of the folder, so a mask file as given is the `mask` string column instead.
KEPT_MASK_COLUMN = "mask_file_name"
# The record's sha256 of a kept copy's pixels (not in metadata.csv): `reproduce` refuses a copy edited since
KEPT_DIGESTS = {SOURCE_IMAGE_COLUMN: "source_image_pixels_sha256", KEPT_MASK_COLUMN: "mask_image_pixels_sha256"}
# Which of its grid point's `variations` an item is, numbered from 0 as `{variation}` numbers it. Recorded for every
# item; a CSV column only in jobs that make several (a job of one variation keeps the columns it always had).
VARIATION_COLUMN = "variation"
PARAMETER_COLUMNS = metadata_columns()
FITTED = tuple(p.name for p in axes() if p.fitted)  # (width, height): a result's size, as PIL gives it


def item_fields(item: WorkItem, size: tuple[int, int] | None = None) -> dict:
    """The item's record fields; `size`: the result's, where it differs from the one asked for."""
    values = {name: getattr(item, name) for name in FITTED}
    values.update(zip(FITTED, size or ()))
    for p in axes():
        if p.needs is not None:
            continue  # mask_fields
        values[p.column] = getattr(item, p.name)
        values.update((name, getattr(item, name)) for name in p.columns[1:])
    return {
        "item_id": item.item_id,
        "job": item.job,
        "index": item.index,
        "source": item.source.key,
        "source_stat": item.source.stat,
        "source_sha256": item.source.fingerprint if len(item.source.fingerprint) == 64 else "",
        "prompt": item.prompt,
        **{column: values[column] for column in PARAMETER_COLUMNS},
        VARIATION_COLUMN: item.variation,
        **({"row": item.row} if item.row is not None else {}),
        **mask_fields(item),
    }


def variation_columns(rows: list[dict], planned: tuple[WorkItem, ...]) -> list[str]:
    """["variation"] where the job plans (or some row is) a variation past the first, else none: the manifest
    decides, so the columns do not change as the run gets further (`--limit`)."""
    past_first = any(item.variation > 0 for item in planned)
    past_first = past_first or any(isinstance(r.get(VARIATION_COLUMN), int) and r[VARIATION_COLUMN] > 0 for r in rows)
    return [VARIATION_COLUMN] * past_first


def mask_cells(done: list[dict]) -> tuple[list[dict], str | None]:
    """metadata.csv's rows with their mask cells, and the column that names the mask (None: no masks): the kept
    fitted mask where every masked row has one, else the mask file as given for all. Records written before the
    `mask` column was listed give that path as mask_file_name, which imagefolder refuses (not a file here)."""
    masked = ["mask" in r or KEPT_MASK_COLUMN in r for r in done]
    if not any(masked):
        return done, None
    if all(str(r.get(KEPT_MASK_COLUMN, "")).startswith(f"{SOURCES_DIR}/") for r, m in zip(done, masked) if m):
        return done, KEPT_MASK_COLUMN
    rows = [
        {**{k: v for k, v in r.items() if k != KEPT_MASK_COLUMN}, "mask": r.get("mask") or r.get(KEPT_MASK_COLUMN)}
        if m else r
        for r, m in zip(done, masked)
    ]  # fmt: skip
    return rows, "mask"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class Failure:
    """Why an item has no result: the stage ("load", "generate"), the error's type and first line (as failures.csv
    lists it), and its `reason`: the same without what varies per item (a source error's path or size), which the
    run's summary counts failures by, so 300 missing files make one "file not found: 300"."""

    stage: str
    error_type: str
    error: str
    reason: str

    @classmethod
    def of(cls, stage: str, error: BaseException, most: int = 100) -> Failure:
        message = first_line(error, None)
        # a SourceError's own reason; other libraries' `.reason` (urllib's, a UnicodeError's) is not one to count by
        reason = error.reason if isinstance(error, SourceError) else ""
        return cls(stage, type(error).__name__, message, first_line(reason or message, most))


@dataclass(frozen=True)
class EncodedResult:
    row: dict  # the record's fields, as the file carries them
    data: bytes  # the result file
    kept: tuple[tuple[str, bytes], ...] = ()  # before/after pairs: (name, PNG) of the fitted source and mask


@dataclass(frozen=True)
class ItemResult:
    """What comes back for one item (its job and id): its encoded result or its failure."""

    job: str
    item_id: str
    encoded: EncodedResult | None = None
    failure: Failure | None = None


def encode_result(
    item: WorkItem, image: Image.Image, extra: dict, source: Image.Image | None = None, mask: Image.Image | None = None
) -> EncodedResult:
    """The result file's bytes (A1111 text and the record in its metadata), and the fitted source and mask as PNG
    for before/after pairs."""
    fields, kept = kept_copies(item, source, mask)
    row = result_row(item, image.size, extra, fields)
    buffer = io.BytesIO()
    save_image(buffer, image, item.output, a1111_parameters(row), row)
    return EncodedResult(row, buffer.getvalue(), kept)


def pipeline_fields(used) -> dict:
    """The pipeline fields every record of a run with the resolved config `used` carries (model, dtype, ... and the
    config's hash, which names its kept copy)."""
    return {**used.recorded_fields(), "device": used.device, "pipeline_config": config_hash(used.identity())}


def result_row(item: WorkItem, size: tuple[int, int], extra: dict, kept: dict) -> dict:
    """The record a result carries (and is recorded with): `size` the result's, `extra` the pipeline's fields and
    the call's, `kept` the fields naming its kept copies."""
    row = {"file_name": item.output_name, **item_fields(item, size), **extra, "finished_at": now()}
    row.update(format=item.output.format, quality=item.output.quality)
    row.update(kept)
    return row


# What only the run knows of a result's record, at its narrowest and widest: the call's batch size (1-64), the
# seconds per item (rounded to ms), a `fit` result's size (each side 16-4096)
_RUN_VALUES = {False: (1, 0.0, 16), True: (64, 99999.999, 4096)}


def planned_exif_length(item: WorkItem, pipeline: dict, keep_source: bool, widest: bool) -> int:
    """The EXIF bytes (formats.exif_length) the item's JPEG or WebP result will carry, from the record it will be
    written with: what only the run knows at its narrowest or (`widest`) its widest, a URL's sha256 as 64 digits;
    nothing loaded or encoded."""
    batch_size, seconds, side = _RUN_VALUES[widest]
    size = (side, side) if item.resize == "fit" else (item.width, item.height)
    extra = {**pipeline, "batch_size": batch_size, "seconds": seconds}
    if item.source.is_url:
        extra["source_sha256"] = "0" * 64
    kept = {}
    if keep_source:
        kept[SOURCE_IMAGE_COLUMN], kept[KEPT_DIGESTS[SOURCE_IMAGE_COLUMN]] = source_file_name(item, size), "0" * 64
        if item.mask is not None:
            kept[KEPT_MASK_COLUMN] = source_file_name(item, size, item.mask)
            kept[KEPT_DIGESTS[KEPT_MASK_COLUMN]] = "0" * 64
    row = result_row(item, size, extra, kept)
    return exif_length(a1111_parameters(row), row)


def kept_copies(
    item: WorkItem, source: Image.Image | None, mask: Image.Image | None
) -> tuple[dict, tuple[tuple[str, bytes], ...]]:
    """The record fields naming the fitted source and mask kept for before/after pairs (and their pixels'
    sha256), and the (name, PNG) of each; made once for a new result, or later for a finished one."""
    fields, kept = {}, []
    if source is not None:
        fields[SOURCE_IMAGE_COLUMN] = source_file_name(item, source.size)
        fields[KEPT_DIGESTS[SOURCE_IMAGE_COLUMN]] = pixels_digest(source)
        kept.append((fields[SOURCE_IMAGE_COLUMN], _png(source)))
    if item.mask is not None and mask is not None:  # without it, the row's `mask` names the mask file as given
        fields[KEPT_MASK_COLUMN] = source_file_name(item, mask.size, item.mask)
        fields[KEPT_DIGESTS[KEPT_MASK_COLUMN]] = pixels_digest(mask)
        kept.append((fields[KEPT_MASK_COLUMN], _png(mask)))
    return fields, tuple(kept)


def source_file_name(item: WorkItem, size: tuple[int, int], mask=None) -> str:
    """One file per distinct fitted source (or mask: `mask` its ref), shared by every item made from it (a sweep
    writes it once): named from the source alone, never from the item's result name, which a `file_name`
    template makes distinct per item. The digest holds all a fitted copy depends on: the source's path and
    content, the fitted size (two sizes asked that fit to one share it) and the resize mode."""
    key = json.dumps([item.source.key, item.source.fingerprint, size, item.resize])
    if mask is not None:  # fitted with its source's geometry: the same mask over two sources is two files
        key = json.dumps([key, mask.key, mask.fingerprint])
    stem = safe_stem(item.source.stem) + ("-mask" if mask is not None else "")
    return f"{SOURCES_DIR}/{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.png"


def pixels_digest(image: Image.Image) -> str:
    """The sha256 of an image's mode, size and pixels: the same however its PNG is compressed."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height} ".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
