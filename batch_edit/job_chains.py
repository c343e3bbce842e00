"""Jobs that edit another job's results (a source naming its folder, a glob in it or a file of it): which items
wait for results a job of this run has still to make, which folder nothing will fill, and what to say of both.

Sources are listed when a run starts: a job folder that did not exist then, or held no results, stands as
itself (a `job_folder` ref, or a path that is no file yet). Its readers' items wait while that job has items to
make; once they are made, the run lists its readers' sources again and runs what they add (`readers`). What a
failed producer leaves unmade stays waiting ("left for later") for the next run."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from .errors import ManifestError
from .manifest import JobSpec
from .sources import SourceRef


class JobFolders(dict):
    """job_folders' mapping, which remembers the job each path it was asked about names: a pass over 100,000
    items of 100 sources resolves 100 paths' links, not 100,000. It lives as long as one plan or run."""

    def __init__(self, folders: dict[str, str]):
        super().__init__(folders)
        self.resolved: dict[tuple[str, str], str | None] = {}


def job_folders(names: list[str], output_root: Path) -> JobFolders:
    """Each job's output folder (its real location: `real_path`) -> its name."""
    return JobFolders({real_path(Path(output_root) / name): name for name in names})


def _remembered(folders: dict[str, str], kind: str, path: str, find) -> str | None:
    resolved = getattr(folders, "resolved", None)
    if resolved is None:
        return find()
    if (kind, path) not in resolved:
        resolved[kind, path] = find()
    return resolved[kind, path]


