"""`batch-edit plan`: what a run would do, without a model: each job's items (and those the results a job of the
run has still to make will add to the jobs reading them), what is done, missing sources and masks, the swept axes
and an estimate from earlier runs here."""

from __future__ import annotations

import json
import os
import sys

from .cli import EXIT_ITEMS_FAILED, EXIT_OK
from .pipeline_config import DEFAULT_TASK
from .plan import grid_axes
from .planning import prepare
from .validation import escaped, printable


def report(args) -> int:
    from .job_chains import job_folders, split_waiting, waiting_warnings
    from .plan_checks import gone_masks, missing_sources, plan_warnings, resolved_folders, sources_without_mask
    from .prompt_tokens import planned_long_prompts
    from .records import config_hash
    from .source_identity import moved_sources_note

    read: dict = {}
    config, output_root, plans, jobs = prepare(args, for_run=False, read=read)
    folders = job_folders([plan.name for plan in plans], output_root)
    task = f", task {config.task}" if config.task != DEFAULT_TASK else ""
    settings = f"{config.quantization.describe()}, {config.dtype}, {config.device}{task}"
    print(f"pipeline: {escaped(config.model)} ({settings})")
    for manifest, folder in resolved_folders(args.manifests):
        print(f"manifest {escaped(manifest)}: relative paths resolve against {escaped(folder)}")
    skipped = {}  # per job: the items done or rejected, as pending_items leaves them
    for plan in plans:
        output, records = read[plan.name]
        done = output.finished_ids(plan.items, records)
        skipped[plan.name] = (done, output.rejected_ids(plan.items, records, done))
    pending = {plan.name: _pending(plan.items, set().union(*skipped[plan.name])) for plan in plans}
    running, _, waiting_on = split_waiting(pending, folders)
    coming = _to_come(plans, jobs, pending, folders)
    warnings = [*plan_warnings(config, jobs), *planned_long_prompts(config, plans), *waiting_warnings(waiting_on)]
    for warning in warnings:
        print(f"warning: {escaped(warning)}", file=sys.stderr)
    # what a run runs: first what it can now, then (once made) what reads results made in it; --limit runs the
    # first N of those in that order across jobs, so the estimates are of the items it leaves each job
    first = {plan.name: running[plan.name] for plan in plans}
    later = {
        plan.name: _waiting(pending[plan.name], running[plan.name], folders) + coming[plan.name][1] for plan in plans
    }
    runs = _limited(plans, first, _later_from(plans, pending, running, coming, folders), args.limit, folders)
    missing_total, unmasked_total = 0, 0
    for plan, job in zip(plans, jobs):
        output, records = read[plan.name]
        done, rejected = skipped[plan.name]
        waiting = _waiting(pending[plan.name], running[plan.name], folders)
        extra = f", {plan.duplicates} duplicate(s) merged" if plan.duplicates else ""
        extra += f", {len(rejected)} rejected (skipped; --overwrite remakes them)" if rejected else ""
        extra += f", {output.invalid_lines} invalid record line(s) ignored" if output.invalid_lines else ""
        remade = coming[plan.name][3]  # done from results made again: counted as to come
        known = sum(_known(item, folders, remade) for item in plan.items)  # nor those for a folder to fill
        done_now = len(done - remade)
        print(f"job {plan.name}: {known} item(s){_more(coming[plan.name])}, {done_now} already done{extra} -> "
              f"{escaped(output.folder)}")  # fmt: skip
        if note := moved_sources_note(plan.items, records, config_hash(config.identity())):
            print(f"  note: {escaped(note)}")
        missing, sources = missing_sources(job)
        unmade = waiting_on[plan.name]  # explained in a warning above
        for path, other in unmade.items():
            print(f"  waiting for job {other}'s results: {escaped(path)} {_unmade_state(path, folders)}")
        if waiting:
            print(f"  waiting: {len(waiting)} item(s) for results made in the run: run once those are made, with "
                  "what the job reads from them then")  # fmt: skip
        needed = {item.source.key for item in pending[plan.name]}  # a run loads only the sources of these
        gone = [path for path in missing if path not in unmade and path not in needed]
        missing = [path for path in missing if path not in unmade and path in needed]
        if missing:
            missing_total += len(missing)
            print(f"  missing: {len(missing)} of {sources} source file(s): {_shown(missing)}")
        if gone:  # archived once done: nothing to load, and their results stay
            print(f"  gone: {len(gone)} source file(s) of items already done (their results stay): {_shown(gone)}")
        masked = {(item.source.key, item.mask.key) for item in pending[plan.name] if item.mask is not None}
        if unmasked := sources_without_mask(job, masked):
            unmasked_total += len(unmasked)
            more = f" and {len(unmasked) - 5} more" if len(unmasked) > 5 else ""
            shown = ", ".join(map(escaped, unmasked[:5])) + more
            print(f"  without a mask: {len(unmasked)} source(s): {shown}")
        if gone := gone_masks(job, masked):  # as sources: archived once done, and their results stay
            print(f"  gone: {len(gone)} mask file(s) of items already done (their results stay): {_shown(gone)}")
        for axis, values in grid_axes(job).items():
            texts = [  # an empty seed cell of a CSV row: the item's seed is derived
                printable(json.dumps(v, ensure_ascii=False) if axis == "prompts" else "derived" if v is None else v)
                for v in values[:8]
            ]
            print(f"  {axis}: {_listed(texts, len(values))}")
        variations = list(dict.fromkeys(grid.variations for grid in job.grids))
        if max(variations, default=1) > 1:  # not an axis, but it multiplies the items as one does
            print(f"  variations: {_listed([str(n) for n in variations[:8]], len(variations))} per grid point")
        timed = output.timed_records(config.recorded_fields(), records)
        unknown = coming[plan.name][0] is None
        _print_estimate(config.task, timed, first[plan.name] + later[plan.name], runs[plan.name], args.limit, unknown)
    known = sum(_known(item, folders, coming[plan.name][3]) for plan in plans for item in plan.items)
    counts = [count for count, *_ in coming.values()]
    added = sum(count or 0 for count in counts)
    more = f", {added} of them to come from results made in the run" if added else ""
    more += (", and more" if added else ", and more to come from results made in the run") if None in counts else ""
    print(f"total: {known + added} item(s) in {len(plans)} job(s){more}")
    if args.limit is not None:
        pending_total = sum(len(first[plan.name]) + len(later[plan.name]) for plan in plans)
        would_run = sum(map(len, runs.values()))
        more = f" ({added} of them to come from results made in the run)" if added else ""
        more += " (and, within the limit, more that readers of results made in the run add)" if None in counts else ""
        print(f"--limit {args.limit}: {would_run} of {pending_total} pending item(s) would run{more}")
    if unmasked_total:
        print(f"error: {unmasked_total} source(s) without a mask (listed above)", file=sys.stderr)
    if missing_total:
        print(f"error: {missing_total} source file(s) not found (listed above)", file=sys.stderr)
    if missing_total or unmasked_total:
        return EXIT_ITEMS_FAILED
    return EXIT_OK


