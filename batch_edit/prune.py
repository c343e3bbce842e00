"""`batch-edit prune`: make a job folder hold exactly what the manifests plan now, deleting nothing.

Results of items the plan no longer has, and results written in a format the job no longer uses, move to
`.batch-edit/pruned/` with their caption files (not one that a result staying here shares: same stem); each such
item gets a "pruned" record, so the append-only log stays the whole history and `metadata.csv` / `failures.csv`,
rebuilt from it, list only the plan's items (a "pruned" record never supersedes another of the same item: see
`JobRecords.listed_ids`). Where only another format's file of an item moves (its format changed back), the record
names the result the item keeps (`kept`), which stays the item's record. With `reject_missing`, planned items
whose image the user deleted get a "rejected" record (runs skip them unless overwriting) and their caption files
move to `pruned/` too. A pruned item that comes back into the plan is no longer done, so the next run makes it
again (its earlier copy stays in `pruned/`); one whose image was put back is done, and gets its result's record
again, so a later deletion is one like any other. A planned item's finished result never moves: an item whose file
it replaced is recorded as pruned, nothing moved. A job folder whose every result would move, none made with the
pipeline config planned with (a forgotten --pipeline), is refused unless the config changed on purpose. Kept copies
(`sources/`) that no item staying names move to `pruned/sources/` with them; a finished item's missing caption
file and kept copies are written again, as at the end of a run. Every job folder is locked before anything is
planned and held until the last job is pruned (`hold_job_folders`): no run changes one underneath.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import job_files
from .csv_table import CsvTableError, delimiter_of
from .errors import BatchEditError, ConfigError, OutputError
from .folder_lock import FolderLock, LocksUnsupported, cannot_lock, check_open_files
from .formats import caption_name
from .kept_sources import copies_named, kept_listing
from .outputs import PIPELINES_DIR, JobOutput
from .pipeline_config import PipelineConfig
from .plan import JobPlan, WorkItem
from .records import SOURCES_DIR, config_hash
from .validation import escaped, read_yaml_file

_HASH = re.compile(r"[0-9a-f]{16}\Z")  # records.config_hash
NOT_PLANNED = "not in the plan"  # why a result moves out: its item is not planned now


@dataclass
class PruneResult:
    folder: Path
    moved: list[str] = field(default_factory=list)  # files moved out, kept copies too (or that would be: a dry run)
    rejected: list[str] = field(default_factory=list)  # item ids recorded as rejected (or that would be)
    replaced: list[str] = field(default_factory=list)  # files recorded as pruned, not moved: planned results now
    kept: int = 0  # the plan's finished items: the rows of metadata.csv
    deleted: int = 0  # without reject_missing: planned items whose image is gone, which the next run makes again
    listing: list[str] = field(default_factory=list)  # a dry run's one line per change
    stopped: bool = False  # a SIGINT/SIGTERM stopped it after the move in progress: the rest is left for next time
    left: int = 0  # once stopped: at most this many files were still to move


@dataclass
class _Changes:
    """What pruning a folder means, decided from its records before anything moves."""

    prune: list[tuple[dict, str]] = field(default_factory=list)  # (latest record, why): moved out, marked pruned
    # (latest record, the planned item whose finished result its file is now): marked pruned, nothing moved (a run
    # wrote over it before runs moved such files out first)
    replaced: list[tuple[dict, str]] = field(default_factory=list)
    restore: list[dict] = field(default_factory=list)  # results put back by hand: their item's record again
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (file, why): files no result names now
    # item id -> the file of its finished result, for items whose latest record (moved out) names another file:
    # their "pruned" record says so, and leaves the item its result (JobRecords._kept_result)
    keeping: dict[str, str] = field(default_factory=dict)
    reject: list[dict] = field(default_factory=list)  # latest records of planned items whose image is gone
    staying_captions: set[str] = field(default_factory=set)  # caption files of the results that stay
    orphan_copies: list[str] = field(default_factory=list)  # kept copies ("sources/NAME") no item staying names
    kept: int = 0
    deleted: int = 0  # images gone but not rejected
    finished: dict[str, dict] = field(default_factory=dict)  # item id -> its record: the plan's finished items
    current: set[str] = field(default_factory=set)  # the files that results name now (of the plan's or not)


class PruneStopped(OutputError):
    """The job folder could not be written partway: `result` holds what was moved (and recorded) before."""

    def __init__(self, message: str, result: PruneResult):
        super().__init__(message)
        self.result = result
        self.locking: str | None = None  # the job whose folder could not be locked, before any was pruned or listed

    def explained(self, job: str, not_reached: int) -> str:
        """The error and what the prune did before it: the jobs before `job` are pruned, `job` in part."""
        done = self.result
        changed = (
            f"{len(done.moved)} file(s) moved to .batch-edit/pruned/ and {len(done.rejected)} item(s) recorded as "
            "rejected before it (nothing was deleted)"
            if done.moved or done.rejected
            else "nothing changed in any job"
            if self.locking is not None
            else "nothing changed in it"
        )
        later = f"; {not_reached} later job(s) not pruned" if not_reached else ""
        fix = (
            "Once its file system supports file locks, run the same prune again to finish."
            if isinstance(self.__cause__, LocksUnsupported)
            else "Then run the same prune again."
            if "too many open files" in str(self)
            else "Make the output folder writable and run the same prune again to finish."
        )
        where = f"at job {escaped(job)}" if job else "before locking any job folder"
        return f"error: {escaped(self)}\nprune stopped {where}: {changed}{later}. {fix}"


class OtherConfigResults(BatchEditError):
    """Every result of a job folder would move out, and none was made with the pipeline config this prune plans
    with: most likely the run's --pipeline was not given (item ids include the config)."""


