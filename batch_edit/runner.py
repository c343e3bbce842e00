"""The driver: find pending items, lock the job folders, have them run (in this process, or on Ray workers) and
record every result as it comes back; it alone writes the job folders. What a worker does is `worker.py`."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .background import Prefetch, Writer
from .errors import BatchEditError, OutputError, OutputRefusedError, PipelineLoadError
from .job_chains import job_folders, later_results_warning, split_waiting, waiting_warnings
from .outputs import JobOutput
from .pipeline_config import PipelineConfig, dump_pipeline_config
from .plan import JobPlan, WorkItem
from .progress import Progress
from .records import config_hash
from .result_files import ItemResult
from .signals import InterruptibleLoad, LoadInterrupted, StopOnSignal
from .sources import FetchOptions
from .validation import escaped
from .worker import Generated, Prepared, Task, Worker, encode_upfront, in_batches, prepare

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
    not_run: int = 0  # pending items the run stopped before (a signal)
    waiting: dict[str, int] = field(default_factory=dict)  # items whose source is a job's folder this run makes
    unwritten: list[str] = field(default_factory=list)  # final CSVs or contact sheets that could not be written


@dataclass
class RunResult:
    jobs: list[JobSummary]
    loaded_model: bool
    interrupted_by: int | None = None  # the signal that stopped the run early
    error: str | None = None  # the output folder could not be written: the run stopped with what came back recorded
    seconds: float = 0.0  # the progress line's elapsed time: from the first batch to the end of the last job

    @property
    def failed(self) -> int:
        return sum(job.failed for job in self.jobs)

    @property
    def unwritten(self) -> list[str]:
        return [problem for job in self.jobs for problem in job.unwritten]


@dataclass(frozen=True)
class RunOptions:
    fetch: FetchOptions = FetchOptions()
    overwrite: bool = False  # redo finished items too
    csv_every_s: float = 30.0  # metadata.csv / failures.csv are also rebuilt this often during a job
    limit: int | None = None  # run only the first N pending items, in plan order across jobs


class SourcesMissing(BatchEditError):
    """Every item's source is a local file that does not exist: nothing could run."""


class Execution(Protocol):
    """Where items run: `InProcess` (this process's one engine) or `ray_run.RayExecution` (Ray workers)."""

    on_stop: str  # what a first SIGINT/SIGTERM does to the work in progress, in the warning's words

    def check(self, config: PipelineConfig) -> None:
        """Refusals that need no weights, before anything is written."""

    def load(self, config: PipelineConfig, prompts: list[str]) -> PipelineConfig:
        """Make ready (under the job folders' locks; `prompts`: the pending items'); returns the config with
        `auto` choices resolved."""

    def run(self, tasks: list[Task], pipeline: dict, record: Callable[[ItemResult], None], stop: StopOnSignal) -> None:
        """Every task's result to `record` (a result may come twice: the driver keeps the first); stop early once
        `stop.signal` is set."""


def run(
    plans: list[JobPlan],
    config: PipelineConfig,
    output_root: Path,
    load_engine: Callable[[PipelineConfig], object],
    options: RunOptions = RunOptions(),
    check_engine: Callable[[PipelineConfig], None] = lambda config: None,
) -> RunResult:
    """The run in this process, with the engine `load_engine` gives."""
    return drive(plans, config, output_root, InProcess(load_engine, check_engine, options.fetch), options)


