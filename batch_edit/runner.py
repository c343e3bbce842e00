"""The orchestrator: find pending items, load the pipeline once, run batches, record every outcome."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from .background import Prefetch, Writer
from .errors import BatchEditError, OutOfMemory, OutputError, OutputRefusedError
from .masks import MaskLoader, composited
from .outputs import JobOutput
from .pipeline_config import PipelineConfig, dump_pipeline_config
from .plan import JobPlan, WorkItem
from .progress import Progress
from .records import config_hash
from .signals import InterruptibleLoad, StopOnSignal
from .sources import FetchOptions, SourceError, SourceRef, fit_image, load_image

log = logging.getLogger(__name__)


@dataclass
class JobSummary:
    name: str
    folder: Path
    total: int
    already_done: int = 0
    rejected: int = 0  # skipped: `prune --rejected` recorded their deleted images as unwanted
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    held_back: int = 0  # pending items left for a later run by --limit


@dataclass
class RunResult:
    jobs: list[JobSummary]
    loaded_model: bool
    interrupted_by: int | None = None  # the signal that stopped the run early
    seconds: float = 0.0  # the progress line's elapsed time: from the first batch to the end of the last job

    @property
    def failed(self) -> int:
        return sum(job.failed for job in self.jobs)


@dataclass(frozen=True)
class RunOptions:
    fetch: FetchOptions = FetchOptions()
    overwrite: bool = False  # redo finished items too
    csv_every_s: float = 30.0  # metadata.csv / failures.csv are also rebuilt this often during a job
    limit: int | None = None  # run only the first N pending items, in plan order across jobs


class SourcesMissing(BatchEditError):
    """Every item's source is a local file that does not exist: nothing could run."""


def run(
    plans: list[JobPlan],
    config: PipelineConfig,
    output_root: Path,
    load_engine: Callable[[PipelineConfig], object],
    options: RunOptions = RunOptions(),
    check_engine: Callable[[PipelineConfig], None] = lambda config: None,
) -> RunResult:
    # 1. What is left to do: finished items (a record and an intact image under the planned name) are skipped
    #    unless overwriting; --limit keeps the first N.
    plans_by_name = {plan.name: plan for plan in plans}
    with _refused_before_running():
        outputs = {plan.name: JobOutput(output_root, plan.name) for plan in plans}
        for plan in plans:
            outputs[plan.name].follow_plan(plan.items)
        summaries = [JobSummary(plan.name, outputs[plan.name].folder, len(plan.items)) for plan in plans]
        pending = _pending(summaries, plans_by_name, outputs, options)
    active = [summary for summary in summaries if pending[summary.name]]
    if not active:
        for output in outputs.values():
            output.refresh()  # a run killed after its last item but before its CSVs or contact sheets were written
        return RunResult(summaries, loaded_model=False)
    _check_sources_exist([item for items in pending.values() for item in items])
    check_engine(config)  # refusals that need no weights come before anything is written
    with ExitStack() as stack:
        # 2. Lock every job folder this run will write, then load the one pipeline for the whole run. A job
        #    another run holds refuses the whole run, and the folders this one created go again.
        def recount() -> None:  # under the locks: a run that held a folder a moment ago may have finished items
            pending.update(_pending(active, plans_by_name, outputs, options))

        engine = _lock_and_load(stack, [outputs[s.name] for s in active], recount, config, load_engine)
        # 3. Each job in turn; the first SIGINT/SIGTERM stops the run after the batch in progress.
        stop = stack.enter_context(StopOnSignal())
        progress = stack.enter_context(Progress(sum(len(pending[s.name]) for s in active)))
        used = engine.config  # `auto` choices resolved by the engine
        pipeline = _PipelineRecord(used)
        context = _RunContext(engine, progress, engine.batch_size, options, pipeline.fields, stop)
        _encode_prompts_once(engine, [pending[s.name] for s in active])
        for summary in active:
            if stop.signal is None and pending[summary.name]:
                output = outputs[summary.name]
                output.start(pipeline.yaml, pipeline.hash)  # the config kept only now that it has loaded
                try:
                    job = _JobRun(context, output, summary, plans_by_name[summary.name].keep_sources)
                    job.run(pending[summary.name])
                finally:
                    output.finish()  # one open record at a time, however many jobs
    return RunResult(summaries, loaded_model=True, interrupted_by=stop.signal, seconds=progress.elapsed)


def _lock_and_load(stack: ExitStack, outputs: list[JobOutput], recount, config: PipelineConfig, load_engine):
    locked = []
    with InterruptibleLoad():
        try:
            with _refused_before_running():
                for output in outputs:
                    stack.callback(output.close)
                    locked.append(output)  # before lock(): a refused lock still removes what it created
                    output.lock()
                recount()
            return load_engine(config)
        except BaseException:  # a refusal, a load error or a signal: no config, no new folder, no .batch-edit/
            for output in locked:  # every lock released first: removing a folder needs descriptors of its own
                output.close()
            for output in reversed(locked):  # the last first, so the first can remove an output root it made
                output.discard_if_unused()
            raise