def refuse_other_configs(plans: list[JobPlan], read: dict, config: PipelineConfig) -> None:
    """Refuse (before anything moves, in any job) to empty a job folder whose results were all made with other
    pipeline configs than `config`. `read`: each job's (JobOutput, records) as planning read them."""
    used = config_hash(config.identity())
    problems = []
    for plan in plans:
        output, records = read[plan.name]
        if (found := other_config_results(plan, output, records, used)) is None:
            continue
        count, made_with = found
        problems.append(
            f"job {plan.name}: prune would move all {count} result(s) out of {output.folder}: none is "
            f"planned, and all were made with another pipeline config ({made_with}) than this one (model "
            f"{config.model}); pass the run's --pipeline, or --config-changed to move them out all the same"
        )
    if problems:
        raise OtherConfigResults("\n".join(problems))


def other_config_results(plan: JobPlan, output: JobOutput, records: dict, used: str) -> tuple[int, str] | None:
    """Where a job folder's every result would move out and none was made with the pipeline config hashed `used`
    (what prune refuses to empty): how many results, and the configs they were made with ("HASH (model M)", ...).
    None where it has no result, or one is planned or made with that config. `records` as planning read them:
    nothing but the records is read (the kept configs' copies only where it answers)."""
    # the cheap test first: in a folder of this config's results, the first one made with it answers
    if any(record["status"] == "ok" and record.get("pipeline_config") == used for record in records.values()):
        return None
    results = [record for record in records.values() if record["status"] == "ok"]
    planned = {item.item_id for item in plan.items}
    if not results or any(r["item_id"] in planned for r in results):
        return None
    configs = sorted({str(r.get("pipeline_config")) for r in results})
    return len(results), ", ".join(f"{name} (model {_model_of(output, name, results)})" for name in configs)


def _model_of(output: JobOutput, name: str, results: list[dict]) -> str:
    """The model of a config the records name: from the copy kept beside them, else as the records say."""
    try:  # a hash, never a path: the name comes from a record
        kept = read_yaml_file(output.state / PIPELINES_DIR / f"{name}.yaml", ConfigError) if _HASH.match(name) else {}
        return str(kept["model"])
    except (ConfigError, TypeError, KeyError):
        return next((str(r["model"]) for r in results if r.get("pipeline_config") == name and "model" in r), "?")


