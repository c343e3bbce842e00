"""How many items the results a job of the run has still to make add to the jobs reading them (its folder, a glob
in it), and in which of the run's rounds each pending item runs: `plan` counts and splits `--limit` with them, and
`run`'s summary counts what it left to come with the same code."""

from __future__ import annotations

import os

from .job_chains import folder_of_job, job_of, producers_first, read_jobs, real_path


def stand_in(source, folders: dict[str, str]) -> bool:
    """A source standing for a job's folder listed while it held no results (or did not exist): no image, but
    the results that job will make there."""
    return source.job_folder or (not source.is_url and folder_of_job(source.key, folders) is not None)


def stand_ins(items, folders: dict[str, str]) -> dict[str, int]:
    """The items standing for a job's folder to fill (no item: the results to come give that job's), per job."""
    found: dict[str, int] = {}
    for item in items:
        if stand_in(item.source, folders) and (other := job_of(item.source.key, folders)) is not None:
            found[other] = found.get(other, 0) + 1
    return found


def to_come(plans, jobs, pending: dict[str, list], folders: dict[str, str], running=None) -> dict[str, tuple]:
    """Per job: what the results a job of the run has still to make add to it once made, as (how many items,
    None where its sources' globs cannot tell; stand-ins for the estimate: the items one of its sources gives, once
    per result it takes; the jobs making them; the ids of its items done from results made again; its pending
    items and stand-ins per round of the run they run in). A result is a new source of each folder or glob taking
    it; files named one by one are items already (waiting). `running`: per job, the items a run runs at once
    (split_waiting's); without it, the rounds are not sorted out (all in the first).

    An item runs in the round after the one making the result it reads (a chain of n jobs settles in n rounds),
    so a producer spread over several rounds gives its readers items in as many."""
    found = {plan.name: (0, [], [], set(), {1: list(pending[plan.name])}) for plan in plans}
    if not any(read_jobs(plan, folders) for plan in plans):  # no chain: nothing to come
        return found
    named, specs = {name: folder for folder, name in folders.items()}, {job.name: job for job in jobs}
    new: dict[str, tuple] = {}  # per job: its results that are no file yet (with the round making them), the
    for plan in producers_first(plans, folders):  # suffixes of those to come (with theirs), the files it writes again
        count, timed, makers, remade = 0, [], [], set()
        for maker in sorted(read_jobs(plan, folders) & set(new)):  # a job read before it is planned adds nothing
            paths, later, again = new[maker]
            waiting = {item.item_id for item in pending[plan.name]}  # counted as its items already
            redone = [
                (item, again[real_path(item.source.key)] + 1)
                for item in plan.items
                if item.item_id not in waiting and not item.source.is_url and real_path(item.source.key) in again
            ]  # done from a file made again: made again from its new content, as an item to come
            if redone:
                makers += [] if maker in makers else [maker]
                remade |= {item.item_id for item, _ in redone}
                count, timed = None if count is None else count + len(redone), timed + redone
            for grid in specs[plan.name].grids:
                listed = {real_path(ref.key) for ref in grid.sources if not ref.is_url}  # items already
                taken = _taken(grid, named[maker], {p: r for p, r in paths.items() if p not in listed}, later)
                if taken == []:
                    continue
                makers += [] if maker in makers else [maker]
                if taken is None or count is None:
                    count = None
                    continue
                source = grid.sources[0].key
                per_source = [item for item in plan.items if item.source.key == source]
                count += len(taken) * len(per_source)
                timed += [(item, made + 1) for made in taken for item in per_source]
        rounds = _rounds(plan.name, pending[plan.name], running, new, folders)
        for item, at in timed:
            rounds.setdefault(at, []).append(item)
        found[plan.name] = (count, [item for item, _ in timed], makers, remade, rounds)
        at = {item.item_id: at for at, items in rounds.items() for item in items}
        folder = named[plan.name]
        made = {  # not from a stand-in, nor from a source known to be missing: those make no result
            os.path.join(folder, item.output_name): at[item.item_id]
            for item in pending[plan.name]
            if item.item_id in at and not stand_in(item.source, folders) and not _missing(item.source, folders)
        }
        later = None if count is None else [(os.path.splitext(item.output_name)[1], at) for item, at in timed]
        again = {path: at for path, at in made.items() if os.path.isfile(path)}  # written again: what was read
        new[plan.name] = ({p: r for p, r in made.items() if p not in again}, later, again)  # from it is redone
    return found


