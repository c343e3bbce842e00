"""The driver: find pending items, lock the job folders, have them run (in this process, or on Ray workers) and
record every result as it comes back; it alone writes the job folders. What a worker does is `worker.py`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .background import Prefetch, Writer
from .chain_counts import stand_in, stand_ins
from .errors import BatchEditError, OutputError, OutputRefusedError, PipelineLoadError
from .fetch_options import PRIVATE_ADDRESS
from .folder_lock import check_open_files, run_reserve
from .job_chains import chained_after, job_folders, job_of, readers, split_waiting, waiting_warnings
from .local_files import missing_reason
from .outputs import JobOutput, discard_unused
from .pipeline_config import PipelineConfig
from .plan import JobPlan, WorkItem
from .progress import Progress
from .ray_run import WorkersLost
from .recording import PipelineRecord, Recorder, finishing
from .replaced_sources import ReplacedSources
from .result_files import Failure, ItemResult
from .signals import InterruptibleLoad, LoadInterrupted, StopOnSignal
from .sources import FetchOptions
from .validation import escaped
from .worker import ErrorLog, Generated, Prepared, Task, Worker, encode_upfront, in_batches, prepare

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
    not_redone: int = 0  # with --overwrite, of those: the ones done before (they keep their earlier results)
    not_run: int = 0  # pending items the run stopped before (a signal)
    waiting: dict[str, int] = field(default_factory=dict)  # items whose source is a job's folder this run makes
    standing: dict[str, int] = field(default_factory=dict)  # of those, per job: its folder standing for results
    waiting_for: dict[str, str] = field(default_factory=dict)  # of those not standing: item id -> the job
    unwritten: list[str] = field(default_factory=list)  # final CSVs or contact sheets that could not be written
    moved_aside: list[tuple[str, str]] = field(default_factory=list)  # files it did not make: (name, in pruned/)
    moved_earlier: list[tuple[str, str]] = field(default_factory=list)  # other items' results taking their names
    moved_unrecorded: list[tuple[str, str]] = field(default_factory=list)  # its own results, their records cut
    # finished items given their missing caption file, and their missing kept copies (the job's output's counts)
    filled: list[int] = field(default_factory=lambda: [0, 0])
    refused: str | None = None  # planned again once its producer's results were made, it was refused: why
    superseded: dict[str, int] = field(default_factory=dict)  # results moved out: made from what a job replaced


@dataclass
class RunResult:
    jobs: list[JobSummary]
    loaded_model: bool
    interrupted_by: int | None = None  # the signal that stopped the run early
    error: str | None = None  # the output folder could not be written: the run stopped with what came back recorded
    seconds: float = 0.0  # the progress line's elapsed time: from the first batch to the end of the last job
    tried: dict[str, set[str]] = field(default_factory=dict)  # per job, the ids of the items this run ran

    @property
    def failed(self) -> int:
        return sum(job.failed for job in self.jobs)

    @property
    def refused(self) -> bool:
        return any(job.refused for job in self.jobs)

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
    plans: list[JobPlan],
    config: PipelineConfig,
    output_root: Path,
    execution: Execution,
    options: RunOptions,
    replan: Callable[[set[str]], list[JobPlan]] | None = None,
) -> RunResult:
    """`replan`: the named jobs planned again (their sources listed again), for the jobs reading another's
    results once that one's items are made; without it, those wait for the next run."""
    # 1. What is left to do: finished items (a record and an intact image under the planned name) are skipped
    #    unless overwriting; --limit keeps the first N. Items reading results a job of this run makes wait.
    chain = _Chain({plan.name: plan for plan in plans}, job_folders([plan.name for plan in plans], output_root))
    with _refused_before_running():
        outputs = {plan.name: JobOutput(output_root, plan.name) for plan in plans}
        for plan in plans:
            outputs[plan.name].follow_plan(plan.items, plan.keep_sources, plan.contact_sheets)
        summaries = [JobSummary(plan.name, outputs[plan.name].folder, len(plan.items)) for plan in plans]
        pending, waiting = _pending(summaries, chain, outputs, options, options.limit)
    active = [summary for summary in summaries if pending[summary.name]]
    later = chain.readers_of({s.name for s in active}, closure=True) if replan and active else set()
    involved = [summary for summary in summaries if summary in active or summary.name in later]
    idle = [summary for summary in summaries if summary not in involved]
    for warning in waiting_warnings(waiting):
        print(f"warning: {escaped(warning)}", file=sys.stderr)
    for summary in idle:  # another run holding one (remaking what it counts as done, say) refuses the whole run
        outputs[summary.name].refuse_if_held()  # too, before anything is written: no folder made or locked
    if not active:
        _finish_idle(summaries, outputs)
        return RunResult(summaries, loaded_model=False)
    _check_sources_exist([item for plan in plans for item in plan.items], options.fetch)
    execution.check(config)  # refusals that need no weights come before anything is written
    left = [summary for summary in summaries if summary in active or summary.waiting or summary.held_back]
    with ExitStack() as stack:
        # 2. Lock every job folder this run may write (the readers of its results too), then load the pipeline(s)
        #    for the whole run. A job another run holds refuses the whole run, and the folders this one created go.
        def recount() -> None:  # under the locks: a run that held a folder a moment ago may have finished items
            # (of every job that had items left, waiting ones too: it makes results others wait for)
            pending.update(_pending(left, chain, outputs, options, options.limit)[0])
            _finish_idle(idle, outputs)  # once no folder of the run is held elsewhere: a refused run wrote nothing

        def load(config: PipelineConfig) -> PipelineConfig:  # after the recount: the prompts of what is left
            nonlocal execution
            if not any(pending[s.name] for s in left):  # another run made them meanwhile: nothing to load
                return config
            if not later and (failing := _failing_again(active, pending, outputs, chain, options)) is not None:
                execution = failing  # every item left failed loading its source before, and does again: no model
                return config
            return execution.load(config, [item.prompt for s in active for item in pending[s.name]])

        reserve = run_reserve(config.device, config.compile, isinstance(execution, InProcess))
        used = _lock_and_load(stack, [outputs[s.name] for s in involved], recount, config, load, reserve)
        if not any(pending[s.name] for s in left):  # another run made every item while this one started (Ray's
            discard_unused([outputs[s.name] for s in involved])  # start-up may take long): no worker, no model
            stack.close()  # the locks released: the jobs are finished as idle ones
            _finish_idle(summaries, outputs)
            return RunResult(summaries, loaded_model=False)
        # 3. Every pending item, job after job, sorted by the batch key (strength, steps, guidance) so compatible
        #    items share a pipeline call; each result is recorded as it comes back. The first SIGINT/SIGTERM
        #    stops the run as the execution says (in process: once the batch in progress is back).
        stop = stack.enter_context(StopOnSignal(execution.on_stop))
        progress = stack.enter_context(Progress(sum(len(pending[s.name]) for s in active)))
        pipeline, limit, jobs = PipelineRecord(used), options.limit, len(plans)
        try:
            while True:  # a chain of n jobs settles in n rounds; jobs reading each other's results stop there
                error = _run_round(execution, chain, [(s, outputs[s.name], pending[s.name]) for s in active],
                                   pipeline, progress, stop, options, first=jobs == len(plans))  # fmt: skip
                limit = None if limit is None else limit - sum(len(pending[s.name]) for s in active)
                jobs -= 1
                if error is not None or stop.signal is not None or not later or not jobs:
                    break
                # 4. The jobs reading what this round made: listed again, and what they add run next
                active, pending = chain.next_round(active, involved, outputs, options, limit, replan)
                if stop.signal is not None:  # a stop while they were planned: nothing more starts
                    for summary in active:
                        summary.not_run += len(pending[summary.name])
                    break
                if not active:
                    break
                progress.grow(sum(len(pending[s.name]) for s in active))
        except (PipelineLoadError, LoadInterrupted):  # Ray's workers load as they start: a load that fails or
            discard_unused([outputs[s.name] for s in involved])  # is stopped there leaves nothing, as above
            raise
        except WorkersLost as lost:  # the run ended early: the summary of what came back goes with the error
            discard_unused([outputs[s.name] for s in involved])  # before any result: no empty job folder stays
            lost.result = RunResult(summaries, True, interrupted_by=stop.signal, seconds=progress.elapsed)
            raise
    _discard_untouched(involved, outputs, chain)
    return RunResult(
        summaries, True, interrupted_by=stop.signal, error=error, seconds=progress.elapsed, tried=chain.made
    )


