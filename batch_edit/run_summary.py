"""What `run` prints when it ends: a line per job (written, already done, failed, left for later and why) and the
run's total, on stdout, where a script reading the result finds it; then, on stderr, what stopped it early."""

from __future__ import annotations

import sys

from .chain_counts import stand_in, to_come_words
from .errors import BatchEditError
from .job_chains import job_of
from .name_notes import moved_earlier_line
from .progress import format_duration
from .validation import escaped

SHOWN_REASONS = 5  # the most frequent failure reasons a job's line names; the rest are counted together
RUN_STOPPED = "The run stopped; every finished item is recorded. Fix the problem and re-run the same command to resume."
FILES_UNWRITTEN = (
    "The run could not write the file(s) above; every finished item is recorded. Fix the problem and "
    "re-run the same command: it writes them without redoing any item."
)
# --overwrite marks no item as redone: the same command starts over, and a run without it keeps what is there
OVERWRITE_RERUN = (
    "running the same command again with --overwrite redoes every item again (those this run redid too); "
    "without --overwrite, it makes only what is not done"
)
LIMITED_OVERWRITE_RERUN = (
    "running the same command again (--overwrite --limit {limit}) redoes the same first {limit} item(s) again, "
    "never the rest; without --limit, it redoes every item; without --overwrite, it makes only what is not done"
)


def overwrite_rerun(limit: int | None = None, kept: bool = True) -> str:
    """What the same command does again after `run --overwrite` (`limit`: its --limit), and one without it;
    `kept`: whether items it did not redo keep earlier results (not where all it left were never made)."""
    said = OVERWRITE_RERUN if limit is None else LIMITED_OVERWRITE_RERUN.format(limit=limit)
    return said + ", and the items this run did not redo keep their earlier results" if kept else said


def resume_hint(overwrite: bool, limit: int | None = None) -> str:
    """What a rerun does after a stop: resumes, or, after `run --overwrite`, what it does with and without it."""
    return overwrite_rerun(limit) if overwrite else "run the same command again to resume"


def print_summary(result, stopped_by: str | None, overwrite: bool, limit: int | None, coming=None) -> None:
    """`coming`: left_to_come's."""
    coming = _coming(result, coming)
    waits = {job.name: _waits(job, coming.get(job.name)) for job in result.jobs}
    for job in result.jobs:
        reasons = _reasons(job.errors)
        left = _left(job, waits[job.name], stopped_by, overwrite, limit)
        print(
            f"job {job.name}: {job.done} written, {job.already_done} already done, "
            f"{f'{job.rejected} rejected, ' if job.rejected else ''}{job.failed} failed"
            f"{left}{_to_come(coming.get(job.name), overwrite, limit, said=bool(left))}"
            f"{' (' + reasons + ')' if reasons else ''} in {job.seconds:.1f} s -> {escaped(job.folder)}"
        )
        if job.moved_aside:
            print(_moved_aside(job))
        if job.moved_earlier:
            print(moved_earlier_line(job.name, job.moved_earlier))
        if job.moved_unrecorded:
            print(_moved_unrecorded(job))
        if job.superseded:
            print(_superseded(job))
        if any(job.filled):
            print(_filled(job))
    left = sum(job.held_back + job.not_run + sum(waits[job.name].values()) for job in result.jobs)
    kept = sum(_not_redone(job, waits[job.name], overwrite) for job in result.jobs)
    counts = [count for count, makers, *_ in coming.values() if makers]
    added = sum(count or 0 for count in counts)
    how_many = f"{added} and more" if None in counts and added else "more" if None in counts else added
    to_come = f"{how_many} to come from results still to make" if counts else ""
    if not result.loaded_model:
        rejected = " or rejected" if any(job.rejected for job in result.jobs) else ""
        waiting = ", ".join([f"{left} left for later"] * bool(left) + [to_come] * bool(to_come))
        print(f"nothing to do: every item is already done{rejected}{'; ' + waiting if waiting else ''}")
    else:  # the same clock and format as the progress line's last "elapsed"
        written, failed = sum(job.done for job in result.jobs), result.failed
        later = f", {_left_words(left, kept)}" if left else ""
        later += f", {to_come}" if to_come else ""
        print(f"total: {written} written, {failed} failed{later}, elapsed {format_duration(result.seconds)}")
        if overwrite and (left or to_come) and stopped_by is None and result.error is None:  # a stop says it
            print(f"note: nothing marks an item as redone: {overwrite_rerun(limit, bool(kept))}", file=sys.stderr)
    if failed := [job for job in result.jobs if job.failed]:  # the line above counts reasons; where each item's is
        files = ", ".join(escaped(job.folder / "failures.csv") for job in failed)
        print(f"failed items, each with its error: {files}")