def real_path(path: str | Path) -> str:
    """Where a path really is, its folders' links resolved (its own name kept: a result is named by it): one job
    folder reached through a link to the project, by the working folder's physical path or by a relative path is
    one folder. Job folders are compared by it, whatever spelling a manifest, the records or `--output-root` use."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name)


def folder_of_job(path: str, folders: dict[str, str]) -> str | None:
    """The job (`folders`: job_folders) whose folder `path` is (or a link to it is)."""
    return _remembered(
        folders, "folder", path, lambda: folders.get(real_path(path)) or folders.get(os.path.realpath(path))
    )


def job_of(path: str, folders: dict[str, str]) -> str | None:
    """The job whose folder `path` is, or holds as one of its files."""
    return folder_of_job(path, folders) or _remembered(
        folders, "holder", path, lambda: folders.get(os.path.realpath(os.path.dirname(os.path.abspath(path))))
    )


def waits_for(
    source: SourceRef, own: str, folders: dict[str, str], makers: set[str], coming: frozenset[str] = frozenset()
) -> str | None:
    """The job of this run (`folders`: job_folders) whose results the source stands for, where that job has
    items to make (`makers`): its folder as a whole, or a file in it that is no file yet or that one of its
    pending items writes again (`coming`: their real paths; `--overwrite`, a damaged result), which would
    change under the reading item. None for any other source (a missing one fails as its "file not found")."""
    if source.is_url:
        return None
    other = job_of(source.key, folders)
    if other is None or other == own or other not in makers:
        return None
    return None if os.path.isfile(source.key) and real_path(source.key) not in coming else other


def split_waiting(pending: dict[str, list], folders: dict[str, str], ran: frozenset[str] = frozenset()):
    """Each job's pending items -> (per job: the items to run, the waiting ones counted per job they wait for,
    and the waiting sources with that job). A source standing for the empty folder of a job of this run that has
    nothing left to make is refused: no run would give it anything to edit. `ran`: jobs whose items this run
    already tried; what they did not make (their items failed) is waited for, for the next run to retry."""
    makers = {name for name, items in pending.items() if items} | set(ran)
    named = {name: folder for folder, name in folders.items()}
    coming = _BuiltOnUse(
        lambda: frozenset(
            os.path.join(named[name], item.output_name)
            for name in makers
            if name in named
            for item in pending.get(name, ())
        )
    )  # only a source in a job folder of the run asks: the names of 100,000 items are not worked out otherwise
    running, waiting, sources = {}, {}, {}
    for name, items in pending.items():
        running[name], waiting[name], sources[name] = [], {}, {}
        answers: dict[int, str | None] = {}  # per source (the items of one source share its ref): asked once
        for item in items:
            source = item.source
            other = answers.get(id(source), _UNASKED)  # None is an answer
            if other is _UNASKED:
                other = answers[id(source)] = waits_for(source, name, folders, makers, coming)
            if other is None:
                running[name].append(item)
            else:
                waiting[name][other] = waiting[name].get(other, 0) + 1
                sources[name].setdefault(item.source.key, other)
    if problems := _idle_job_folders(running, folders):
        raise ManifestError(problems)
    return running, waiting, sources


_UNASKED = object()


class _BuiltOnUse:
    """A set of paths worked out when first asked about."""

    def __init__(self, build):
        self._build, self._paths = build, None

    def __contains__(self, path) -> bool:
        if self._paths is None:
            self._paths = self._build()
        return path in self._paths


def _idle_job_folders(running: dict[str, list], folders: dict[str, str]) -> list[str]:
    """Sources to run that stand for a job folder holding no results (`job_folder` refs) of a job of this run:
    that job has nothing left to make (what it planned is rejected), so they would fail as folders."""
    problems = {}
    for name, items in running.items():
        for item in items:
            other = folder_of_job(item.source.key, folders) if item.source.job_folder else None
            if other is not None and other != name:
                problems.setdefault(
                    (name, item.source.key),
                    f"job {name}: source {item.source.key} is job {other}'s folder, which holds no results, and job "
                    f"{other} has nothing left to make (the items `prune --rejected` marked are made again only by "
                    f"`run --overwrite`): nothing for job {name} to edit",
                )
    return list(problems.values())


def waiting_warnings(sources: dict[str, dict[str, str]]) -> list[str]:
    """A warning per job and job it waits for (split_waiting's sources): a CSV naming 10,000 results to come is
    one line."""
    warnings = []
    for job, waits in sources.items():
        by_maker: dict[str, list[str]] = {}
        for source, other in waits.items():
            by_maker.setdefault(other, []).append(source)
        warnings.extend(_waiting_warning(job, named, other) for other, named in by_maker.items())
    return warnings


def unfilled_job_folders(job: JobSpec, jobs: list[JobSpec], output_root: Path) -> list[str]:
    """The job's sources that stand for a job folder holding no results (`job_folder` refs) of no job of this
    run: nothing will fill them."""
    folders = job_folders([other.name for other in jobs], output_root)
    refs = dict.fromkeys(ref for grid in job.grids for ref in grid.sources)
    return [ref.key for ref in refs if ref.job_folder and folder_of_job(ref.key, folders) is None]


def read_jobs(plan, folders: dict[str, str]) -> set[str]:
    """The other jobs whose results (their folder, a glob in it, a file of it) the plan's sources are."""
    keys = {item.source.key for item in plan.items if not item.source.is_url}
    return {job_of(key, folders) for key in keys} - {None, plan.name}


def readers(plans, folders: dict[str, str], makers: set[str]) -> set[str]:
    """The jobs (of `plans`) whose sources are results of the `makers`: what those make is theirs to edit, so
    they are listed again once it is made."""
    return {plan.name for plan in plans if read_jobs(plan, folders) & makers}


def producers_first(plans: list, folders: dict[str, str]) -> list:
    """The plans, each after the jobs whose results it reads (jobs reading each other: in their own order)."""
    ordered, left = [], list(plans)
    while left:
        waiting = {plan.name for plan in left}
        ready = [plan for plan in left if not read_jobs(plan, folders) & waiting] or left[:1]
        ordered += ready
        left = [plan for plan in left if plan not in ready]
    return ordered


def without_moved_sources(plan, folders: dict[str, str], moved: dict[str, list[str]]):
    """The plan without its items whose sources are results another job's prune moves out (`moved`: file names
    per job): a plan made after those moves no longer has them, so one prune moves their results too."""
    gone = {os.path.join(folder, name) for folder, job in folders.items() for name in moved.get(job, ())}
    items = tuple(item for item in plan.items if item.source.is_url or real_path(item.source.key) not in gone)
    return plan if len(items) == len(plan.items) else replace(plan, items=items)


def chained_after(plans, folders: dict[str, str], makers: set[str]) -> set[str]:
    """The jobs reading the `makers`' results, directly or through another job's: a maker too, where it reads
    another maker's (its items from what that one makes come after it)."""
    found: set[str] = set()
    while new := readers(plans, folders, found | set(makers)) - found:
        found |= new
    return found


def _waiting_warning(job: str, sources: list[str], other: str) -> str:
    source = sources[0]
    if len(sources) > 1:
        what = f"sources {source} and {len(sources) - 1} more are results of job {other} in this run, not made yet"
        what += " (or made again)" if any(os.path.isfile(path) for path in sources) else ""
    elif os.path.basename(os.path.abspath(source)) == other:
        what = f"source {source} is job {other}'s folder in this run, which holds no results yet"
    elif os.path.isfile(source):
        what = f"source {source} is a result job {other} makes again in this run"
    else:
        what = f"source {source} is a result of job {other} in this run, not made yet"
    return (
        f"job {job}: {what}: a job reads another's results only once they exist, so job {job}'s items from them "
        f"run after job {other}'s"
    )