def drive(
    plans: list[JobPlan], config: PipelineConfig, output_root: Path, execution: Execution, options: RunOptions
) -> RunResult:
    # 1. What is left to do: finished items (a record and an intact image under the planned name) are skipped
    #    unless overwriting; --limit keeps the first N.
    plans_by_name = {plan.name: plan for plan in plans}
    with _refused_before_running():
        outputs = {plan.name: JobOutput(output_root, plan.name) for plan in plans}
        for plan in plans:
            outputs[plan.name].follow_plan(plan.items, plan.keep_sources)
        summaries = [JobSummary(plan.name, outputs[plan.name].folder, len(plan.items)) for plan in plans]
        folders = job_folders(list(plans_by_name), output_root)  # a source that is one of them may wait
        pending, waiting = _pending(summaries, plans_by_name, outputs, options, folders)
    active = [summary for summary in summaries if pending[summary.name]]
    _warn_of_chains(plans, folders, pending, waiting)
    if not active:
        _finish_idle(summaries, outputs)
        return RunResult(summaries, loaded_model=False)
    _check_sources_exist([item for plan in plans for item in plan.items])
    execution.check(config)  # refusals that need no weights come before anything is written
    _finish_idle([summary for summary in summaries if summary not in active], outputs)
    with ExitStack() as stack:
        # 2. Lock every job folder this run will write, then load the pipeline(s) for the whole run. A job
        #    another run holds refuses the whole run, and the folders this one created go again.
        def recount() -> None:  # under the locks: a run that held a folder a moment ago may have finished items
            pending.update(_pending(active, plans_by_name, outputs, options, folders)[0])

        def load(config: PipelineConfig) -> PipelineConfig:  # after the recount: the prompts of what is left
            return execution.load(config, [item.prompt for s in active for item in pending[s.name]])

        used = _lock_and_load(stack, [outputs[s.name] for s in active], recount, config, load)
        # 3. Every pending item, job after job, sorted by the batch key (strength, steps, guidance) so compatible
        #    items share a pipeline call; each result is recorded as it comes back. The first SIGINT/SIGTERM
        #    stops the run as the execution says (in process: once the batch in progress is back).
        stop = stack.enter_context(StopOnSignal(execution.on_stop))
        progress = stack.enter_context(Progress(sum(len(pending[s.name]) for s in active)))
        tasks = [
            Task(item, plans_by_name[s.name].keep_sources)
            for s in active
            for item in sorted(pending[s.name], key=lambda item: item.batch_key)
        ]
        recorder = _Recorder(
            [(s, outputs[s.name], pending[s.name]) for s in active], _PipelineRecord(used), progress, stop, options
        )
        error = None
        try:
            execution.run(tasks, recorder.pipeline.fields, recorder.record, stop)
        except OutputError as exc:  # a full disk, a job folder removed: what came back is recorded, the summary
            error = str(exc)  # tells what is left, so the run ends as any other, with exit 3
        # Ray's workers load as they start: a load that fails or is stopped there leaves nothing, as above
        except (PipelineLoadError, LoadInterrupted):
            recorder.close()
            _discard_unused([outputs[s.name] for s in active])
            raise
        except BaseException:  # an error stops the run: what it could not write at the end goes to the log
            recorder.close()
            for problem in (problem for s in active for problem in s.unwritten):
                log.error("%s (the next run writes it)", problem)
            raise
        finally:
            recorder.close()
    for summary in active:
        summary.not_run = len(pending[summary.name]) - summary.done - summary.failed
    return RunResult(summaries, True, interrupted_by=stop.signal, error=error, seconds=progress.elapsed)


def _finish_idle(summaries: list[JobSummary], outputs: dict) -> None:
    """Jobs with nothing to run: what an earlier run left of them (killed after its last item, or stopped before
    drawing their contact sheets) is finished, also while other jobs run."""
    for summary in summaries:
        _finishing(summary, outputs[summary.name].refresh)


def _lock_and_load(stack: ExitStack, outputs: list[JobOutput], recount, config: PipelineConfig, load):
    locked = []
    with InterruptibleLoad():
        try:
            with _refused_before_running():
                for output in outputs:
                    stack.callback(output.close)
                    locked.append(output)  # before lock(): a refused lock still removes what it created
                    output.lock()
                recount()
            return load(config)
        except BaseException:  # a refusal, a load error or a signal: no config, no new folder, no .batch-edit/
            _discard_unused(locked)
            raise


def _discard_unused(outputs: list[JobOutput]) -> None:
    for output in outputs:  # every lock released first: removing a folder needs descriptors of its own
        output.close()
    for output in reversed(outputs):  # the last first, so the first can remove an output root it made
        output.discard_if_unused()


def pending_items(plan: JobPlan, output: JobOutput, overwrite: bool, records: dict | None = None) -> list[WorkItem]:
    """Items neither finished (an intact image under the name the plan now gives them: a new file-name template
    or format renders again into the new names) nor rejected by `prune --rejected`."""
    if overwrite:
        return list(plan.items)
    records = output.read_records() if records is None else records
    finished = output.finished_ids(plan.items, records)
    skipped = finished | output.rejected_ids(plan.items, records, finished)
    return [item for item in plan.items if item.item_id not in skipped]


def _pending(
    summaries: list[JobSummary], plans: dict, outputs: dict, options: RunOptions, folders: dict[str, str]
) -> tuple[dict[str, list], list[str]]:
    """Each job's pending items, the first `options.limit` of them across jobs; counts what is done and held back."""
    found = {}
    for summary in summaries:
        plan, output = plans[summary.name], outputs[summary.name]
        records = output.read_records()
        found[summary.name] = pending_items(plan, output, options.overwrite, records)
        summary.rejected = 0 if options.overwrite else len(output.rejected_ids(plan.items, records))
        summary.already_done = summary.total - len(found[summary.name]) - summary.rejected
    running, waiting, sources = split_waiting(found, folders)  # items waiting for another job's results
    limit, pending = options.limit, {}
    for summary in summaries:
        items, summary.waiting = running[summary.name], waiting[summary.name]
        pending[summary.name] = items[:limit] if limit is not None else items
        limit = None if limit is None else limit - len(pending[summary.name])
        summary.held_back = len(items) - len(pending[summary.name])
    return pending, sources


def _warn_of_chains(plans: list[JobPlan], folders: dict[str, str], pending: dict[str, list], waiting) -> None:
    counts = {name: len(items) for name, items in pending.items()}
    later = (later_results_warning(plan.name, plan.items, folders, counts) for plan in plans)
    for warning in [*waiting_warnings(waiting), *filter(None, later)]:
        print(f"warning: {escaped(warning)}", file=sys.stderr)