def left_to_come(result, plans, output_root, overwrite: bool, planned_again) -> dict[str, tuple] | None:
    """Per job, of the jobs planned again now (`planned_again(read)`: the output root, plans and specs), as `plan`
    counts them: the items the results a job of the run has still to make will add to it (how many, None where
    its globs cannot tell; the jobs making them), its items waiting for another job's results, per job, each
    once (`_listed`: those the run left waiting and, where its items stood for a job's folder not filled when it
    was planned, its items from the results that job made since: the run ended before listing them, a stop, or
    jobs reading each other's results: a run of as many rounds as jobs ends with the last round's results unread,
    and counts every job's items from results made in it), and True (listed again). Not the items this run made:
    with --overwrite every item is pending, those it redid too. {} where no job reads another's results,
    or none has items left and none reads back a job that reads it (all made: nothing is to come); None where they
    could not be planned again (a manifest or the pipeline config changed meanwhile)."""
    from .chain_counts import to_come
    from .job_chains import job_folders, read_jobs
    from .runner import pending_items

    folders = job_folders([plan.name for plan in plans], output_root)
    left = any(job.held_back or job.not_run or job.waiting or job.failed for job in result.jobs)
    reads = {plan.name: read_jobs(plan, folders) for plan in plans}
    wrote = {job.name for job in result.jobs if job.done and not job.refused}
    around = wrote & _read_around(reads)  # jobs whose results this run made may be left unread by its last round
    if not (left or around) or not any(reads.values()):  # nothing can be to come
        return {}
    read: dict = {}
    try:
        output_root, plans, jobs = planned_again(read)
    except (BatchEditError, OSError, KeyboardInterrupt):
        return None
    folders = job_folders([plan.name for plan in plans], output_root)
    pending = {  # with --overwrite every item is pending: not those this run made (they are done, not left)
        plan.name: _not_made(result, plan.name, pending_items(plan, read[plan.name][0], overwrite, read[plan.name][1]),
                             read[plan.name][1])
        for plan in plans
    }  # fmt: skip
    found, coming = to_come(plans, jobs, pending, folders), {}
    standing = {job.name: set(job.standing) | around for job in result.jobs if not job.refused}
    jobs_run = {job.name: job for job in result.jobs if not job.refused}
    for plan in plans:
        count, _, makers, *_ = found[plan.name]
        if plan.name not in jobs_run:
            coming[plan.name] = (count, makers, {}, False)
            continue
        listed = _listed(
            jobs_run[plan.name], pending[plan.name], read[plan.name][1], folders, standing[plan.name], around
        )
        coming[plan.name] = (count, makers, listed, True)
    return coming


def _listed(job, pending: list, records: dict, folders: dict, standing: set[str], around: set[str]) -> dict:
    """The job's items waiting for another job's results, per job, as it is listed again now (`pending`): each
    item once, by its id: one the run left waiting, or one from the results of a job its folder stood for or
    that reads it back (`standing`), which the run made but did not list again. A waiting item gone from the
    list (its source made again with new bytes, or moved out) counts only where none of that job's is listed
    in its place."""
    listed: dict[str, int] = {}
    ids = {item.item_id for item in pending}
    for item in pending:
        maker = job_of(item.source.key, folders)
        if maker is None or maker == job.name or stand_in(item.source, folders):
            continue
        if item.item_id not in job.waiting_for and maker not in standing:
            continue
        tried = maker in around and records.get(item.item_id, {}).get("status") == "failed"  # counted failed
        listed[maker] = listed.get(maker, 0) + (not tried)
    for item_id, maker in job.waiting_for.items():
        if item_id not in ids and maker not in standing:
            listed[maker] = listed.get(maker, 0) + 1
    return {maker: n for maker, n in listed.items() if n}