def hold_job_folders(jobs: list[str], output_root: Path, stack: contextlib.ExitStack, dry_run: bool) -> set[str]:
    """Lock each job's folder that is there and hold it until `stack` closes, before anything is planned: a prune
    then plans and changes its folders while no run can write to any of them, and does all its jobs or none (a
    dry run lists them so, writing no owner file). Nothing is made: a folder not there (never run, or removed
    meanwhile by the refused run that made it) holds nothing to prune. Returns the jobs whose folders are held.
    OutputBusyError while a run holds any (also one loading its model, with no record yet); PruneStopped
    (`locking` that job) where one cannot be locked, or too few open files are left to hold them all. Either
    before any job is pruned or listed."""
    held, job, folder = set(), "", Path(output_root)
    try:
        check_open_files(len(jobs), by="prune")  # one open file per job folder held, before any is locked
        for job in jobs:
            output = JobOutput(output_root, job)
            lock, folder = FolderLock(output.folder, output.state), output.folder
            stack.callback(lock.release)
            output.check()
            if lock.take_existing(by="prune", write_owner=not dry_run):
                held.add(job)
    except (OutputError, OSError) as exc:  # a folder it cannot lock, list or write to: before any job changes
        if not isinstance(exc, OutputError):
            exc = cannot_lock(folder, exc, "prune", verb="read")
        stopped = PruneStopped(str(exc), PruneResult(folder))
        stopped.locking = job
        raise stopped from exc
    return held