def _unmade_state(path: str, folders: dict[str, str]) -> str:
    """What a source waiting for a job of the run is now: a folder with no results, a result not made yet, or one
    that job makes again (edited since, or remade)."""
    from .job_chains import folder_of_job

    if os.path.isdir(path) or folder_of_job(path, folders) is not None:
        return "holds none yet"
    return "is made again first" if os.path.lexists(path) else "is not made yet"


def _shown(paths: list[str]) -> str:
    return ", ".join(map(escaped, paths[:5])) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _pending(items, skipped: set[str]) -> list:
    return [item for item in items if item.item_id not in skipped]


def _print_estimate(task: str, timed: list[dict], pending: list, running: list, limit, unknown: bool) -> None:
    """The job's estimate: of its pending items (`running`: with --limit, those the limit leaves to this job)."""
    from .estimate import estimate
    from .progress import format_duration

    if not pending:
        return
    sample = "; not counting the items to come from results made in the run" if unknown else ""
    if limit is not None:
        if not running:
            print(f"  estimate: none of its {len(pending)} pending item(s) would run with --limit {limit}")
            return
        sample = f"; the first {len(running)} of {len(pending)} pending, which --limit {limit} would run{sample}"
    found = estimate(task, timed, running)
    if found is None:
        print("  estimate: none yet (no earlier run with this pipeline config in this folder)")
        return
    print(f"  estimate: {format_duration(found.seconds)} for {found.describe(len(running))}{sample}")
    if caution := found.caution():
        print(f"  caution: {caution}")