def _not_made(result, name: str, items: list, records: dict) -> list:
    """The job's pending `items` but those this run made (its last record a success): a run with --overwrite
    lists every item as pending, those it redid too, which would count them again as left or as making results
    still to come. A failed one stays: a later run tries it again."""
    tried = result.tried.get(name, set())
    return [item for item in items if item.item_id not in tried or records.get(item.item_id, {}).get("status") != "ok"]


def _read_around(reads: dict[str, set[str]]) -> set[str]:
    """The jobs that read, through other jobs' results or directly, a job reading theirs (`reads`: per job, the
    jobs whose results it reads)."""
    around = set()
    for start, read in reads.items():
        seen, todo = set(), list(read)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(reads.get(name, ()))
        if start in seen:
            around.add(start)
    return around


def _coming(result, coming: dict | None) -> dict[str, tuple]:
    """left_to_come's counts, but of the jobs refused once listed again (a run would refuse them too); where it
    found none (None), the jobs whose items stood for a folder to fill get "more" to come from its job."""
    if coming is None:
        coming = {job.name: (None, sorted(job.standing), {}, False) for job in result.jobs if job.standing}
    refused = {job.name for job in result.jobs if job.refused}
    return {name: counts for name, counts in coming.items() if name not in refused}


def _to_come(coming: tuple | None, overwrite: bool = False, limit: int | None = None, said: bool = False) -> str:
    """ ", N to come from job X's results still to make (run again)"; after --overwrite, what a run again does is
    said once after the summary, and with --limit on the job's line (where `_left` did not say it, `said`)."""
    if coming is None or not coming[1]:
        return ""
    again = "run again" if not overwrite else "" if limit is None or said else _OVERWRITE_LIMIT.format(limit=limit)
    return f", {to_come_words(*coming[:2])}{f' ({again})' if again else ''}"


def _waits(job, coming: tuple | None) -> dict[str, int]:
    """The job's items waiting for results a job of the run makes, per job: those naming a result, and those
    from results its folder stood for that the run made but did not list again (the stand-ins themselves are
    no items: what the results still to make give is counted as to come)."""
    if coming is None:  # a job refused, or whose sources stood for no folder to fill
        return dict(job.waiting)
    if coming[3]:  # listed again now: each item once
        return dict(coming[2])
    waits = {other: count - job.standing.get(other, 0) for other, count in job.waiting.items()}
    for other, count in coming[2].items():
        waits[other] = waits.get(other, 0) + count
    return {other: count for other, count in waits.items() if count}


def print_stops(result, stopped_by: str | None, overwrite: bool = False, limit: int | None = None) -> bool:
    """What stopped the run, on stderr after the summary: a signal, then an output folder that could not be
    written or the job files left unwritten. True where the latter make the run's exit 3. `overwrite`: the run's
    --overwrite, which a rerun would repeat from the first item (`limit`: up to its --limit)."""
    if stopped_by is not None:
        hint = resume_hint(overwrite, limit)
        print(f"stopped by {stopped_by}: every finished item is recorded; {hint}", file=sys.stderr)
    if result.error is None and not result.unwritten:
        return False
    for problem in [result.error] * (result.error is not None) + result.unwritten:
        print(f"error: {escaped(problem)}", file=sys.stderr)
    if overwrite and result.error is not None:
        print(f"The run stopped; every finished item is recorded. Fix the problem; then {overwrite_rerun(limit)}.",
              file=sys.stderr)  # fmt: skip
    elif overwrite:
        again = "every item" if limit is None else f"the first {limit} item(s)"
        print(
            "The run could not write the file(s) above; every finished item is recorded. Fix the problem and re-run "
            f"the same command without --overwrite: it writes them without redoing any item (with --overwrite it "
            f"redoes {again} again).",
            file=sys.stderr,
        )
    else:
        print(RUN_STOPPED if result.error is not None else FILES_UNWRITTEN, file=sys.stderr)
    return True


def _moved_aside(job, shown: int = 5) -> str:
    """The files a job's results were written in place of, none of them its own as recorded: where they went."""
    names = [escaped(n) + ("" if n == to else f" (as {escaped(to)})") for n, to in job.moved_aside[:shown]]
    more = f" and {len(job.moved_aside) - shown} more" if len(job.moved_aside) > shown else ""
    return (
        f"job {job.name}: moved {len(job.moved_aside)} file(s) it did not make (or changed since it made them) to "
        f".batch-edit/pruned/ before writing under their names: {', '.join(names)}{more}"
    )


