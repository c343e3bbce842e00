"""Each result recorded as it comes back (the first one per item), a job finished (final CSVs, contact sheets,
record closed) as its last item returns, and the pipeline config every record names."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import OutputError, ResultPathTaken
from .outputs import JobOutput
from .pipeline_config import PipelineConfig, dump_pipeline_config
from .plan import WorkItem
from .progress import Progress
from .records import config_hash
from .result_files import Failure, ItemResult, pipeline_fields
from .signals import StopOnSignal

log = logging.getLogger("batch_edit.runner")


class PipelineRecord:
    """The resolved config a run's records are made with: kept as `.batch-edit/pipelines/<hash>.yaml`, named by
    `pipeline_config: <hash>` in every record."""

    def __init__(self, used: PipelineConfig):
        self.hash = config_hash(used.identity())
        self.yaml = dump_pipeline_config(used)
        self.fields = pipeline_fields(used)


def finishing(summary, write: Callable[[], None]) -> None:
    """A job's final CSVs and contact sheets: a file that cannot be written (a full disk) is named in the
    summary and makes the run end with exit 3, after the other jobs' final writes; the records are intact and
    the next run writes it."""
    try:
        write()
    except OutputError as exc:
        summary.unwritten.append(str(exc))


class Recorder:
    """Records each result as it comes back (the first one per item: a retried worker task may send one again).
    A job's record opens with its first result; the job is finished (CSVs, contact sheets, record closed) when its
    last pending item is back, and every job still open when the run ends. After a stop by signal no contact sheet
    is drawn (seconds per thousand results, past a container's grace period), and one arriving while a job's
    sheets are drawn cuts them short: the next run draws them."""

    def __init__(self, jobs: list[tuple], pipeline, progress: Progress, stop: StopOnSignal, csv_every_s: float):
        self.pipeline, self.progress, self.stop, self.csv_every_s = pipeline, progress, stop, csv_every_s
        self.sheets_left = 0  # jobs whose contact sheets a stop left for the next run
        self.jobs = {summary.name: JobRecord(summary, output, items) for summary, output, items in jobs}
        self.items = {(item.job, item.item_id): item for _, _, items in jobs for item in items}
        self.recorded: set[tuple[str, str]] = set()
        self.clock = time.monotonic()  # a job's time runs from the end of the one before it

    def record(self, result: ItemResult) -> None:
        key = (result.job, result.item_id)
        if key in self.recorded or key not in self.items:
            return
        item, job = self.items[key], self.jobs[result.job]
        if job.started is None:
            job.output.start(self.pipeline.yaml, self.pipeline.hash)  # the config kept once items come back
            job.started = self.clock
        self.recorded.add(key)
        failure = result.failure
        if failure is None:
            try:
                job.output.write_result(item, result.encoded)
            except ResultPathTaken as exc:  # a folder at its name: this item's failure, the others are written
                failure = Failure("write", type(exc).__name__, str(exc), exc.reason)
        if failure is not None:
            job.output.record_failed(item, failure, self.pipeline.fields)
            job.summary.failed += 1
            job.summary.errors[failure.reason] = job.summary.errors.get(failure.reason, 0) + 1
            self.progress.update(failed=True, at_load=failure.stage == "load")
        else:
            job.summary.done += 1
            self.progress.update()
        job.left -= 1
        if job.left == 0:
            self._finish(job)
        elif time.monotonic() - job.csvs_at > self.csv_every_s:
            job.output.rebuild_csvs(during_job=True)
            job.csvs_at = time.monotonic()

    def close(self) -> None:
        for job in self.jobs.values():
            if job.started is not None and not job.finished:
                self._finish(job)
        if self.sheets_left:
            log.warning(
                "contact sheets of %d job(s) not drawn, to stop sooner: the next run draws them", self.sheets_left
            )
            self.sheets_left = 0

    def _finish(self, job: JobRecord) -> None:
        job.finished = True
        self.clock = time.monotonic()
        job.summary.seconds += self.clock - job.started  # a job may run in several rounds
        job.summary.moved_aside = job.output.moved_aside  # the same output in every round
        job.summary.moved_earlier = job.output.moved_earlier
        job.summary.moved_unrecorded = job.output.moved_unrecorded
        job.summary.filled = job.output.filled
        try:
            finishing(job.summary, lambda: self._final_files(job.output))
        finally:
            job.output.finish()  # one open record per job whose results are coming back

    def _final_files(self, output: JobOutput) -> None:
        output.finish_files(copies=self.stop.signal is None)  # kept copies load sources: a stopped run leaves them

        def stopped() -> bool:  # also a stop arriving while the sheets are drawn: it cuts them short
            return self.stop.signal is not None

        # a stopped run draws no sheet; a job drawing none (`contact_sheets: false`) only removes them: no wait
        left_undrawn = stopped() and output.contact_sheets
        complete = output.sheets_current() if left_undrawn else output.write_sheets_if_stale(stopped)
        if not complete:  # the stamp stays older than metadata.csv: the next run draws them
            self.sheets_left += 1


@dataclass
class JobRecord:
    summary: object  # the runner's JobSummary
    output: JobOutput
    items: list[WorkItem]
    started: float | None = None
    finished: bool = False
    csvs_at: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.left = len(self.items)