def pending_items(plan: JobPlan, output: JobOutput, overwrite: bool, records: dict | None = None) -> list[WorkItem]:
    """Items neither finished (an intact image under the name the plan now gives them: a new file-name template
    or format renders again into the new names) nor rejected by `prune --rejected`."""
    if overwrite:
        return list(plan.items)
    records = output.read_records() if records is None else records
    skipped = output.finished_ids(plan.items, records) | output.rejected_ids(records)
    return [item for item in plan.items if item.item_id not in skipped]


def _pending(summaries: list[JobSummary], plans: dict, outputs: dict, options: RunOptions) -> dict[str, list]:
    """Each job's pending items, the first `options.limit` of them across jobs; counts what is done and held back."""
    limit = options.limit
    pending = {}
    for summary in summaries:
        plan, output = plans[summary.name], outputs[summary.name]
        records = output.read_records()
        items = pending_items(plan, output, options.overwrite, records)
        pending[summary.name] = items[:limit] if limit is not None else items
        limit = None if limit is None else limit - len(pending[summary.name])
        rejected = set() if options.overwrite else output.rejected_ids(records)
        summary.rejected = sum(item.item_id in rejected for item in plan.items)
        summary.already_done = summary.total - len(items) - summary.rejected
        summary.held_back = len(items) - len(pending[summary.name])
    return pending


def _check_sources_exist(items: list[WorkItem]) -> None:
    """A run with nothing it could load is a mistake in the manifest (paths, a moved folder), not a night of
    failure rows. A partly missing set runs: each missing file is its item's recorded failure."""
    refs = list(dict.fromkeys(item.source for item in items))
    if refs and not any(ref.is_url or os.path.exists(ref.key) for ref in refs):
        shown = ", ".join(ref.key for ref in refs[:3]) + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")
        raise SourcesMissing(
            f"none of the {len(refs)} source file(s) exists: {shown} (relative paths resolve against the "
            "manifest's folder); nothing was run"
        )


class _PipelineRecord:
    """The resolved config a run's records are made with: kept as `.batch-edit/pipelines/<hash>.yaml`, named by
    `pipeline_config: <hash>` in every record."""

    def __init__(self, used: PipelineConfig):
        self.hash = config_hash(used.identity())
        self.yaml = dump_pipeline_config(used)
        self.fields = {**used.recorded_fields(), "device": used.device, "pipeline_config": self.hash}


@contextmanager
def _refused_before_running():
    """An output folder that cannot be used, found before anything ran: a refusal (exit 2), not a stop."""
    try:
        yield
    except OutputError as exc:
        raise OutputRefusedError(str(exc)) from exc


def _encode_prompts_once(engine, pending: list[list[WorkItem]]) -> None:
    """Encode every distinct prompt up front when they all fit the cache (then the text encoders can go)."""
    prompts = list(dict.fromkeys(item.prompt for items in pending for item in items))
    if len(prompts) <= engine.config.prompt_cache:
        engine.encode_prompts(prompts)


@dataclass
class _RunContext:
    engine: object
    progress: Progress
    batch_size: int
    options: RunOptions
    extra: dict  # pipeline fields written into every metadata row
    stop: StopOnSignal
    logged: set = field(default_factory=set)


