"""`batch-edit plan`: what a run would do, without a model: each job's items (and those the results a job of the
run has still to make will add to the jobs reading them), what is done, missing sources and masks, the swept axes
and an estimate from earlier runs here."""

from __future__ import annotations

import json
import os
import sys

from .chain_counts import stand_in, to_come_words
from .cli import EXIT_ITEMS_FAILED, EXIT_OK
from .leftover_notes import leftover_notes
from .pipeline_config import DEFAULT_TASK
from .plan import grid_axes
from .planning import prepare
from .validation import escaped, printable


def report(args) -> int:
    from .chain_counts import limited, to_come
    from .finish_pass import copies_lacking
    from .job_chains import job_folders, split_waiting, waiting_warnings
    from .name_notes import name_notes
    from .plan_checks import (
        gone_masks,
        jpeg_metadata_warnings,
        missing_sources,
        plan_warnings,
        resolved_folders,
        sources_without_mask,
    )
    from .prompt_tokens import planned_long_prompts
    from .records import config_hash
    from .renamed_jobs import renamed_notes
    from .sibling_folders import Siblings
    from .source_identity import moved_sources_note

    read: dict = {}
    config, output_root, plans, jobs = prepare(args, for_run=False, read=read)
    folders = job_folders([plan.name for plan in plans], output_root)
    task = f", task {config.task}" if config.task != DEFAULT_TASK else ""
    settings = f"{config.quantization.describe()}, {config.dtype}, {config.device}{task}"
    print(f"pipeline: {escaped(config.model)} ({settings})")
    for manifest, folder in resolved_folders(args.manifests):
        print(f"manifest {escaped(manifest)}: relative paths resolve against {escaped(folder)}")
    used = config_hash(config.identity())  # the config the records of this run's results will name
    skipped, finished = {}, {}  # per job: the items done or rejected, as pending_items leaves them; done's records
    for plan in plans:
        output, records = read[plan.name]
        finished[plan.name] = output.finished_records(plan.items, records)  # (the leftover notes take them too)
        done = set(finished[plan.name])
        skipped[plan.name] = (done, output.rejected_ids(plan.items, records, done))
    pending = {plan.name: _pending(plan.items, set().union(*skipped[plan.name])) for plan in plans}
    running, _, waiting_on = split_waiting(pending, folders)
    coming = to_come(plans, jobs, pending, folders, running)
    warnings = [*plan_warnings(config, jobs), *planned_long_prompts(config, plans), *waiting_warnings(waiting_on)]
    warnings += jpeg_metadata_warnings(config, plans, pending, folders)
    for warning in warnings:
        print(f"warning: {escaped(warning)}", file=sys.stderr)
    # what a run runs: first what it can now, then (once made) what reads results made in it; --limit runs the
    # first N of those in that order across jobs, so the estimates are of the items it leaves each job
    first = {plan.name: running[plan.name] for plan in plans}
    later = {
        plan.name: _waiting(pending[plan.name], running[plan.name], folders) + coming[plan.name][1] for plan in plans
    }
    runs = limited(plans, {plan.name: coming[plan.name][4] for plan in plans}, args.limit)
    missing_total, unreadable_total, unmasked_total, known_total = 0, 0, 0, 0
    siblings = Siblings({read[plan.name][0].folder for plan in plans})
    renamed = renamed_notes(plans, read, siblings)
    identity = config.recorded_fields()
    for plan, job in zip(plans, jobs):
        output, records = read[plan.name]
        done, rejected = skipped[plan.name]
        waiting = _waiting(pending[plan.name], running[plan.name], folders)
        extra = f", {plan.duplicates} duplicate(s) merged" if plan.duplicates else ""
        extra += f", {len(rejected)} rejected (skipped; --overwrite remakes them)" if rejected else ""
        extra += f", {output.invalid_lines} invalid record line(s) ignored" if output.invalid_lines else ""
        remade = coming[plan.name][3]  # done from results made again: counted as to come
        known = _known_count(plan.items, folders, remade)  # nor those for a folder to fill
        known_total += known
        done_now = len(done - remade)
        print(f"job {plan.name}: {known} item(s){_more(coming[plan.name])}, {done_now} already done{extra} -> "
              f"{escaped(output.folder)}")  # fmt: skip
        if note := moved_sources_note(plan.items, records, config_hash(config.identity())):
            print(f"  note: {escaped(note)}")
        for note in name_notes(plan.items, output, records) + ([renamed[plan.name]] if plan.name in renamed else []):
            print(f"  note: {note}")
        for note in leftover_notes(plan, output, records, used, finished=finished[plan.name]):
            print(f"  note: {note}")
        if plan.keep_sources and done and (lacking := copies_lacking(output, plan.items, finished[plan.name])):
            print(f"  note: {lacking} finished item(s) lack their kept source copies (keep_sources): a run writes "
                  "them from their sources, making no image again")  # fmt: skip
        missing, sources = missing_sources(job)
        unmade = waiting_on[plan.name]  # explained in a warning above
        for path, other in unmade.items():
            print(f"  waiting for job {other}'s results: {escaped(path)} {_unmade_state(path, folders)}")
        if waiting:
            print(f"  waiting: {len(waiting)} item(s) for results made in the run: run once those are made, with "
                  "what the job reads from them then")  # fmt: skip
        needed = {item.source.key for item in pending[plan.name]}  # a run loads only the sources of these
        gone = [path for path, why in missing.items() if path not in unmade and path not in needed]
        missing = {path: why for path, why in missing.items() if path not in unmade and path in needed}
        if absent := [path for path, why in missing.items() if why == "not found"]:
            missing_total += len(absent)
            print(f"  missing: {len(absent)} of {sources} source file(s): {_shown(absent)}")
        if unreadable := {path: why for path, why in missing.items() if why != "not found"}:
            unreadable_total += len(unreadable)
            shown = _shown([f"{path} ({why})" for path, why in unreadable.items()])
            print(f"  cannot be read: {len(unreadable)} of {sources} source file(s): {shown}")
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
        if left_out := sum(grid.masks_left_out for grid in job.grids):
            print(f"  note: {left_out} file(s) taken as masks left out of the sources")
        if excluded := sum(grid.excluded for grid in job.grids):
            print(f"  excluded: {excluded} image(s) of its folders and globs (exclude)")
        for axis, values in grid_axes(job).items():
            texts = [  # an empty seed cell of a CSV row: the item's seed is derived
                printable(json.dumps(v, ensure_ascii=False) if axis == "prompts" else "derived" if v is None else v)
                for v in values[:8]
            ]
            print(f"  {axis}: {_listed(texts, len(values))}")
        variations = list(dict.fromkeys(grid.variations for grid in job.grids))
        if max(variations, default=1) > 1:  # not an axis, but it multiplies the items as one does
            print(f"  variations: {_listed([str(n) for n in variations[:8]], len(variations))} per grid point")
        timed, where = output.timed_records(identity, records), "here"
        if not timed and runs[plan.name]:  # none of its own: those of the run's other jobs, else of folders beside
            timed, where = _borrowed_timings(plan, plans, read, siblings, identity)
        unknown = coming[plan.name][0] is None
        pending_here = first[plan.name] + later[plan.name]
        _print_estimate(config.task, timed, pending_here, runs[plan.name], args.limit, unknown, where)
    counts = [count for count, *_ in coming.values()]
    added = sum(count or 0 for count in counts)
    more = f", {added} of them to come from results made in the run" if added else ""
    more += (", and more" if added else ", and more to come from results made in the run") if None in counts else ""
    print(f"total: {known_total + added} item(s) in {len(plans)} job(s){more}")
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
    if unreadable_total:
        print(f"error: {unreadable_total} source file(s) cannot be read (listed above)", file=sys.stderr)
    if missing_total or unreadable_total or unmasked_total:
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