def prune_job(
    plan: JobPlan,
    output_root: Path,
    held: bool,
    dry_run: bool = False,
    reject_missing: bool = False,
    read: tuple[JobOutput, dict[str, dict]] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> PruneResult:
    """Prune (or, `dry_run`, list) one job's folder, `held` by hold_job_folders: one not held was not there.
    `read`: the folder's (JobOutput, records) as planning read them, under the lock held since (else read here).
    Once `stopped()`, no further file moves: the CSVs are rewritten for what moved, no contact sheet is drawn."""
    output, records = read if read is not None else (JobOutput(output_root, plan.name), None)
    result = PruneResult(output.folder)
    if not held:
        return result  # never run here, or removed by the run that made it: nothing made, nothing to prune
    try:
        return _prune(output, plan, dry_run, reject_missing, result, records, stopped)
    except OutputError as exc:  # a read-only or full disk: what moved before stays moved, each move recorded
        raise PruneStopped(str(exc), result) from exc


def _prune(
    output: JobOutput,
    plan: JobPlan,
    dry_run: bool,
    reject_missing: bool,
    result: PruneResult,
    records=None,
    stopped: Callable[[], bool] = lambda: False,
) -> PruneResult:
    # Under the folder's lock, held since before the plan was made: nothing changes underneath, so the records
    # planning read (`records`, where given) are the folder's.
    if not output.records_path.exists():
        return result  # nothing recorded (a run stopped while loading its model): nothing to prune, no record made
    if dry_run:
        return _describe(output, _decide(output, plan, reject_missing, records), result)
    try:
        for folder in (output.folder, output.folder / SOURCES_DIR):  # what a crash left, as a run's lock sweeps
            job_files.sweep_temporaries(folder)
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {output.folder}: {exc.strerror or exc}") from exc
    try:
        output.start(None, "")  # no pipeline config to keep: pruning renders nothing
        changes = _decide(output, plan, reject_missing, records)  # under the lock: nothing changes underneath
        _apply(output, changes, result, stopped)
        output.follow_plan(plan.items, plan.keep_sources, plan.contact_sheets)
        # an image put back after an earlier prune moved its caption out; a kept copy deleted; the CSVs (after a
        # stop too: no row names a file moved out)
        output.finish_files()
        if not result.stopped:  # a stop ends quickly: the next run draws the sheets
            output.write_sheets()
    finally:
        output.close()  # the record closed; the folder's lock stays held until every job is pruned
    return result


def move_out(
    output: JobOutput, plan: JobPlan, picker: Callable[[dict[str, dict]], Callable[[dict], bool]]
) -> list[dict]:
    """Of the results `prune` would move out as not in the plan, those that `picker(finished)` picks (`finished`:
    the records of the plan's finished items), moved as `prune` moves them: each with its caption file (not one
    a result staying shares) and its "pruned" record, then the kept copies that only they named. For a run
    holding the folder's lock; returns the records of the results moved."""
    changes = _decide(output, plan, reject_missing=False)
    planned, picks = {item.item_id for item in plan.items}, picker(changes.finished)
    picked, left = [], []
    for record, why in changes.prune:
        chosen = record["status"] == "ok" and record["item_id"] not in planned and picks(record)
        (picked if chosen else left).append((record, why))
    if not picked:
        return []
    leaving = {record["file_name"] for record, _ in picked}
    theirs = copies_named(record for record, _ in picked) - copies_named(record for record, _ in left)
    moving = _Changes(
        prune=picked,
        staying_captions={caption_name(name) for name in changes.current - leaving},
        orphan_copies=[name for name in changes.orphan_copies if name in theirs],
    )
    result = PruneResult(output.folder)
    with output.appending():
        _apply(output, moving, result, stopped=lambda: False)  # a run's own stop waits for these few moves
    moved = set(result.moved)
    return [record for record, _ in picked if record["file_name"] in moved]


@dataclass
class WouldPrune:
    """What `prune --rejected` would do to a job folder now, as it would decide it (nothing moved or recorded)."""

    unplanned: list[str]  # the results there of items the plan no longer has, which it would move out
    rejected: list[dict]  # the latest records of planned items whose result is deleted, which it would reject


def would_prune(
    output: JobOutput, plan: JobPlan, records: dict[str, dict], finished: dict[str, dict] | None = None
) -> WouldPrune:
    """What `prune --rejected` would move out as no longer planned, and reject, in `output`'s folder, decided as it
    decides it but without its locks, writing nothing: for `plan` and `run` to say so. `records` as the output's
    last read_records() gave them, `finished` (where known) as its finished_records() gave them for the plan's
    items. A result whose file is gone is none to move. No result file is read: one whose
    modification time is not the one recorded is taken by its size (`judged_unread`), where prune would read it."""
    with output.judged_unread():
        changes = _decide(output, plan, reject_missing=True, records=records, finished=finished, with_files=False)
    planned = {item.item_id for item in plan.items}
    unplanned = [
        record["file_name"]
        for record, _ in changes.prune
        if record["status"] == "ok" and record["item_id"] not in planned
    ]
    unplanned += [name for name, why in changes.superseded if why == NOT_PLANNED]
    return WouldPrune(
        unplanned=[name for name in dict.fromkeys(unplanned) if (output.folder / name).is_file()],
        rejected=changes.reject,
    )


def _decide(
    output: JobOutput,
    plan: JobPlan,
    reject_missing: bool,
    records: dict | None = None,
    finished: dict[str, dict] | None = None,
    with_files: bool = True,
) -> _Changes:
    """`records`: as output's last read_records() gave them, with nothing appended since (else read here);
    `finished`: as finished_records() gave them for the plan's items and these records (else worked out here).
    `with_files`: also the caption files and kept copies that go (or stay) with the results, what only moving
    them needs."""
    records = output.read_records() if records is None else records
    planned = {item.item_id: item for item in plan.items}
    # each its result, the latest record or an earlier one
    finished = output.finished_records(plan.items, records) if finished is None else dict(finished)
    renamed = _renamed_away(plan, finished)  # taken out of `finished`: they move
    taken = {record["file_name"]: item_id for item_id, record in finished.items()}  # planned results: never moved
    behind = output.results_behind_failures(plan.items, records)  # nor those a failed attempt left in place
    changes = _Changes(kept=len(finished) + len(behind), finished=finished)
    for item_id, record in records.items():
        item = planned.get(item_id)
        holder = taken.get(record["file_name"], item_id) if record["status"] == "ok" else item_id
        if item_id in finished and record["status"] not in ("ok", "failed"):  # (failed: an archived item's)
            # an image put back by hand after a prune (or a rejection): done again, so its result is the item's
            # record again, and a later deletion is one like any other (rejected with --rejected)
            changes.restore.append(finished[item_id])
        elif record is finished.get(item_id) or (item is not None and record["status"] != "ok"):
            continue
        elif holder != item_id:  # its file holds another item's result now: that stays, this item is pruned
            changes.replaced.append((record, holder))
            if item_id in finished:
                changes.keeping[item_id] = finished[item_id]["file_name"]
        elif item is None and record["status"] in ("ok", "failed"):
            changes.prune.append((record, NOT_PLANNED))
        elif item is None:
            continue
        elif item_id not in finished and not os.path.exists(os.path.join(output.folder, record["file_name"])):
            # a result deleted, not one of a finished item's earlier names (a format changed and back)
            if reject_missing:
                changes.reject.append(record)
            else:
                changes.deleted += 1
        elif record["file_name"] != item.output_name:
            changes.prune.append((record, f"the job now writes {item.output_name}"))
            if item_id in finished:  # a format changed back: the file moves, the item keeps its result
                changes.keeping[item_id] = finished[item_id]["file_name"]
    changes.prune += renamed
    results = [*records.values(), *finished.values(), *behind.values()]
    current = changes.current = {record["file_name"] for record in results if record["status"] == "ok"}
    recorded = output.named_files()  # as read above: no second read of the records
    changes.superseded = [
        (name, _older_because(name, records.get(recorded[name], {}), planned.get(recorded[name])))
        for name in sorted(recorded.keys() - current)
        if (output.folder / name).is_file()
    ]
    if not with_files:
        return changes
    # A result in the format the job now writes has the same stem, so the same caption file, as the result of
    # the format it wrote before: that caption stays with the result that stays.
    # A rejected item's result is gone: its caption goes too, unless a result that stays shares it.
    leaving = {record.get("file_name") for record, _ in changes.prune} | {r["file_name"] for r in changes.reject}
    staying = current - leaving  # a failure names no file
    changes.staying_captions = {caption_name(name) for name in staying}
    changes.orphan_copies = _orphan_copies(
        output,
        records,
        {**finished, **behind},
        planned.keys() - {r["item_id"] for r in [*changes.reject, *(r for r, _ in renamed)]},
    )
    return changes


def _renamed_away(plan: JobPlan, finished: dict[str, dict]) -> list[tuple[dict, str]]:
    """The results of files a folder or glob of the job gave and no longer finds, where a file it finds now (the
    same one renamed or moved) has a result of the same content, prompt and parameters (`renamed_away`): duplicates
    to move out, each with why. Removed from `finished`."""
    from .source_identity import renamed_away

    return [
        (finished.pop(item_id), f"its source was renamed to {path}, whose item has a result")
        for item_id, path in renamed_away(plan.items, finished).items()
    ]


def _orphan_copies(
    output: JobOutput, records: dict[str, dict], finished: dict[str, dict], staying: set[str]
) -> list[str]:
    """The kept copies under sources/ that no item staying names: its result listed, or one the next run makes
    (a deleted image, another format) with the same copy. A sweep's items share one: it goes with the last."""
    named = copies_named([*finished.values(), *(r for item_id, r in records.items() if item_id in staying)])
    present = kept_listing(output.folder / SOURCES_DIR) - named
    return sorted(name for name in present if (output.folder / name).is_file())


def _older_because(name: str, latest: dict, item: WorkItem | None) -> str:
    """Why a file that no item's result names moves out, from the latest record of the item it was made for:
    that item has another result, or is planned under another name (rejected, failed or pruned since), or is
    not planned."""
    if latest.get("status") == "ok":
        return "an older result of an item that has a newer one"
    if item is None:
        return NOT_PLANNED
    if name == item.output_name:  # put back by hand, but not the file recorded (another size or content)
        return "not the image recorded for its item"
    return f"the job now writes {item.output_name}"


def _caption_moves(output: JobOutput, changes: _Changes, file_name: str) -> bool:
    caption = caption_name(file_name)
    return caption not in changes.staying_captions and (output.folder / caption).is_file()


def _apply(output: JobOutput, changes: _Changes, result: PruneResult, stopped: Callable[[], bool]) -> None:
    """Each file moves before its record says so: a crash in between leaves an item that simply runs again. Once
    `stopped()`, the move in progress and its record are finished and nothing more changes (`result.stopped`)."""
    try:
        _changes_applied(output, changes, result, stopped)
    except _Stop:
        result.stopped = True
        result.kept, result.deleted = changes.kept, changes.deleted
        planned = sum(record["status"] == "ok" for record, _ in changes.prune)
        result.left = max(0, planned + len(changes.superseded) + len(changes.orphan_copies) - len(result.moved))


class _Stop(Exception):
    pass


def _changes_applied(output: JobOutput, changes: _Changes, result: PruneResult, stopped: Callable[[], bool]):
    def move(name: str) -> str | None:
        if stopped():
            raise _Stop
        return output.move_to_pruned(name, with_caption=_caption_moves(output, changes, name))

    for record, _ in changes.prune:
        moved_to = move(record["file_name"]) if record["status"] == "ok" else None
        kept = changes.keeping.get(record["item_id"])
        output.mark(record, "pruned", pruned_to=moved_to, **({"kept": kept} if kept else {}))
        result.moved += [record["file_name"]] if moved_to else []
    for record, holder in changes.replaced:
        if stopped():
            raise _Stop
        kept = changes.keeping.get(record["item_id"])
        output.mark(record, "pruned", pruned_to=None, replaced_by=holder, **({"kept": kept} if kept else {}))
        result.replaced.append(record["file_name"])
    for record in changes.restore:
        if stopped():
            raise _Stop
        output.restore(record)
    for name, _ in changes.superseded:
        if move(name):
            result.moved.append(name)
    for record in changes.reject:
        move(record["file_name"])  # its image is gone: only its caption moves, if it goes
        output.mark(record, "rejected")
        result.rejected.append(record["item_id"])
    # after the results: a stop in between leaves a copy to move, never a result without its copy
    for name in changes.orphan_copies:
        if stopped():
            raise _Stop
        if output.move_to_pruned(name, with_caption=False):
            result.moved.append(name)
    result.kept, result.deleted = changes.kept, changes.deleted


def _failures_listed(folder: Path) -> set[str]:
    """The item ids failures.csv lists now: it lists the failures of items planned at the last run or prune (one
    no longer planned since is still there), so a failure the plan has dropped may or may not be in it."""
    try:
        delimiter, text = delimiter_of(job_files.read_bytes(folder / "failures.csv").decode("utf-8-sig", "replace"))
        rows = csv.DictReader(io.StringIO(text.lstrip("\n"), newline=""), delimiter=delimiter)
        return {str(row.get("item_id") or "") for row in rows}
    except (OSError, CsvTableError, csv.Error):  # none there, or not one to read: it lists none
        return set()


def _describe(output: JobOutput, changes: _Changes, result: PruneResult) -> PruneResult:
    captions: set[str] = set()  # listed once: a caption goes with the first result moved that has it

    def moving_caption(name: str) -> str | None:
        caption = caption_name(name)
        moves = _caption_moves(output, changes, name) and caption not in captions
        captions.add(caption)
        return caption if moves else None

    def would_move(name: str, why: str) -> None:
        caption = moving_caption(name)
        if not (output.folder / name).is_file():  # a file already gone moves nowhere: not counted by a prune either
            result.listing += [f"would move the caption {caption} of the deleted {name} ({why})"] if caption else []
            return
        result.moved.append(name)
        result.listing.append(f"would move {name}{f' and its caption {caption}' if caption else ''} ({why})")

    listed_failures = _failures_listed(output.folder)
    for record, why in changes.prune:
        if record["status"] == "ok":
            would_move(record["file_name"], why)
        elif record["item_id"] in listed_failures:  # else only its record changes: nothing a user sees
            result.listing.append(f"would drop the failure of item {record['item_id']} from failures.csv ({why})")
    for record, holder in changes.replaced:
        result.replaced.append(record["file_name"])
        result.listing.append(
            f"would record item {record['item_id']} as pruned without moving {record['file_name']}: that file is "
            f"item {holder}'s result now (the item's own image was written over)"
        )
    for name, why in changes.superseded:
        would_move(name, why)
    for record in changes.reject:
        result.rejected.append(record["item_id"])
        caption = moving_caption(record["file_name"])
        also = f" and move its caption {caption}" if caption else ""
        result.listing.append(f"would reject item {record['item_id']} ({record['file_name']} was deleted){also}")
    for name in changes.orphan_copies:
        result.moved.append(name)
        result.listing.append(f"would move the kept copy {name} (no result staying names it)")
    result.kept, result.deleted = changes.kept, changes.deleted
    return result