class _JobRun:
    """One job's items through the engine; every outcome is recorded the moment it is known."""

    def __init__(self, context: _RunContext, output: JobOutput, summary: JobSummary, keep_sources: bool = False):
        self.context, self.output, self.summary, self.keep_sources = context, output, summary, keep_sources
        self.csvs_at = time.monotonic()

    def run(self, items: list[WorkItem]) -> None:
        started = time.monotonic()
        # Sorting by the batch key (strength, steps, guidance) lets compatible items share a pipeline call.
        prepared = Prefetch(self._prepare(sorted(items, key=lambda item: item.batch_key)), depth=2)
        self.writer = Writer(self._written, depth=2 * self.context.batch_size)
        try:
            for event in prepared:
                if event[0] == "failed":
                    self._failed(*event[1:])
                    continue
                self._generate(*event[1:])
                if self.context.stop.signal is not None:
                    break
                if time.monotonic() - self.csvs_at > self.context.options.csv_every_s:
                    self.output.rebuild_csvs()
                    self.csvs_at = time.monotonic()
            self.writer.drain()
        finally:
            prepared.close()
            try:
                self.writer.drain()  # a no-op after a clean end; after an error, cancels what was pending
            finally:
                self.summary.seconds = time.monotonic() - started
                self._final_csvs()

    def _generate(self, batch: list[WorkItem], images: list[Image.Image], masks: list) -> None:
        started = time.monotonic()
        try:
            masked = {"masks": masks} if any(mask is not None for mask in masks) else {}
            results = self.context.engine.generate(batch, images, **masked)
            results = [composited(*made) for made in zip(batch, results, images, masks)]
        except OutOfMemory as exc:
            if len(batch) == 1:
                self._failed(batch[0], "generate", exc)
                return
            half = len(batch) // 2
            log.warning("%s: retrying as batches of %d and %d", exc, half, len(batch) - half)
            self._generate(batch[:half], images[:half], masks[:half])
            self._generate(batch[half:], images[half:], masks[half:])
            return
        except OutputError:
            raise
        except Exception as exc:  # one bad batch must not end an overnight run: record it and go on
            self._log_once(exc, f"generation failed for {len(batch)} item(s)")
            for item in batch:
                self._failed(item, "generate", exc)
            return
        seconds = round((time.monotonic() - started) / len(batch), 3)
        for item, image, source, mask in zip(batch, results, images, masks):
            # PNG encoding and fsync happen in the writer thread while the next batch runs. The call's batch
            # size is recorded: on a GPU, results repeat bitwise only at the same batch size.
            extra = {**self.context.extra, "batch_size": len(batch), "seconds": seconds}
            kept = (source, mask) if self.keep_sources else ()
            self.writer.submit(self.output.write_image, item, image, extra, *kept)

    def _written(self, _result) -> None:
        self.summary.done += 1
        self.context.progress.update()

    def _final_csvs(self) -> None:
        try:
            self.output.rebuild_csvs()
            self.output.write_sheets()
        except OutputError as exc:  # the disk that stopped the run may refuse this too; the records are intact
            log.error("%s (the next run rebuilds it)", exc)

    def _prepare(self, items: list[WorkItem]) -> Iterator[tuple]:
        """In the prefetch thread: load and fit each item's source (and mask). Yields ("batch", items, images,
        masks) for full batches of items sharing parameters and fitted size, and ("failed", item, stage, error)."""
        sources, masks = _SourceCache(self.context.options.fetch), MaskLoader(self.context.options.fetch)
        open_batches: dict[tuple, tuple[list, list, list]] = {}
        for item in items:
            if self.context.stop.signal is not None:
                return
            try:
                original = sources.get(item.source)
                image = fit_image(original, item.width, item.height, item.resize)
                mask = masks.fitted(item, original.size)  # None without one; fitted as the source was
            except SourceError as exc:
                yield ("failed", item, "load", exc)
                continue
            except Exception as exc:  # a decoder bug on one odd file is that item's failure, not the run's
                self._log_once(exc, f"could not prepare {item.source.key}")
                yield ("failed", item, "load", exc)
                continue
            batch = open_batches.setdefault((item.batch_key, image.size), ([], [], []))
            batch[0].append(item)
            batch[1].append(image)
            batch[2].append(mask)
            if len(batch[0]) >= self.context.batch_size:
                yield ("batch", *open_batches.pop((item.batch_key, image.size)))
        for batch in open_batches.values():
            yield ("batch", *batch)

    def _failed(self, item: WorkItem, stage: str, error: BaseException) -> None:
        self.output.record_failure(item, stage, error, self.context.extra)
        self.summary.failed += 1
        reason = failure_reason(error)
        self.summary.errors[reason] = self.summary.errors.get(reason, 0) + 1
        self.context.progress.update(failed=True)

    def _log_once(self, exc: Exception, context: str) -> None:
        """Each distinct error's traceback once; repeats get one line, so a systematic fault can't flood the log."""
        key = (type(exc).__name__, str(exc))
        if key in self.context.logged:
            log.error("%s: %s: %s (traceback above)", context, *key)
        else:
            self.context.logged.add(key)
            log.exception("%s", context)


def failure_reason(error: BaseException, most: int = 100) -> str:
    """The reason a summary groups failures by: the error's whole first line (a reason may hold ':', as in
    "private address ::ffff:127.0.0.1 refused"), shortened if very long."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= most else line[: most - 3] + "..."


class _SourceCache:
    """Decoded sources, so a sweep decodes (or downloads) its image once; failures are remembered too.

    Bounded by count and by decoded bytes: twelve 9000x9000 photos are 2.9 GB of pixels, which a run making
    small outputs must not hold. The newest image always stays, however large, so a sweep over one huge
    source still decodes it once."""

    def __init__(self, fetch: FetchOptions, size: int = 16, max_bytes: int = 512 * 1024 * 1024):
        self.fetch, self.size, self.max_bytes = fetch, size, max_bytes
        self.images: OrderedDict[SourceRef, Image.Image] = OrderedDict()
        self.errors: dict[SourceRef, SourceError] = {}
        self.bytes = 0

    def get(self, ref: SourceRef) -> Image.Image:
        if ref in self.errors:
            raise self.errors[ref]
        if ref in self.images:
            self.images.move_to_end(ref)
            return self.images[ref]
        try:
            image = load_image(ref, self.fetch)
        except SourceError as exc:
            self.errors[ref] = exc
            raise
        self.images[ref] = image
        self.bytes += _pixel_bytes(image)
        while len(self.images) > 1 and (len(self.images) > self.size or self.bytes > self.max_bytes):
            _, oldest = self.images.popitem(last=False)
            self.bytes -= _pixel_bytes(oldest)
        return image


def _pixel_bytes(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())
