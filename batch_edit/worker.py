"""What a worker does with items, the same code in one process and in each Ray worker: prepare (load and fit each
item's source, and its mask), generate (items sharing parameters and fitted size in batches, halved on out-of-memory; a failing
batch becomes its items' failures; a masked result composited over its source) and encode (the result file's bytes with
its metadata; a result that cannot be encoded is that item's "encode" failure).

Nothing here writes a job folder: results are small picklable `ItemResult`s that the driver (`runner.py`) records.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from PIL import Image

from .errors import OutOfMemory, OutputError
from .kept_downloads import KeptDownloads
from .masks import MaskLoader, composited
from .plan import WorkItem
from .result_files import Failure, ItemResult, encode_result
from .source_decoding import SourceError, applied_orientation, decode_image
from .sources import FetchOptions, SourceRef, fit_image, source_bytes

log = logging.getLogger("batch_edit.runner")


@dataclass(frozen=True)
class Task:
    """One pending item as the driver hands it out."""

    item: WorkItem
    keep_source: bool = False  # a before/after pair: the result carries the fitted source too


@dataclass(frozen=True)
class Prepared:
    """An item with its inputs loaded and fitted, or why they could not be."""

    task: Task
    image: Image.Image | None = None
    mask: Image.Image | None = None  # fitted as the source was; None for items without one
    failure: Failure | None = None
    fetched_sha256: str = ""  # a URL source's: the sha256 of the bytes downloaded (a local one's is its id's)

    @property
    def group(self) -> tuple:
        """Items that may share one pipeline call: same job, parameters and fitted size."""
        item = self.task.item
        return (item.job, item.batch_key, self.image.size)


@dataclass(frozen=True)
class Generated:
    """An item's generated image (or its failure), before encoding."""

    prepared: Prepared
    image: Image.Image | None = None
    failure: Failure | None = None
    batch_size: int = 0
    seconds: float = 0.0


class ErrorLog:
    """Each distinct error's traceback once; repeats get one line, so a systematic fault can't flood the log."""

    def __init__(self):
        self.seen: set = set()

    def error(self, exc: BaseException, context: str) -> None:
        key = (type(exc).__name__, str(exc))
        if key in self.seen:
            log.error("%s: %s: %s (traceback above)", context, *key)
        else:
            self.seen.add(key)
            log.error("%s", context, exc_info=exc)


def prepare(
    tasks: Sequence[Task], fetch: FetchOptions, errors: ErrorLog, stopped: Callable[[], bool] = lambda: False
) -> Iterator[Prepared]:
    """Load and fit each task's source (and mask); one that cannot be used is that item's "load" failure. The
    tasks are known in advance (a run's, a Ray batch's): their URL sources are downloaded ahead, and kept for the
    later items that load them again."""
    kept = KeptDownloads([task.item.source for task in tasks], _loader(fetch))
    sources, masks = SourceCache(fetch, kept=kept), MaskLoader(fetch)
    try:
        for task in tasks:
            if stopped():
                return
            item = task.item
            try:
                original = sources.get(item.source)
                image = fit_image(original, item.width, item.height, item.resize)
                mask = masks.fitted(item, original.size, applied_orientation(original))  # None without one
            except SourceError as exc:
                yield Prepared(task, failure=Failure.of("load", exc))
                continue
            except Exception as exc:  # a decoder bug on one odd file is that item's failure, not the run's
                errors.error(exc, f"could not prepare {item.source.key}")
                yield Prepared(task, failure=Failure.of("load", exc))
                continue
            yield Prepared(task, image, mask, fetched_sha256=sources.digests.get(item.source, ""))
    finally:
        kept.close()


def in_batches(
    prepared: Iterable[Prepared], batch_size: int, hold: int | None = None
) -> Iterator[Prepared | list[Prepared]]:
    """Batches of items that may share a call, failures as they come. Items arrive sorted by batch key within
    each job (the driver sorts them), so a batch is handed out as soon as it is full or its key is past (it can
    grow no more): the same batches as holding each until the job ends, without holding the job's fitted images.
    Within one key, fitted sizes that differ (`resize: fit` over photos of many shapes) make batches that may
    still grow: once more than `hold` items (4 batches' worth by default) wait in them, the one that grew least
    recently goes out as it is, so what waits here stays bounded however long the job."""
    hold = 4 * batch_size if hold is None else hold
    open_batches: OrderedDict[tuple, list[Prepared]] = OrderedDict()
    waiting, key = 0, None
    for ready in prepared:
        item = ready.task.item
        if (item.job, item.batch_key) != key:  # the key moved on: every open batch is complete
            yield from open_batches.values()
            open_batches.clear()
            waiting, key = 0, (item.job, item.batch_key)
        if ready.failure is not None:
            yield ready
            continue
        batch = open_batches.setdefault(ready.group, [])
        open_batches.move_to_end(ready.group)
        batch.append(ready)
        waiting += 1
        if len(batch) >= batch_size:
            waiting -= len(batch)
            yield open_batches.pop(ready.group)
        elif waiting > hold:
            _, oldest = open_batches.popitem(last=False)
            waiting -= len(oldest)
            yield oldest
    yield from open_batches.values()