def _rounds(name: str, pending: list, running, new: dict, folders: dict[str, str]) -> dict[int, list]:
    """The job's pending items per round: those running at once in the first; one waiting for a result (a file
    not made yet, or made again) in the round after the one making it; none for a folder to fill (its
    stand-ins) nor one waiting for a result nothing makes (it waits for the next run)."""
    if running is None:  # rounds not sorted out: every result its items make counts
        return {1: [item for item in pending if not stand_in(item.source, folders)]}
    now, rounds = {item.item_id for item in running[name]}, {}
    for item in pending:
        if item.item_id in now:
            rounds.setdefault(1, []).append(item)
        elif not stand_in(item.source, folders) and (maker := job_of(item.source.key, folders)) in new:
            paths, _, again = new[maker]
            made = paths.get(real_path(item.source.key), again.get(real_path(item.source.key)))
            if made is not None:
                rounds.setdefault(made + 1, []).append(item)
    return rounds


def limited(plans, rounds: dict[str, dict[int, list]], limit) -> dict[str, list]:
    """The items a run runs of each job: every round's, or with --limit the first N, round after round (jobs in
    their order within one), as `run` takes them; `rounds`: to_come's. A run stops after as many rounds as it
    has jobs (jobs reading each other's results stop there)."""
    runs: dict[str, list] = {plan.name: [] for plan in plans}
    for at in range(1, len(plans) + 1):
        for plan in plans:
            items = rounds[plan.name].get(at, [])
            items = items if limit is None else items[:limit]
            runs[plan.name] += items
            limit = None if limit is None else limit - len(items)
    return runs


def to_come_words(count: int | None, makers: list[str]) -> str:
    """What a job gets from results still to make, as `plan` and `run`'s summary say it."""
    whose = " and ".join(f"job {name}" for name in makers)
    return f"{'more' if count is None else count} to come from {whose}'s results still to make"


def _missing(source, folders: dict[str, str]) -> bool:
    """A local source not there that is no result of a job of the run either: its item fails, making nothing."""
    return not source.is_url and not os.path.exists(source.key) and job_of(source.key, folders) is None


def _taken(grid, folder: str, paths: dict[str, int], later: list[tuple[str, int]] | None) -> list[int] | None:
    """The rounds making the results to come of a job that a grid's folders and globs take, one per result
    (`paths`: those with a name, and `later`: the suffixes of those whose names are not known yet, None: not known
    how many; each with the round making it); None where a glob cannot tell."""
    from fnmatch import fnmatchcase
    from pathlib import PurePath

    from .source_folders import GLOB_CHARS

    taken, unnamed = set(), []
    for base, spec in grid.specs:
        if "://" in spec:
            continue
        pattern, base = os.path.normpath(os.path.expanduser(spec)), os.path.abspath(base)
        path = os.path.abspath(os.path.join(base, pattern))
        if real_path(path) == folder:  # the folder itself (`folder` is real: links resolved): every result
            taken |= set(paths)
            unnamed = None if later is None or unnamed is None else max(unnamed, [at for _, at in later], key=len)
            continue
        if not GLOB_CHARS & set(spec) or os.path.exists(path):
            continue  # one file, or a folder elsewhere
        if "**" in pattern:
            return None
        parts = PurePath(pattern).parts
        if os.path.isabs(pattern):  # matched from the root, as a relative one from its manifest's folder
            base, parts = os.sep, parts[1:]
        fixed = next(n for n, part in enumerate(parts) if GLOB_CHARS & set(part))  # the folders before the glob:
        base, parts = os.path.realpath(os.path.join(base, *parts[:fixed])), parts[fixed:]  # where they really are
        taken |= {path for path in paths if _matches(PurePath(os.path.relpath(path, base)).parts, parts)}
        inside = PurePath(os.path.relpath(os.path.join(folder, "x"), base)).parts  # a name in that job's folder
        if len(inside) != len(parts) or not all(map(fnmatchcase, inside[:-1], parts[:-1])) or later == []:
            continue
        literal = parts[-1][1:]  # the names not known yet: taken where the glob is `*` then their suffix's end
        if later is None or not parts[-1].startswith("*") or GLOB_CHARS & set(literal):
            return None
        if any(literal.endswith(suffix) and not suffix.endswith(literal) for suffix, _ in later):
            return None  # `*-b.png`: it depends on the names
        some = [at for suffix, at in later if suffix.endswith(literal)]
        unnamed = None if unnamed is None else max(unnamed, some, key=len)
    return None if unnamed is None else [paths[path] for path in sorted(taken)] + unnamed


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """A path (its parts) that a glob (its parts, none of them `**`) takes, as `glob` matches them on Linux."""
    from fnmatch import fnmatchcase

    return len(parts) == len(pattern) and all(map(fnmatchcase, parts, pattern))