def _failing_again(active: list[JobSummary], pending: dict, outputs: dict, chain: _Chain, options: RunOptions):
    """Where every item left is one whose latest outcome is a failure to load its source (or mask): those loaded
    again, before the model is, as the run would load them; if every one fails again, the execution that records
    those failures without a model (a truncated or missing file left alone would load the model at every run, only
    to fail it again). None where an item is of another kind, or loads now: the run loads the model as ever."""
    tasks = []
    for summary in active:
        records = outputs[summary.name].read_records()
        for item in pending[summary.name]:
            latest = records.get(item.item_id)
            if latest is None or latest["status"] != "failed" or latest.get("stage") != "load":
                return None
            tasks.append(Task(item, chain.plans[summary.name].keep_sources))
    failures = {}
    for prepared in prepare(tasks, options.fetch, ErrorLog()):
        if prepared.failure is None:
            return None
        failures[prepared.task.item.job, prepared.task.item.item_id] = prepared.failure
    reasons: dict[str, int] = {}
    for failure in failures.values():
        reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
    said = "; ".join(f"{escaped(reason)}: {count}" for reason, count in sorted(reasons.items()))
    print(
        f"batch-edit: not loading the model: the {len(failures)} item(s) left failed to load their source in an "
        f"earlier run, and fail again ({said})",
        file=sys.stderr,
    )
    return _KnownFailures(failures)


