"""`batch-edit plan`: what a run would do, without a model: each job's items, what is done, missing sources and
masks, the swept axes and an estimate from earlier runs here."""

from __future__ import annotations

import json
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
    running, _, waiting_on = split_waiting(pending, job_folders([plan.name for plan in plans], output_root))
    warnings = [*plan_warnings(config, jobs), *planned_long_prompts(config, plans), *waiting_warnings(waiting_on)]
    for warning in warnings:
        print(f"warning: {escaped(warning)}", file=sys.stderr)
    missing_total, unmasked_total, pending_total, waiting_total = 0, 0, 0, 0
    limit_left = args.limit  # --limit runs the first N pending items across jobs: the estimates are of those
    for plan, job in zip(plans, jobs):
        output, records = read[plan.name]
        done, rejected = skipped[plan.name]
        # neither done, rejected nor waiting: what a run runs
        waiting = {item.item_id for item in pending[plan.name]} - {item.item_id for item in running[plan.name]}
        pending_total += len(running[plan.name])
        waiting_total += len(waiting)
        extra = f", {plan.duplicates} duplicate(s) merged" if plan.duplicates else ""
        extra += f", {len(rejected)} rejected (skipped; --overwrite remakes them)" if rejected else ""
        extra += f", {output.invalid_lines} invalid record line(s) ignored" if output.invalid_lines else ""
        print(
            f"job {plan.name}: {len(plan.items)} item(s), {len(done)} already done{extra} -> {escaped(output.folder)}"
        )
        if note := moved_sources_note(plan.items, records, config_hash(config.identity())):
            print(f"  note: {escaped(note)}")
        missing, sources = missing_sources(job)
        unmade = waiting_on[plan.name]  # explained in a warning above
        for path, other in unmade.items():
            print(f"  waiting for job {other}'s results: {escaped(path)} holds none yet")
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
        limit_left = _print_estimate(config.task, timed, plan.items, done | rejected | waiting, args.limit, limit_left)
    print(f"total: {sum(len(plan.items) for plan in plans)} item(s) in {len(plans)} job(s)")
    if args.limit is not None:
        chained = " (and, within the limit, what readers of results made in the run add)" if waiting_total else ""
        print(f"--limit {args.limit}: {min(args.limit, pending_total)} of {pending_total} pending item(s) would run"
              f"{chained}")  # fmt: skip
    if unmasked_total:
        print(f"error: {unmasked_total} source(s) without a mask (listed above)", file=sys.stderr)
    if missing_total:
        print(f"error: {missing_total} source file(s) not found (listed above)", file=sys.stderr)
    if missing_total or unmasked_total:
        return EXIT_ITEMS_FAILED
    return EXIT_OK


def _shown(paths: list[str]) -> str:
    return ", ".join(map(escaped, paths[:5])) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _pending(items, skipped: set[str]) -> list:
    return [item for item in items if item.item_id not in skipped]


def _print_estimate(task: str, timed: list[dict], items, skipped: set[str], limit, limit_left) -> int | None:
    """The job's estimate: of its pending items, or with --limit of those the limit left to this job would run
    (the first ones, in manifest order); returns what the limit leaves to the next jobs."""
    from .estimate import estimate
    from .progress import format_duration

    pending = [item for item in items if item.item_id not in skipped]  # as pending_items leaves them
    if not pending:
        return limit_left
    sample = ""
    if limit_left is not None:
        running = pending[:limit_left]
        if not running:
            print(f"  estimate: none of its {len(pending)} pending item(s) would run with --limit {limit}")
            return 0
        sample = f"; the first {len(running)} of {len(pending)} pending, which --limit {limit} would run"
        pending, limit_left = running, limit_left - len(running)
    found = estimate(task, timed, pending)
    if found is None:
        print("  estimate: none yet (no earlier run with this pipeline config in this folder)")
        return limit_left
    print(f"  estimate: {format_duration(found.seconds)} for {found.describe(len(pending))}{sample}")
    if caution := found.caution():
        print(f"  caution: {caution}")
    return limit_left


def _listed(texts: list[str], count: int) -> str:
    """The first values, and how many there are in all where not all are shown."""
    return ", ".join(texts) + (f", ... ({count} in all)" if count > len(texts) else "")