def _check_sources_exist(items: list[WorkItem]) -> None:
    """A run with nothing it could load is a mistake in the manifest (paths, a moved folder), not a night of
    failure rows. A partly missing set runs: each missing file is its item's recorded failure. Of the whole plan's
    `items`: sources deleted after their items were done, or a --limit reaching only missing ones, fail items."""
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


def _finishing(summary: JobSummary, write: Callable[[], None]) -> None:
    """A job's final CSVs and contact sheets: a file that cannot be written (a full disk) is named in the
    summary and makes the run end with exit 3, after the other jobs' final writes; the records are intact and
    the next run writes it."""
    try:
        write()
    except OutputError as exc:
        summary.unwritten.append(str(exc))


@contextmanager
def _refused_before_running():
    """An output folder that cannot be used, found before anything ran: a refusal (exit 2), not a stop."""
    try:
        yield
    except OutputError as exc:
        raise OutputRefusedError(str(exc)) from exc


class _Recorder:
    """Records each result as it comes back (the first one per item: a retried worker task may send one again).
    A job's record opens with its first result; the job is finished (CSVs, contact sheets, record closed) when its
    last pending item is back, and every job still open when the run ends. After a stop by signal no contact sheet
    is drawn (seconds per thousand results, past a container's grace period): the next run draws them."""

    def __init__(self, jobs: list[tuple], pipeline, progress: Progress, stop: StopOnSignal, options: RunOptions):
        self.pipeline, self.progress, self.stop, self.options = pipeline, progress, stop, options
        self.sheets_left = 0  # jobs whose contact sheets a stop left for the next run
        self.jobs = {summary.name: _JobRecord(summary, output, items) for summary, output, items in jobs}
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
        if result.failure is not None:
            job.output.record_failed(item, result.failure, self.pipeline.fields)
            job.summary.failed += 1
            reason = result.failure.reason
            job.summary.errors[reason] = job.summary.errors.get(reason, 0) + 1
            self.progress.update(failed=True)
        else:
            job.output.write_result(item, result.encoded)
            job.summary.done += 1
            self.progress.update()
        job.left -= 1
        if job.left == 0:
            self._finish(job)
        elif time.monotonic() - job.csvs_at > self.options.csv_every_s:
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

    def _finish(self, job: _JobRecord) -> None:
        job.finished = True
        self.clock = time.monotonic()
        job.summary.seconds = self.clock - job.started
        try:
            _finishing(job.summary, lambda: self._final_files(job.output))
        finally:
            job.output.finish()  # one open record per job whose results are coming back

    def _final_files(self, output: JobOutput) -> None:
        output.finish_files(copies=self.stop.signal is None)  # kept copies load sources: a stopped run leaves them
        if self.stop.signal is None:
            output.write_sheets_if_stale()
        elif not output.sheets_current():  # the stamp stays older than metadata.csv: the next run draws them
            self.sheets_left += 1


@dataclass
class _JobRecord:
    summary: JobSummary
    output: JobOutput
    items: list[WorkItem]
    started: float | None = None
    finished: bool = False
    csvs_at: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.left = len(self.items)


class InProcess:
    """The run in this process: sources prepared two batches ahead in one thread, batches generated in this one,
    results encoded and recorded in a third while the next batch runs."""

    on_stop = "finishing the batch in progress, then stopping"

    def __init__(self, load_engine, check_engine, fetch: FetchOptions):
        self.load_engine, self.check, self.fetch = load_engine, check_engine, fetch
        self.engine = None

    def load(self, config: PipelineConfig, prompts: list[str]) -> PipelineConfig:
        self.engine = self.load_engine(config)
        encode_upfront(self.engine, prompts)  # part of the load: a stop here stops at once and leaves no folder
        return self.engine.config  # `auto` choices resolved by the engine

    def run(self, tasks: list[Task], pipeline: dict, record, stop: StopOnSignal) -> None:
        worker = Worker(self.engine, pipeline)
        stopped = lambda: stop.signal is not None
        prepared = Prefetch(in_batches(prepare(tasks, self.fetch, worker.errors, stopped), worker.batch_size), depth=2)
        writer = Writer(lambda _: None, depth=2 * worker.batch_size)
        try:
            for ready in prepared:
                if stopped():  # a stop while sources were loading: no new batch starts
                    break
                if isinstance(ready, Prepared):  # its source could not be used
                    generated = [Generated(ready, failure=ready.failure)]
                else:
                    generated = worker.generate(ready)
                for one in generated:  # recorded in the writer's thread, in order, while the next batch runs
                    writer.submit(lambda one: record(worker.encode(one)), one)
                if stopped():
                    break
            writer.drain()
        finally:
            prepared.close()
            writer.drain()  # a no-op after a clean end; after an error, cancels what was pending