class _KnownFailures:
    """The execution of a run whose every item fails before the model is needed (`_failing_again`): each task's
    failure recorded as it was found, no model loaded."""

    on_stop = "stopping"

    def __init__(self, failures: dict[tuple[str, str], Failure]):
        self.failures = failures

    def run(self, tasks: list[Task], pipeline: dict, record, stop: StopOnSignal) -> None:
        for task in tasks:
            if stop.signal is not None:
                return
            item = task.item
            record(ItemResult(item.job, item.item_id, failure=self.failures[item.job, item.item_id]))


def _finish_idle(summaries: list[JobSummary], outputs: dict) -> None:
    """Jobs with nothing to run: what an earlier run left of them (killed after its last item, or stopped before
    drawing their contact sheets) is finished, also while other jobs run."""
    for summary in summaries:
        summary.filled = outputs[summary.name].filled
        finishing(summary, outputs[summary.name].refresh)


def _lock_and_load(stack: ExitStack, outputs: list[JobOutput], recount, config: PipelineConfig, load, reserve: int):
    locked = []
    with InterruptibleLoad():
        try:
            with _refused_before_running():
                check_open_files(len(outputs), reserve=reserve)  # one lock each, and what the load needs besides
                for output in outputs:
                    stack.callback(output.close)
                    locked.append(output)  # before lock(): what a failed lock made goes, once it can lock it
                    output.lock()
                recount()
            return load(config)
        except BaseException:  # a refusal, a load error or a signal: no config, no new folder, no .batch-edit/
            discard_unused(locked)
            raise


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
    summaries: list[JobSummary], chain: _Chain, outputs: dict, options: RunOptions, limit: int | None
) -> tuple[dict[str, list], dict]:
    """Each job's pending items (not those this run tried already), the first `limit` of them across jobs; counts
    what is done and held back."""
    found, read = {}, {}
    for summary in summaries:
        plan, output, tried = chain.plans[summary.name], outputs[summary.name], chain.made.get(summary.name, set())
        records = read[summary.name] = output.read_records()
        items = pending_items(plan, output, options.overwrite, records)
        found[summary.name] = [item for item in items if item.item_id not in tried]
        summary.total = len(plan.items)
        summary.rejected = 0 if options.overwrite else len(output.rejected_ids(plan.items, records))
        untried = sum(item.item_id not in tried for item in plan.items)
        summary.already_done = untried - len(found[summary.name]) - summary.rejected
    running, waiting, sources = split_waiting(found, chain.folders, frozenset(chain.made))
    pending = {}
    for summary in summaries:
        items, summary.waiting = running[summary.name], waiting[summary.name]
        summary.standing = stand_ins(found[summary.name], chain.folders)
        now = {item.item_id for item in items}
        summary.waiting_for = {
            item.item_id: job_of(item.source.key, chain.folders)
            for item in found[summary.name]
            if item.item_id not in now and not stand_in(item.source, chain.folders)
        }
        pending[summary.name] = items[:limit] if limit is not None else items
        limit = None if limit is None else limit - len(pending[summary.name])
        held = items[len(pending[summary.name]) :]
        summary.held_back = len(held)
        # with --overwrite every item is pending: of those held back, only the ones done (a record and an intact
        # image) are not redone; the others were never made, and are left for later as without --overwrite
        done = outputs[summary.name].finished_ids(held, read[summary.name]) if options.overwrite and held else ()
        summary.not_redone = len(done)
    return pending, sources


