"""The source and mask a re-render starts from: the files as given, fitted again as the run fitted them, or the
fitted copies the job kept under sources/ (keep_sources) where those are gone or changed; and what the records
show changed since the run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import ReproduceError
from .local_files import open_regular
from .masks import MaskLoader
from .outputs import SOURCES_DIR
from .pipeline_config import PipelineConfig
from .plan import WorkItem
from .records import config_hash, is_bare_name
from .result_files import KEPT_DIGESTS, KEPT_MASK_COLUMN, SOURCE_IMAGE_COLUMN, pixels_digest
from .source_decoding import SourceError, applied_orientation, decode_image
from .source_identity import file_identity
from .sources import FetchOptions, SourceRef, SourceSpecError, fit_image, source_bytes, source_ref


@dataclass(frozen=True)
class Source:
    """The fitted image the pipeline is given, the original's size (None: only the kept fitted copy is known) and
    the kept copy used in the source's place, with why."""

    fitted: Image.Image
    original_size: tuple[int, int] | None
    kept: str = ""
    because: str = ""
    note: str = ""  # the kept copy is missing, so the source as given stood in for it
    changed: bool = False  # the source as given has other content than the run's (its sha256 is not recorded)
    orientation: int = 1  # the EXIF orientation the original was turned by (its mask is fitted alike)


def pipeline_source(folder: Path, row: dict, record: dict, item: WorkItem, fetch: FetchOptions) -> Source:
    """The source as given, fitted again as the run fitted it (so the fitting is checked too), while it is the
    run's; where it is gone (a deleted file, a URL that no longer serves) or its content changed, the fitted copy
    the job kept (keep_sources): a PNG of the very RGB pixels the pipeline was given, so nothing is lost."""
    kept, expected = _kept_name(row, record, SOURCE_IMAGE_COLUMN), _expected(record, item, SOURCE_IMAGE_COLUMN)
    try:
        data = source_bytes(item.source, fetch)
        original = decode_image(data)
    except SourceError as exc:
        copy = _read_kept(folder, kept, "RGB", KEPT_SOURCE, expected) if kept else None
        if copy is None:
            hint = f", and its kept copy {folder / kept} is missing" if kept else NO_KEPT_COPY
            raise ReproduceError(f"cannot load the source {item.source.key}: {exc}{hint}") from None
        return Source(copy, None, kept, f"the source cannot be loaded: {exc}")
    fitted = fit_image(original, item.width, item.height, item.resize)
    changed = _content_changed(record, "source", item.source, data)  # a URL's too, as fetched now
    if kept and changed:
        copy = _read_kept(folder, kept, "RGB", KEPT_SOURCE, expected)
        if copy is not None:
            return Source(copy, None, kept, SOURCE_CHANGED)
        # the changed source is all there is: re-rendered from it, and said (with the change, if it differs)
        return Source(
            fitted,
            original.size,
            orientation=applied_orientation(original),
            note=f"the kept source copy {folder / kept} is missing: re-rendered from the source as given",
            changed=True,
        )
    return Source(fitted, original.size, changed=changed, orientation=applied_orientation(original))


KEPT_SOURCE, KEPT_MASK = "the fitted source the run used", "the fitted mask the run used"
NO_KEPT_COPY = " (the job kept no copy of it: keep_sources: true keeps one)"
SOURCE_CHANGED = "the source's content has changed since the run (its sha256 is not the one recorded)"


def _content_changed(record: dict, kind: str, ref: SourceRef, data: bytes | None = None) -> bool:
    """Whether a source's (or mask's) content differs from what the item's record hashed when it ran (False
    where that is not known: no record of the hash, as for URLs in records written before they were hashed, or a
    URL whose bytes are not at hand)."""
    recorded = record.get(f"{kind}_sha256")
    if not isinstance(recorded, str) or not recorded:
        return False
    if data is not None:
        return hashlib.sha256(data).hexdigest() != recorded
    return not ref.is_url and file_identity(ref.key)[1] not in ("", recorded)


def _kept_name(row: dict, record: dict, column: str) -> str:
    """The copy under sources/ that the row (else the item's record) names in `column`; "" where none is kept.
    The record as well: metadata.csv names masks as given for all rows where some have no kept mask."""
    for name in (row.get(column), record.get(column)):
        folder, _, bare = name.partition("/") if isinstance(name, str) else ("", "", "")
        if folder == SOURCES_DIR and is_bare_name(bare):
            return name
    return ""


@dataclass(frozen=True)
class Expected:
    """What the run's kept copy is known to be: its size (the item's fitted size, the result's) and, in records
    written since it was recorded, the sha256 of its pixels ("" where the record has none)."""

    size: tuple[int, int]
    digest: str


def _expected(record: dict, item: WorkItem, column: str) -> Expected:
    """What the kept copy must be: the fitted size the record gives (`fit` keeps the source's shape, so it is
    not always the size asked) and the pixels' digest where recorded."""
    digest = record.get(KEPT_DIGESTS[column])
    width, height = record.get("width"), record.get("height")
    fitted = (width, height) if all(isinstance(side, int) and side > 0 for side in (width, height)) else None
    return Expected(fitted or (item.width, item.height), digest if isinstance(digest, str) else "")