def _waiting(pending: list, running: list, folders: dict[str, str]) -> list:
    """The pending items that wait for results made in the run, but the stand-ins for a folder to fill (what
    that folder will hold gives its own items: `_to_come`)."""
    now = {item.item_id for item in running}
    return [item for item in pending if item.item_id not in now and not _stand_in(item.source, folders)]


def _known(item, folders: dict[str, str], remade: set[str]) -> bool:
    """An item counted as one now: no stand-in for a folder to fill, nor done from a result made again."""
    return not _stand_in(item.source, folders) and item.item_id not in remade


def _stand_in(source, folders: dict[str, str]) -> bool:
    """A source standing for a job's folder listed while it held no results (or did not exist): no image, but
    the results that job will make there."""
    from .job_chains import folder_of_job

    return source.job_folder or (not source.is_url and folder_of_job(source.key, folders) is not None)


def _later_from(plans, pending: dict, running: dict, coming: dict, folders: dict[str, str]) -> dict[str, dict]:
    """Per job: its items run once results made in the run are there, per job making those (the waiting items:
    the job whose result their source is; those to come: the job making the results they are from)."""
    from .job_chains import job_of

    found: dict[str, dict[str, list]] = {}
    for plan in plans:
        found[plan.name] = {maker: list(items) for maker, items in coming[plan.name][4].items()}
        for item in _waiting(pending[plan.name], running[plan.name], folders):
            found[plan.name].setdefault(job_of(item.source.key, folders) or "", []).append(item)
    return found


def _limited(plans, first: dict[str, list], later: dict[str, dict], limit, folders: dict[str, str]) -> dict:
    """The items a run runs of each job: every round's, or with --limit the first N, in the run's rounds: what
    can run now (jobs in their order), then round after round the jobs reading results of the jobs that ran in
    the round before, with what the jobs that ran so far make for them (a chain of n jobs settles in n rounds)."""
    from .job_chains import readers

    runs: dict[str, list] = {plan.name: [] for plan in plans}
    found, ran = first, set()
    for _ in plans:
        active = set()
        for plan in plans:
            items = found.get(plan.name, [])
            items = items if limit is None else items[:limit]
            runs[plan.name] += items
            limit = None if limit is None else limit - len(items)
            active |= {plan.name} if items else set()
        ran |= active
        found = {}
        for name in readers(plans, folders, active):
            ready = [maker for maker in later[name] if maker in ran]
            found[name] = [item for maker in ready for item in later[name].pop(maker)]
    return runs


def _more(coming: tuple) -> str:
    count, _, makers, *_ = coming
    if not makers:
        return ""
    whose = " and ".join(f"job {name}" for name in makers)
    return f" and {'more' if count is None else count} to come from {whose}'s results still to make"