def encode_upfront(engine, prompts: list[str]) -> None:
    """Every distinct prompt encoded before the first batch when they all fit the cache (then the text encoders
    can go)."""
    prompts = list(dict.fromkeys(prompts))
    if prompts and len(prompts) <= engine.config.prompt_cache:
        engine.encode_prompts(prompts)


class Worker:
    """One resident engine: generates batches and encodes results. `pipeline` holds the pipeline fields every
    result's record carries (model, dtype, ... and the config's hash)."""

    def __init__(self, engine, pipeline: dict, prompts: list[str] = ()):
        self.engine, self.pipeline = engine, pipeline
        self.errors = ErrorLog()
        encode_upfront(engine, prompts)

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    def run(self, batch: list[Prepared]) -> list[ItemResult]:
        """generate() then encode(): a batch's results, as a remote worker sends them back."""
        return [self.encode(generated) for generated in self.generate(batch)]

    def generate(self, batch: list[Prepared], retry: bool = False) -> list[Generated]:
        """The batch's images; after an out-of-memory, each half on its own (`retry`: never padded back up to
        the batch size under compile)."""
        started = time.monotonic()
        items, sources, masks = [p.task.item for p in batch], [p.image for p in batch], [p.mask for p in batch]
        try:
            masked = {"masks": masks} if any(mask is not None for mask in masks) else {}
            images = self.engine.generate(items, sources, **masked, pad=not retry)
            images = [composited(*made) for made in zip(items, images, sources, masks)]
        except OutOfMemory as exc:
            if len(batch) == 1:
                return [Generated(batch[0], failure=Failure.of("generate", exc))]
            half = len(batch) // 2
            log.warning("%s: retrying as batches of %d and %d", exc, half, len(batch) - half)
            return self.generate(batch[:half], retry=True) + self.generate(batch[half:], retry=True)
        except OutputError:
            raise
        except Exception as exc:  # one bad batch must not end an overnight run: its items fail, the run goes on
            self.errors.error(exc, f"generation failed for {len(batch)} item(s)")
            return [Generated(p, failure=Failure.of("generate", exc)) for p in batch]
        # The call's batch size is recorded: on a GPU, results repeat bitwise only at the same batch size.
        seconds = round((time.monotonic() - started) / len(batch), 3)
        return [Generated(p, image, batch_size=len(batch), seconds=seconds) for p, image in zip(batch, images)]

    def encode(self, generated: Generated) -> ItemResult:
        prepared = generated.prepared
        item = prepared.task.item
        if generated.failure is not None:
            return ItemResult(item.job, item.item_id, failure=generated.failure)
        extra = {**self.pipeline, "batch_size": generated.batch_size, "seconds": generated.seconds}
        if prepared.fetched_sha256:  # so `reproduce` can tell a URL that now serves other content
            extra["source_sha256"] = prepared.fetched_sha256
        kept = (prepared.image, prepared.mask) if prepared.task.keep_source else ()
        try:
            encoded = encode_result(item, generated.image, extra, *kept)
        except Exception as exc:  # a result that cannot be encoded (JPEG's EXIF over 64 KB) is that item's failure
            self.errors.error(exc, f"could not encode the result of item {item.item_id}")
            return ItemResult(item.job, item.item_id, failure=Failure.of("encode", exc))
        return ItemResult(item.job, item.item_id, encoded)


class SourceCache:
    """Decoded sources, so a sweep decodes (or downloads) its image once; failures are remembered too.

    Bounded by count and by decoded bytes: twelve 9000x9000 photos are 2.9 GB of pixels, which a run making
    small outputs must not hold. The newest image always stays, however large, so a sweep over one huge
    source still decodes it once."""

    def __init__(
        self, fetch: FetchOptions, size: int = 16, max_bytes: int = 512 * 1024 * 1024, kept: KeptDownloads | None = None
    ):
        self.fetch, self.size, self.max_bytes = fetch, size, max_bytes
        self.kept = kept if kept is not None else KeptDownloads((), _loader(fetch))  # URL sources' downloads
        self.images: OrderedDict[SourceRef, Image.Image] = OrderedDict()
        self.errors: dict[SourceRef, SourceError] = {}
        self.digests: dict[SourceRef, str] = {}  # URLs' downloaded bytes (one hash each, however many items)
        self.bytes = 0

    def get(self, ref: SourceRef) -> Image.Image:
        if ref in self.errors:
            self.kept.passed(ref)
            raise self.errors[ref]
        if ref in self.images:
            self.kept.passed(ref)
            self.images.move_to_end(ref)
            return self.images[ref]
        try:
            data = self.kept.load(ref)
            image = decode_image(data)
        except SourceError as exc:
            self.errors[ref] = exc
            raise
        if ref.is_url:
            self.digests[ref] = hashlib.sha256(data).hexdigest()
        self.images[ref] = image
        self.bytes += _pixel_bytes(image)
        while len(self.images) > 1 and (len(self.images) > self.size or self.bytes > self.max_bytes):
            _, oldest = self.images.popitem(last=False)
            self.bytes -= _pixel_bytes(oldest)
        return image


def _loader(fetch: FetchOptions) -> Callable[[SourceRef], bytes]:
    return lambda ref: source_bytes(ref, fetch)


def _pixel_bytes(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())