def _run_round(
    execution: Execution, chain: _Chain, jobs: list[tuple], pipeline, progress, stop, options, first: bool = True
) -> str | None:
    """One round's items (`jobs`: summary, output, items) run and recorded; returns why the output folder stopped
    the run, if it did. A stop while Ray's workers load again for a later round stops the run as any stop does
    (what earlier rounds made is recorded and summed up); in the first round, it is a stop while loading."""
    tasks = [
        Task(item, chain.plans[summary.name].keep_sources)
        for summary, _, items in jobs
        for item in sorted(items, key=lambda item: item.batch_key)
    ]
    returned = {summary.name: summary.done + summary.failed for summary, _, _ in jobs}
    recorder = Recorder(jobs, pipeline, progress, stop, options.csv_every_s)
    error = lost = None
    try:
        execution.run(tasks, pipeline.fields, recorder.record, stop)
    except OutputError as exc:  # a full disk, a job folder removed: what came back is recorded, the summary
        error = str(exc)  # tells what is left, so the run ends as any other, with exit 3
    except WorkersLost as exc:  # Ray's workers gone: what came back is recorded, and counted as for a stop
        lost = exc
    except LoadInterrupted as stopped:
        if first:
            raise
        stop.signal = stopped.signum if stop.signal is None else stop.signal
    except PipelineLoadError:
        raise
    except BaseException:  # an error stops the run: what it could not write at the end goes to the log
        recorder.close()
        for problem in (problem for summary, _, _ in jobs for problem in summary.unwritten):
            log.error("%s (the next run writes it)", problem)
        raise
    finally:
        recorder.close()
    for summary, _, items in jobs:
        summary.not_run += len(items) - (summary.done + summary.failed - returned[summary.name])
        chain.made.setdefault(summary.name, set()).update(item.item_id for item in items)
    if lost is not None:
        raise lost
    if error is None and stop.signal is None:  # results made from what this round replaced: moved out
        try:
            chain.replaced.after_round(jobs, chain.plans)
        except OutputError as exc:
            error = str(exc)
    return error