def _borrowed_timings(plan, plans, read: dict, siblings, identity: dict) -> tuple[list[dict], str]:
    """For a job with no timed result of its own: the timed results (with this pipeline config) of the run's other
    jobs, else of the job folders beside its own; and where they are, as the estimate says it."""
    output = read[plan.name][0]
    timed, names = [], []
    for other in plans:
        if other.name != plan.name and (found := output.timed_records(identity, read[other.name][1])):
            timed += found
            names.append(other.name)
    if timed:
        return timed, f"of job(s) {_names(names)} of this run"
    for folder, records in siblings.records(output.folder.parent):
        if found := output.timed_records(identity, records):
            timed += found
            names.append(folder.name)
    return timed, f"of job folder(s) {_names(names)} beside this one"


def _names(names: list[str]) -> str:
    return ", ".join(escaped(name) for name in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _print_estimate(
    task: str, timed: list[dict], pending: list, running: list, limit, unknown: bool, where: str = "here"
) -> None:
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
        print("  estimate: none yet (no earlier run with this pipeline config in this folder or beside it)")
        return
    print(f"  estimate: {format_duration(found.seconds)} for {found.describe(len(running), where)}{sample}")
    if caution := found.caution():
        print(f"  caution: {caution}")


def _waiting(pending: list, running: list, folders: dict[str, str]) -> list:
    """The pending items that wait for results made in the run, but the stand-ins for a folder to fill (what
    that folder will hold gives its own items: `to_come`)."""
    now = {item.item_id for item in running}
    return [item for item in pending if item.item_id not in now and not stand_in(item.source, folders)]


def _known_count(items, folders: dict[str, str], remade: set[str]) -> int:
    """The items counted as ones now: no stand-in for a folder to fill, nor done from a result made again. Each
    source is asked about once (the items of one source share its ref)."""
    standing: dict[int, bool] = {}
    count = 0
    for item in items:
        source = item.source
        stands = standing.get(id(source))
        if stands is None:
            stands = standing[id(source)] = bool(stand_in(source, folders))
        count += not stands and item.item_id not in remade
    return count


def _more(coming: tuple) -> str:
    count, _, makers, *_ = coming
    return f" and {to_come_words(count, makers)}" if makers else ""


def _listed(texts: list[str], count: int) -> str:
    """The first values, and how many there are in all where not all are shown."""
    return ", ".join(texts) + (f", ... ({count} in all)" if count > len(texts) else "")