def _read_kept(folder: Path, name: str, mode: str, what: str, expected: Expected) -> Image.Image | None:
    """A kept fitted copy as the run wrote it: a PNG of the mode and size the pipeline was given, with the pixels
    the record hashed; None where it is gone (the caller falls back or says what is missing). Anything else (a
    lossy format, another mode or size, an edited copy) is not bit for bit the image the run used, so it cannot
    stand in for it."""
    try:
        with open(open_regular(folder / name), "rb") as handle, Image.open(handle, formats=["PNG"]) as stored:
            if stored.mode != mode:
                raise ValueError(f"its mode is {stored.mode}, not the {mode} of the copy the run kept")
            if stored.size != expected.size:
                shown, fitted = (f"{w}x{h}" for w, h in (stored.size, expected.size))
                raise ValueError(f"it is {shown}, not the {fitted} the item was rendered at: resized since the run")
            stored.load()
            if expected.digest and pixels_digest(stored) != expected.digest:
                raise ValueError("its pixels are not those the run kept (their sha256 is not the one recorded)")
            return stored.copy()
    except FileNotFoundError:
        return None
    except UnidentifiedImageError:
        problem = "it is not a PNG, so not the lossless copy of the image the run was given"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    except ValueError as exc:
        problem = str(exc)
    raise ReproduceError(f"cannot use the kept copy {folder / name} ({what}): {problem}")


@dataclass(frozen=True)
class Mask:
    """The fitted mask the pipeline is given (None: the item has none), the mask file as given when it was read
    (its content may have changed since the run), and what stood in for a missing kept mask."""

    image: Image.Image | None = None
    as_given: SourceRef | None = None
    note: str = ""


def fitted_mask(folder: Path, row: dict, record: dict, item: WorkItem, source: Source, fetch: FetchOptions):
    """The mask the item was made through: the fitted mask kept under sources/ (keep_sources), else the mask file
    as given (`mask`; older rows name it as mask_file_name, newer records as `mask`), fitted again as the run
    fitted it."""
    kept = _kept_name(row, record, KEPT_MASK_COLUMN)
    name = _mask_as_given(row, record, kept)
    expected = _expected(record, item, KEPT_MASK_COLUMN)
    if kept and (copy := _read_kept(folder, kept, "L", KEPT_MASK, expected)) is not None:
        return Mask(copy)
    missing = f"the kept mask {folder / kept} is missing" if kept else ""
    if not name:
        if kept:
            raise ReproduceError(f"cannot use the mask: {missing}, and the records name no mask file as given")
        return Mask()
    if source.original_size is None:  # fitted with the original's geometry, which the kept source no longer tells
        because = missing or "the job kept no fitted mask"
        raise ReproduceError(f"cannot fit the mask {name}: {source.because}, and {because}")
    try:
        ref = source_ref(name, Path("/"))  # a folder now stands where the mask file was: refused
        image = MaskLoader(fetch).fitted(replace(item, mask=ref), source.original_size, source.orientation)
    except (OSError, SourceError, SourceSpecError) as exc:
        raise ReproduceError(f"cannot load the mask {name}: {exc}{f' ({missing})' if missing else ''}") from None
    return Mask(image, ref, f"{missing}, so the mask file as given was fitted again" if missing else "")


def names_a_mask(row: dict, record: dict) -> bool:
    """Whether the item was made through a mask: its row or record names a kept fitted mask or a mask file."""
    kept = _kept_name(row, record, KEPT_MASK_COLUMN)
    return bool(kept or _mask_as_given(row, record, kept))


def _mask_as_given(row: dict, record: dict, kept: str) -> str:
    return row.get("mask") or record.get("mask") or ("" if kept else row.get(KEPT_MASK_COLUMN)) or ""


def changed_since_the_run(record: dict, row: dict, source: Source, mask, recorded) -> tuple:
    """What the records show changed since the run, where a re-render differs: the content of the source or of
    the mask as given (their sha256), or a local LoRA, checkpoint file or model folder (the sizes and modification
    times in the pipeline's identity, which the row's config hash covers; only with the config the run recorded, since
    another config differs from it by design)."""
    notes = []
    if not source.kept and source.changed:
        notes.append(SOURCE_CHANGED)
    if mask is not None and _content_changed(record, "mask", mask):
        notes.append("the mask's content has changed since the run (its sha256 is not the one recorded)")
    files = _stamped_files(recorded, record) if recorded is not None else []
    if files and row.get("pipeline_config") not in ("", None, config_hash(_identity_as_run(recorded, record))):
        notes.append(
            f"a LoRA or model file was replaced or touched since the run (its size or modification time is not the "
            f"one the run's pipeline_config {row['pipeline_config']} hashed): {', '.join(files)}"
        )
    return tuple(notes)


FOLDER_STAMPS = {"model_files": "model", "base_files": "base_model"}  # identity key -> the folder it stamps


def _identity_as_run(config: PipelineConfig, record: dict) -> dict:
    """The recorded config's identity as the run hashed it: a version that stamped no model folder recorded no
    stamp, so none is hashed for it."""
    return {key: value for key, value in config.identity().items() if key not in FOLDER_STAMPS or key in record}


def _stamped_files(config: PipelineConfig, record: dict) -> list[str]:
    """The local files the pipeline's identity names by size and modification time (a model folder by its weight
    files, named where its stamp is not the one the item's record holds)."""
    files = [str(lora.loaded_file()) for lora in config.loras if lora.is_local]
    identity = config.identity()
    folders = [getattr(config, field) for key, field in FOLDER_STAMPS.items() if record.get(key, identity.get(key))
               != identity.get(key)]  # fmt: skip
    return [config.model, *folders, *files] if config.is_single_file else [*folders, *files]
