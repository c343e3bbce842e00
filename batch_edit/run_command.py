"""The `run` command: a Ray cluster where asked for (started once the run needs it), the jobs planned and run
(the jobs reading another job's results planned again once those are made), the summary and the exit status."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys

from .cli import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_STOPPED
from .planning import prepare
from .ray_run import WorkersLost
from .sources import FetchOptions
from .validation import escaped


def run(args, fetch: FetchOptions) -> int:
    """`batch-edit run`: the jobs planned (on a Ray cluster with --ray), run, summed up; returns the exit status."""
    from .engine import Engine
    from .run_summary import left_to_come, print_stops, print_summary, resume_hint
    from .runner import InProcess, RunOptions, drive
    from .signals import LoadInterrupted

    if not args.ray and (args.ray_address or args.workers):
        print(f"error: {'--ray-address' if args.ray_address else '--workers'} needs --ray", file=sys.stderr)
        return EXIT_REFUSED
    _raise_open_file_limit()
    options = RunOptions(fetch=fetch, overwrite=args.overwrite, limit=args.limit)
    try:
        with _cluster(args) as cluster:  # a local Ray instance stops with the run; a joined cluster stays
            read: dict = {}
            config, output_root, plans, _ = prepare(args, for_run=True, read=read, resolve=cluster and cluster.resolve)
            _note_moved_sources(plans, read, config)
            _note_names(plans, read, args.overwrite)
            _note_leftovers(plans, read, config, args.overwrite)
            execution = cluster.execution(config, fetch) if cluster else InProcess(Engine.load, Engine.check, fetch)
            result = drive(plans, config, output_root, execution, options, _replanner(args, config, cluster))
            again = functools.partial(_planned_again, args, config, cluster)
            coming = left_to_come(result, plans, output_root, args.overwrite, again)
    except LoadInterrupted as stopped:  # nothing generated yet, and the job folders this run made are gone
        name = signal.Signals(stopped.signum).name
        print(f"stopped by {name} while {stopped.during}; nothing was generated", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:  # outside the load and the batches (their own handlers): records are intact
        print(
            f"interrupted: every finished item is recorded; {resume_hint(args.overwrite, args.limit)}", file=sys.stderr
        )
        return 128 + signal.SIGINT
    except WorkersLost as exc:  # the run ended early: what finished is recorded, the rest runs next time
        if exc.result is not None:  # the summary of what came back, then the error
            print_summary(exc.result, None, args.overwrite, args.limit)
        print(f"error: {escaped(exc)}", file=sys.stderr)
        return EXIT_ITEMS_FAILED
    stopped_by = signal.Signals(result.interrupted_by).name if result.interrupted_by is not None else None
    print_summary(result, stopped_by, args.overwrite, args.limit, coming)
    if print_stops(result, stopped_by, args.overwrite, args.limit):  # exit 3 as anywhere else, even after a signal
        return EXIT_STOPPED
    if stopped_by is not None:
        return 128 + result.interrupted_by
    if result.refused:  # a job planned again once its producer's results were made: refused as a new run would
        return EXIT_REFUSED
    return EXIT_ITEMS_FAILED if result.failed else EXIT_OK


def _replanner(args, config, cluster):
    """The named jobs planned again, for the jobs reading results the run made: their sources listed again."""
    return lambda names: [plan for plan in _planned_again(args, config, cluster)[1] if plan.name in names]


def _planned_again(args, config, cluster, read: dict | None = None):
    """Every job planned again (output root, plans, specs): their sources listed again. A pipeline config changed
    meanwhile would give other ids: then nothing is planned again."""
    from .errors import ConfigError
    from .records import config_hash

    again, output_root, plans, jobs = prepare(
        args, for_run=True, read=read, resolve=cluster and cluster.resolve, warn=False, echo=False
    )
    if config_hash(again.identity()) != config_hash(config.identity()):
        raise ConfigError("the pipeline config changed during the run")
    return output_root, plans, jobs


def _note_moved_sources(plans, read: dict, config) -> None:
    """Before a run makes them again: items whose sources moved since their results were made."""
    from .records import config_hash
    from .source_identity import moved_sources_note

    for plan in plans:
        if note := moved_sources_note(plan.items, read[plan.name][1], config_hash(config.identity())):
            print(f"note: job {plan.name}: {escaped(note)}", file=sys.stderr)


def _note_names(plans, read: dict, overwrite: bool) -> None:
    """Before a run: results kept or made again under other names, results moved out to take their names, and
    a new job's items made before in another folder (a job renamed)."""
    from .name_notes import name_notes
    from .renamed_jobs import renamed_notes

    renamed = renamed_notes(plans, read)
    for plan in plans:
        output, records = read[plan.name]
        for note in name_notes(plan.items, output, records, overwrite) + (
            [renamed[plan.name]] if plan.name in renamed else []
        ):
            print(f"note: job {escaped(plan.name)}: {note}", file=sys.stderr)


def _note_leftovers(plans, read: dict, config, overwrite: bool) -> None:
    """Before a run: results the plan no longer has, a folder made with another pipeline config, results deleted by
    hand (as `prune` would judge them)."""
    from .leftover_notes import leftover_notes
    from .records import config_hash

    used = config_hash(config.identity())
    for plan in plans:
        output, records = read[plan.name]
        for note in leftover_notes(plan, output, records, used, overwrite):
            print(f"note: job {escaped(plan.name)}: {note}", file=sys.stderr)


def _cluster(args):
    if not args.ray:
        return contextlib.nullcontext()
    from .ray_run import RayCluster

    return RayCluster(args.ray_address, args.workers)


def _raise_open_file_limit() -> None:
    """A run holds each job folder's lock from start to end: thousands of jobs need more than the usual soft
    limit of 1024 open files. The hard limit is the user's to set; the soft one may rise to it."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # some systems cap it below an "unlimited" hard limit
            pass
