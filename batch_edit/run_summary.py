"""What `run` prints when it ends: a line per job (written, already done, failed, left for later and why) and the
run's total, on stdout, where a script reading the result finds it; then, on stderr, what stopped it early."""

from __future__ import annotations

import sys

from .progress import format_duration
from .validation import escaped

SHOWN_REASONS = 5  # the most frequent failure reasons a job's line names; the rest are counted together
RUN_STOPPED = "The run stopped; every finished item is recorded. Fix the problem and re-run the same command to resume."
FILES_UNWRITTEN = (
    "The run could not write the file(s) above; every finished item is recorded. Fix the problem and "
    "re-run the same command: it writes them without redoing any item."
)


def print_summary(result, stopped_by: str | None, overwrite: bool, limit: int | None) -> None:
    for job in result.jobs:
        reasons = _reasons(job.errors)
        print(
            f"job {job.name}: {job.done} written, {job.already_done} already done, "
            f"{f'{job.rejected} rejected, ' if job.rejected else ''}{job.failed} failed"
            f"{_left(job, stopped_by, overwrite, limit)}"
            f"{' (' + reasons + ')' if reasons else ''} in {job.seconds:.1f} s -> {escaped(job.folder)}"
        )
        if job.moved_aside:
            print(_moved_aside(job))
        if job.superseded:
            print(_superseded(job))
    left = sum(job.held_back + job.not_run + sum(job.waiting.values()) for job in result.jobs)
    if not result.loaded_model:
        rejected = " or rejected" if any(job.rejected for job in result.jobs) else ""
        waiting = f"; {left} left for later" if left else ""
        print(f"nothing to do: every item is already done{rejected}{waiting}")
    else:  # the same clock and format as the progress line's last "elapsed"
        written, failed = sum(job.done for job in result.jobs), result.failed
        later = f", {left} {_left_word(overwrite)}" if left else ""
        print(f"total: {written} written, {failed} failed{later}, elapsed {format_duration(result.seconds)}")


def print_stops(result, stopped_by: str | None) -> bool:
    """What stopped the run, on stderr after the summary: a signal, then an output folder that could not be
    written or the job files left unwritten. True where the latter make the run's exit 3."""
    if stopped_by is not None:
        print(
            f"stopped by {stopped_by}: every finished item is recorded; run the same command again to resume",
            file=sys.stderr,
        )
    if result.error is None and not result.unwritten:
        return False
    for problem in [result.error] * (result.error is not None) + result.unwritten:
        print(f"error: {escaped(problem)}", file=sys.stderr)
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


def _left(job, stopped_by: str | None, overwrite: bool, limit: int | None) -> str:
    """The ", N left for later (why)" of a job a stop or --limit left items of."""
    waiting = sum(job.waiting.values())
    if not job.held_back and not job.not_run and not waiting:
        return ""
    why = [f"stopped by {stopped_by or 'an error'}"] if job.not_run else []
    if job.refused:  # planned again in this run, it was refused: running again would refuse it too
        why.append("refused once its sources were listed again: see the error above")
    else:
        why.extend(f"waiting for job {other}'s results: run again" for other in sorted(job.waiting))
    if job.held_back and overwrite:  # nothing marks an item as redone: a repeat redoes the same first N
        why.append(f"--overwrite --limit {limit} redoes the first {limit} each time")
    elif job.held_back:
        why.append("--limit")
    return f", {job.held_back + job.not_run + waiting} {_left_word(overwrite)} ({'; '.join(why)})"


def _left_word(overwrite: bool) -> str:
    return "not redone" if overwrite else "left for later"