def _filled(job) -> str:
    """Files of finished items written without making any image again: caption files and kept copies missing
    (turned on after the items were made, deleted since, or a run killed before writing them)."""
    captions, copies = job.filled
    parts = [f"the kept source copies of {copies}"] * bool(copies) + [f"the caption files of {captions}"] * bool(
        captions
    )
    return f"job {job.name}: wrote {' and '.join(parts)} finished item(s) that lacked them (no image made again)"


def _moved_unrecorded(job, shown: int = 5) -> str:
    """The job's own results a crash left without their record (cut short or lost): moved out, made again."""
    images = [(n, to) for n, to in job.moved_unrecorded if not n.endswith(".txt")]
    names = [escaped(n) + ("" if n == to else f" (as {escaped(to)})") for n, to in images[:shown]]
    more = f" and {len(images) - shown} more" if len(images) > shown else ""
    return (
        f"job {job.name}: moved {len(images)} result(s) of its own whose record was cut short or lost (a crash as it "
        f"was recorded) to .batch-edit/pruned/ and made them again: {', '.join(names)}{more}"
    )


def _superseded(job) -> str:
    """The job's earlier results that this run moved out: made from other jobs' results that it replaced."""
    makers = " and ".join(f"job {escaped(name)}" for name in sorted(job.superseded))
    return (
        f"job {job.name}: moved {sum(job.superseded.values())} earlier result(s) to .batch-edit/pruned/: made from "
        f"results of {makers} that this run replaced"
    )


def _reasons(errors: dict[str, int]) -> str:
    """The reasons counted, the most frequent first ("file not found: 300; not an image: 2"), then "N more
    reasons: M" (failures.csv has each item's whole error)."""
    ranked = sorted(errors.items(), key=lambda pair: (-pair[1], pair[0]))
    shown = [f"{escaped(reason)}: {count}" for reason, count in ranked[:SHOWN_REASONS]]
    if rest := ranked[SHOWN_REASONS:]:
        shown.append(f"{len(rest)} more reasons: {sum(count for _, count in rest)}")
    return "; ".join(shown)


def _left(job, waits: dict[str, int], stopped_by: str | None, overwrite: bool, limit: int | None) -> str:
    """The ", N left for later (why)" of a job a stop or --limit left items of (`waits`: _waits')."""
    waiting = sum(waits.values())
    if not job.held_back and not job.not_run and not waiting:
        return ""
    why = [f"stopped by {stopped_by or 'an error'}"] if job.not_run else []
    if job.refused:  # planned again in this run, it was refused: running again would refuse it too
        why.append("refused once its sources were listed again: see the error above")
    else:  # after --overwrite, what a run again does is said once, after the summary
        again = "" if overwrite else ": run again"
        why.extend(f"waiting for job {other}'s results{again}" for other in sorted(waits))
    if overwrite and limit is not None:  # nothing marks an item as redone: a repeat redoes the same first N, so
        why.append(_OVERWRITE_LIMIT.format(limit=limit))  # neither what it held back nor what waits is reached
    elif job.held_back:
        why.append("--limit")
    left = job.held_back + job.not_run + waiting
    return f", {_left_words(left, _not_redone(job, waits, overwrite))} ({'; '.join(why)})"


_OVERWRITE_LIMIT = "--overwrite --limit {limit} redoes the first {limit} each time"


def _not_redone(job, waits: dict[str, int], overwrite: bool) -> int:
    """Of the items a run with --overwrite left of the job, those it did not redo: the ones --limit held back
    that were done before (they keep their earlier results), and those a stop left or waiting for results. The
    others --limit held back were never made: left for later, as without --overwrite."""
    return job.not_redone + job.not_run + sum(waits.values()) if overwrite else 0


def _left_words(left: int, not_redone: int) -> str:
    """ "N not redone, M left for later", either left out where it is 0."""
    parts = ((not_redone, "not redone"), (left - not_redone, "left for later"))
    return ", ".join(f"{count} {words}" for count, words in parts if count)