def _to_come(plans, jobs, pending: dict[str, list], folders: dict[str, str]) -> dict[str, tuple]:
    """Per job: what the results a job of the run has still to make add to it once made, as (how many items,
    None where its sources' globs cannot tell; stand-ins for the estimate: the items one of its sources gives, once
    per result it takes; the jobs making them). A result is a new source of each folder or glob taking it; files
    named one by one are items already (waiting)."""
    from .job_chains import producers_first, read_jobs, real_path

    found = {plan.name: (0, [], [], set(), {}) for plan in plans}
    if not any(read_jobs(plan, folders) for plan in plans):  # no chain: nothing to come
        return found
    named, specs = {name: folder for folder, name in folders.items()}, {job.name: job for job in jobs}
    new: dict[str, tuple] = {}  # per job: its results that are no file yet, the suffixes of those to come, and
    for plan in producers_first(plans, folders):  # the files its pending items write again
        count, standins, makers, remade, by_maker = 0, [], [], set(), {}
        for maker in sorted(read_jobs(plan, folders) & set(new)):  # a job read before it is planned adds nothing
            paths, later, again = new[maker]
            waiting = {item.item_id for item in pending[plan.name]}  # counted as its items already
            redone = [
                item
                for item in plan.items
                if item.item_id not in waiting and not item.source.is_url and real_path(item.source.key) in again
            ]  # done from a file made again: made again from its new content, as an item to come
            if redone:
                makers += [] if maker in makers else [maker]
                remade |= {item.item_id for item in redone}
                by_maker[maker] = by_maker.get(maker, []) + redone
                count, standins = None if count is None else count + len(redone), standins + redone
            for grid in specs[plan.name].grids:
                listed = {real_path(ref.key) for ref in grid.sources if not ref.is_url}  # items already
                taken = _taken(grid, named[maker], paths - listed, later)
                if taken == 0:
                    continue
                makers += [] if maker in makers else [maker]
                if taken is None or count is None:
                    count = None
                    continue
                source = grid.sources[0].key
                per_source = [item for item in plan.items if item.source.key == source]
                count, standins = count + taken * len(per_source), standins + per_source * taken
                by_maker[maker] = by_maker.get(maker, []) + per_source * taken
        found[plan.name] = (count, standins, makers, remade, by_maker)
        folder = named[plan.name]
        made = {  # not from a stand-in, nor from a source known to be missing: those make no result
            os.path.join(folder, item.output_name)
            for item in pending[plan.name]
            if not _stand_in(item.source, folders) and not _missing(item.source, folders)
        }
        later = None if count is None else [os.path.splitext(item.output_name)[1] for item in standins]
        again = {path for path in made if os.path.isfile(path)}  # written again: what was read from it is redone
        new[plan.name] = (made - again, later, again)
    return found


def _missing(source, folders: dict[str, str]) -> bool:
    """A local source not there that is no result of a job of the run either: its item fails, making nothing."""
    from .job_chains import job_of

    return not source.is_url and not os.path.exists(source.key) and job_of(source.key, folders) is None


def _taken(grid, folder: str, paths: set[str], later: list[str] | None) -> int | None:
    """How many of a job's results to come (`paths`, and `later`: the suffixes of those whose names are not known
    yet, None: not known how many) a grid's folders and globs take; None where a glob cannot tell."""
    from fnmatch import fnmatchcase
    from pathlib import PurePath

    from .job_chains import real_path
    from .source_folders import GLOB_CHARS

    taken, unnamed = set(), 0
    for base, spec in grid.specs:
        if "://" in spec:
            continue
        pattern, base = os.path.normpath(os.path.expanduser(spec)), os.path.abspath(base)
        path = os.path.abspath(os.path.join(base, pattern))
        if real_path(path) == folder:  # the folder itself (`folder` is real: links resolved): every result
            taken |= paths
            unnamed = None if later is None or unnamed is None else max(unnamed, len(later))
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
        if any(literal.endswith(suffix) and not suffix.endswith(literal) for suffix in later):
            return None  # `*-b.png`: it depends on the names
        some = sum(suffix.endswith(literal) for suffix in later)
        unnamed = None if unnamed is None else max(unnamed, some)
    return None if unnamed is None else len(taken) + unnamed


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """A path (its parts) that a glob (its parts, none of them `**`) takes, as `glob` matches them on Linux."""
    from fnmatch import fnmatchcase

    return len(parts) == len(pattern) and all(map(fnmatchcase, parts, pattern))


def _listed(texts: list[str], count: int) -> str:
    """The first values, and how many there are in all where not all are shown."""
    return ", ".join(texts) + (f", ... ({count} in all)" if count > len(texts) else "")