class _Chain:
    """The plans of a run whose jobs may read each other's results: the items each job tried in this run
    (`made`), and the rounds after the first, where the jobs reading what a round made are planned again."""

    def __init__(self, plans: dict[str, JobPlan], folders: dict[str, str]):
        self.plans, self.folders = plans, folders
        self.made: dict[str, set[str]] = {}
        self.replaced = ReplacedSources(plans.values(), folders)

    def readers_of(self, makers: set[str], closure: bool = False) -> set[str]:
        find = chained_after if closure else readers
        return find(list(self.plans.values()), self.folders, makers)

    def next_round(self, ran: list, involved: list, outputs: dict, options: RunOptions, limit, replan):
        """The jobs (of `involved`: locked) reading results of the jobs that `ran`, planned again: those with
        items left to run, and those items."""
        names = self.readers_of({summary.name for summary in ran}) & {summary.name for summary in involved}
        try:
            plans = replan(names) if names else []
        except BatchEditError as exc:  # as a run starting now would refuse them (a glob matching none of the
            for summary in involved:  # producer's results, a manifest or config changed meanwhile)
                summary.refused = summary.refused or (str(exc) if summary.name in names else None)
            print(f"error: job(s) {', '.join(sorted(names))} refused: {escaped(exc)}", file=sys.stderr)
            plans = []
        for plan in plans:
            self.plans[plan.name] = plan
            outputs[plan.name].follow_plan(plan.items, plan.keep_sources, plan.contact_sheets)
        summaries = [summary for summary in involved if summary.name in {plan.name for plan in plans}]
        pending = _pending(summaries, self, outputs, options, limit)[0]
        return [summary for summary in summaries if pending[summary.name]], pending


def _discard_untouched(involved: list[JobSummary], outputs: dict, chain: _Chain) -> None:
    """Readers locked for a later round that never came (their producer's items failed): a folder the lock
    made goes again, and what an earlier run left of them is finished."""
    untouched = [summary for summary in involved if summary.name not in chain.made]
    for summary in untouched:
        outputs[summary.name].discard_if_unused()
    _finish_idle(untouched, outputs)


def _check_sources_exist(items: list[WorkItem], fetch: FetchOptions) -> None:
    """A run with nothing it could load is a mistake in the manifest (paths, a moved folder, private URLs without
    --allow-private-urls), not a night of failure rows. A partly missing set runs: each missing file is its item's
    recorded failure. Of the whole plan's `items`: sources deleted after their items were done, or a --limit
    reaching only missing ones, fail items."""
    refs = list(dict.fromkeys(item.source for item in items))
    if not refs:
        return
    reasons = {}
    for ref in refs:  # the first source that may load ends the check: a stat for most runs, not one per source
        if (reason := _unloadable(ref, fetch)) is None:
            return
        reasons[ref.key] = reason
    other = [f"{key} ({reason})" for key, reason in reasons.items() if reason != "not found"]
    shown = other[:3] or list(reasons)[:3]  # what is wrong beyond a wrong path first
    shown = ", ".join(shown) + (f" and {len(refs) - len(shown)} more" if len(refs) > len(shown) else "")
    if any(ref.is_url for ref in refs):
        message = f"none of the {len(refs)} source(s) can be loaded: {shown}"
    else:
        message = f"none of the {len(refs)} source file(s) {'can be read' if other else 'exists'}: {shown}"
    if "not found" in reasons.values():
        message += " (relative paths resolve against the manifest's folder)"
    if PRIVATE_ADDRESS in reasons.values():
        message += " (--allow-private-urls allows private addresses)"
    raise SourcesMissing(f"{message}; nothing was run")


def _unloadable(ref, fetch: FetchOptions) -> str | None:
    if not ref.is_url:
        return missing_reason(ref.key)
    from .fetch import refused_unfetched  # requests is imported only for a run with URLs

    return refused_unfetched(ref.key, fetch)


@contextmanager
def _refused_before_running():
    """An output folder that cannot be used, found before anything ran: a refusal (exit 2), not a stop."""
    try:
        yield
    except OutputError as exc:
        raise OutputRefusedError(str(exc)) from exc


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
        batches = in_batches(prepare(tasks, self.fetch, worker.errors, stopped), worker.batch_size)
        prepared = Prefetch(batches, depth=2, stopped=stopped)  # a stop ends the wait for sources at once
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
