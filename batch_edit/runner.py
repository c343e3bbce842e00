"""The orchestrator: find pending items, load the pipeline once, run batches, record every outcome."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image
from tqdm import tqdm

from .errors import OutputError
from .outputs import JobOutput
from .pipeline_config import PipelineConfig, dump_pipeline_config
from .plan import JobPlan, WorkItem
from .sources import FetchOptions, SourceError, SourceRef, fit_image, load_image

log = logging.getLogger(__name__)


@dataclass
class JobSummary:
    name: str
    folder: Path
    total: int
    already_done: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    jobs: list[JobSummary]
    loaded_model: bool

    @property
    def failed(self) -> int:
        return sum(job.failed for job in self.jobs)


def run(
    plans: list[JobPlan],
    config: PipelineConfig,
    output_root: Path,
    load_engine: Callable[[PipelineConfig], object],
    fetch: FetchOptions = FetchOptions(),
) -> RunResult:
    # 1. What is left to do: finished items (a record and an intact image) are skipped.
    outputs = {plan.name: JobOutput(output_root, plan.name) for plan in plans}
    pending = {plan.name: _pending(plan, outputs[plan.name]) for plan in plans}
    summaries = [
        JobSummary(plan.name, outputs[plan.name].folder, len(plan.items), len(plan.items) - len(pending[plan.name]))
        for plan in plans
    ]
    total = sum(len(items) for items in pending.values())
    if total == 0:
        return RunResult(summaries, loaded_model=False)
    # 2. One pipeline for the whole run, loaded before anything is written.
    engine = load_engine(config)
    extra = {**config.identity(), "device": config.device}
    logged: set = set()
    # 3. Each job: batches of compatible items, every outcome recorded as it happens.
    with tqdm(total=total, unit="img", desc="batch-edit", dynamic_ncols=True) as progress:
        for summary in summaries:
            items = pending[summary.name]
            if not items:
                continue
            output = outputs[summary.name]
            output.open(dump_pipeline_config(config))
            started = time.monotonic()
            try:
                _JobRun(engine, output, summary, progress, config.batch_size, fetch, extra, logged).run(items)
            finally:
                summary.seconds = time.monotonic() - started
                output.close()
                output.rebuild_csvs()
    return RunResult(summaries, loaded_model=True)


def _pending(plan: JobPlan, output: JobOutput) -> list[WorkItem]:
    done = output.done_ids()
    return [item for item in plan.items if item.item_id not in done]


@dataclass
class _JobRun:
    """One job's items through the engine; every outcome is recorded the moment it is known."""

    engine: object
    output: JobOutput
    summary: JobSummary
    progress: tqdm
    batch_size: int
    fetch: FetchOptions
    extra: dict
    logged: set = field(default_factory=set)

    def run(self, items: list[WorkItem]) -> None:
        # Sorting by (steps, strength, guidance) lets compatible items share a pipeline call.
        ordered = sorted(items, key=lambda item: item.batch_key)
        for batch, images in self._batches(ordered):
            started = time.monotonic()
            try:
                results = self.engine.generate(batch, images)
            except OutputError:
                raise
            except Exception as exc:  # one bad batch must not end an overnight run: record it and go on
                self._log_once(exc, f"generation failed for {len(batch)} item(s)")
                for item in batch:
                    self._failed(item, "generate", exc)
                continue
            seconds = (time.monotonic() - started) / len(batch)
            for item, image in zip(batch, results):
                self.output.write_image(item, image, {**self.extra, "seconds": round(seconds, 3)})
                self.summary.done += 1
                self.progress.update(1)

    def _batches(self, items: list[WorkItem]) -> Iterator[tuple[list[WorkItem], list[Image.Image]]]:
        """Load and fit each item's source; yield full batches of items sharing parameters and fitted size."""
        sources = _SourceCache(self.fetch)
        open_batches: dict[tuple, tuple[list, list]] = {}
        for item in items:
            try:
                image = fit_image(sources.get(item.source), item.width, item.height, item.resize)
            except SourceError as exc:
                self._failed(item, "load", exc)
                continue
            except Exception as exc:  # a decoder bug on one odd file is that item's failure, not the run's
                self._log_once(exc, f"could not prepare {item.source.key}")
                self._failed(item, "load", exc)
                continue
            batch = open_batches.setdefault((item.batch_key, image.size), ([], []))
            batch[0].append(item)
            batch[1].append(image)
            if len(batch[0]) >= self.batch_size:
                yield open_batches.pop((item.batch_key, image.size))
        yield from open_batches.values()

    def _failed(self, item: WorkItem, stage: str, error: BaseException) -> None:
        self.output.record_failure(item, stage, error)
        self.summary.failed += 1
        reason = str(error).split(":")[0] or type(error).__name__
        self.summary.errors[reason] = self.summary.errors.get(reason, 0) + 1
        self.progress.set_postfix(failed=self.summary.failed)
        self.progress.update(1)

    def _log_once(self, exc: Exception, context: str) -> None:
        """Each distinct error's traceback once; repeats get one line, so a systematic fault can't flood the log."""
        key = (type(exc).__name__, str(exc))
        if key in self.logged:
            log.error("%s: %s: %s (traceback above)", context, *key)
        else:
            self.logged.add(key)
            log.exception("%s", context)


class _SourceCache:
    """Decoded sources, so a sweep decodes (or downloads) its image once; failures are remembered too."""

    def __init__(self, fetch: FetchOptions, size: int = 16):
        self.fetch, self.size = fetch, size
        self.images: OrderedDict[SourceRef, Image.Image] = OrderedDict()
        self.errors: dict[SourceRef, SourceError] = {}

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
        if len(self.images) > self.size:
            self.images.popitem(last=False)
        return image
