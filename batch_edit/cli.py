"""Command line: maps flags onto the stages and turns domain errors into messages and exit codes.

Exit status: 0 every item succeeded; 1 the run finished but some items failed, or its Ray workers were lost (what
finished is recorded); 2 a manifest, config or command line was refused, another run holds the output folder, or
the pipeline could not be loaded; 3 the run stopped early because its output folder could not be written, or could
not write a job's final CSVs or contact sheets (records so far are intact); 130/143 stopped by SIGINT/SIGTERM
(records intact; re-run to resume).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import BatchEditError, OutputError
from .pipeline_config import DEFAULT_TASK, TASKS
from .planning import job_names, prepare
from .run_summary import RUN_STOPPED
from .sources import FetchOptions
from .validation import escaped

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_REFUSED, EXIT_STOPPED = 0, 1, 2, 3


def entry() -> int:
    """The `batch-edit` program (console script and `python -m batch_edit`): main(), then a quick exit."""
    try:
        code = main()
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # asked to stop: a second Ctrl-C while the
            for signum in (signal.SIGINT, signal.SIGTERM):  # interpreter shuts down must not add a traceback
                signal.signal(signum, signal.SIG_IGN)
        sys.stdout.flush()  # here, not at exit, where a failure would print "Exception ignored"
    except BrokenPipeError:  # `batch-edit plan ... | head`: the reader left; say nothing more (Python's recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 1
    # Everything the run produced is written, fsynced and closed by now. Freezing the heap spares the interpreter's
    # final garbage collections over every torch/diffusers object: about 1 s of shutdown after a model was loaded
    # (benchmarks/results/cpu_throughput.md). Finalizers, atexit handlers and stream flushes still run as usual.
    # Not in main(): callers that stay alive (tests, notebooks) keep their collector.
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except OutputError as exc:
        print(f"error: {escaped(exc)}\n{RUN_STOPPED}", file=sys.stderr)
        return EXIT_STOPPED
    except BatchEditError as exc:
        print(f"error: {escaped(exc)}", file=sys.stderr)
        return EXIT_REFUSED


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record, so a caller that redirects stderr around
    main() (tests, notebooks) gets the log where it gets the rest of the output."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


class EscapingFormatter(logging.Formatter):
    """A record's text with control characters escaped: a path or an error may hold terminal escapes. In the
    formatter, not the handler, so the handler the progress bar puts in its place while it is drawn (tqdm's
    `logging_redirect_tqdm`, which takes the formatter over) escapes them too."""

    def format(self, record: logging.LogRecord) -> str:
        return escaped(super().format(record))


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)  # main() may run many times in one process
    handler = _StderrHandler()
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch-edit",
        description="Batch image editing with one resident FLUX.1 pipeline (img2img, inpaint, fill or kontext).",
    )
    parser.add_argument("--version", action="version", version=f"batch-edit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and library warnings")
    # -v after the command too (`batch-edit run -v ...`); SUPPRESS keeps a -v given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="the same as -v before the command"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, **kwargs: commands.add_parser(name, parents=[verbose], **kwargs)  # noqa: E731

    run = add("run", help="run every item of the manifests (finished items are skipped)")
    _add_plan_arguments(run)
    _add_limit(run)
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every item, replacing finished images (default: skip items already done, retry failed ones)",
    )
    _add_fetch_arguments(run)
    run.add_argument(  # not listed in the help: only there to say what does this
        "--dry-run", nargs=0, action=_RefuseDryRun, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    run.add_argument(
        "--ray",
        action="store_true",
        help="spread the run over Ray workers, one per GPU (CPUs for a CPU config), here or on a cluster (needs the ray extra)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with --ray: join this cluster ('auto', 'ray://head:10001'; default: $RAY_ADDRESS, else a local Ray started for the run)",
    )
    run.add_argument(
        "--workers",
        type=_count,
        metavar="N",
        help="with --ray: pipeline workers (default: one per GPU in the cluster, or per CPU for a CPU config)",
    )
    run.set_defaults(handler=_run)

    plan = add("plan", help="validate and expand the manifests without loading a model")
    _add_plan_arguments(plan)
    _add_limit(plan)
    plan.set_defaults(handler=_plan)

    again = add("reproduce", help="re-render one recorded item and compare it with its stored image")
    again.add_argument(
        "metadata",
        type=Path,
        metavar="METADATA_CSV|IMAGE",
        help="a job's metadata.csv (with --item), or a result image in its job folder (its embedded record names "
        "the item)",
    )
    again.add_argument("--item", metavar="ITEM_ID", help="the item_id of the row to re-render")
    again.add_argument(
        "--pipeline", type=_user_path, metavar="CONFIG", help="pipeline config (default: the one the run recorded)"
    )
    _add_fetch_arguments(again)  # a URL source or mask is fetched again, as the run fetched it
    again.set_defaults(handler=_reproduce)

    prune = add(
        "prune", help="move results the manifests no longer plan into <job>/.batch-edit/pruned/ and rebuild the CSVs"
    )
    _add_plan_arguments(prune)
    prune.add_argument("--dry-run", action="store_true", help="list what would move and change nothing")
    prune.add_argument(
        "--rejected",
        action="store_true",
        help="record planned items whose images were deleted as rejected: later runs skip them unless --overwrite",
    )
    prune.add_argument(
        "--config-changed",
        action="store_true",
        help="move out the results of a job all made with another pipeline config (refused without: a forgotten "
        "--pipeline would move every result)",
    )
    prune.set_defaults(handler=_prune)

    tiny = add("make-tiny-model", help="write a tiny random FLUX pipeline of a task for offline smoke tests")
    tiny.add_argument(
        "directory", type=Path, metavar="DIR", help="the folder to write it to (a config's model: names it)"
    )
    tiny.add_argument(
        "--task", choices=TASKS, default=DEFAULT_TASK, help=f"the pipeline task it runs (default: {DEFAULT_TASK})"
    )
    tiny.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    tiny.set_defaults(handler=_make_tiny_model)
    return parser


class _RefuseDryRun(argparse.Action):
    """`run --dry-run`: `plan` is the dry run; said at once, rather than argparse's "unrecognized arguments"."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            "run has no --dry-run: 'batch-edit plan' with the same manifests, --pipeline, --output-root and --limit "
            "shows what the run would do (its items, those already done, an estimate), loading no model and writing "
            "nothing"
        )


def _user_path(text: str) -> Path:
    """A path option's value with `~` expanded: the shell leaves `--output-root=~/x` as it is."""
    return Path(os.path.expanduser(text))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    if not math.isfinite(value):  # inf seconds or megabytes is no deadline or cap at all
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


MAX_DOWNLOAD_MB = 1024 * 1024  # 1 TiB: far past any image, and its byte count stays an exact int


def _megabytes(text: str) -> int:
    """A size in MB (decimals allowed), as bytes."""
    value = _positive(text)
    if value > MAX_DOWNLOAD_MB:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DOWNLOAD_MB}, got {text}")
    if int(value * 1024 * 1024) < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte (1/1048576), got {text}")
    return int(value * 1024 * 1024)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST", help="YAML or CSV manifest(s)")
    parser.add_argument(
        "--pipeline",
        type=_user_path,
        metavar="CONFIG",
        help="pipeline config YAML (default: the manifest's 'pipeline:', else FLUX.1-dev with the quanto recipe on CUDA)",
    )
    parser.add_argument(
        "--output-root",
        type=_user_path,
        metavar="DIR",
        help="where job folders go (default: the manifest's 'output_root:', else ./outputs)",
    )


def _add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """`run` and `reproduce`: how URL sources and masks are fetched (and local files capped)."""
    parser.add_argument(
        "--fetch-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="deadline for downloading one URL (default: 30)",
    )
    parser.add_argument(
        "--max-download-mb",
        type=_megabytes,
        dest="max_download_bytes",
        default=50 * 1024 * 1024,
        metavar="MB",
        help="largest URL download or local source file accepted (default: 50)",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let URLs reach loopback, private and link-local addresses (refused by default)",
    )


def _fetch_options(args) -> FetchOptions:
    return FetchOptions(
        timeout_s=args.fetch_timeout, max_bytes=args.max_download_bytes, allow_private=args.allow_private_urls
    )


def _add_limit(parser: argparse.ArgumentParser) -> None:
    """`run` and `plan` only: prune acts on the whole plan, so a limit would mean nothing there."""
    parser.add_argument(
        "--limit",
        type=_count,
        metavar="N",
        help="only the first N pending items, in manifest order across jobs (a sample before a long run)",
    )


def _plan(args) -> int:
    from .plan_report import report

    return report(args)


def _run(args) -> int:
    from .run_command import run

    return run(args, _fetch_options(args))


def _reproduce(args) -> int:
    from .engine import Engine
    from .reproduce import named_item, reproduce

    metadata, item = named_item(args.metadata, args.item)
    result = reproduce(metadata, item, args.pipeline, Engine.load, _fetch_options(args))
    # which image it started from, where the source as given could not stand in for the run's
    kept = f" (from the kept source copy {escaped(result.kept_source)})" if result.kept_source else ""
    item = f"item {result.item_id}{kept}"
    if result.identical:
        print(f"identical: {item} re-rendered pixel for pixel as {escaped(result.stored)}")
    elif not result.size_matches:
        print(f"different: {item} re-rendered at another size than {escaped(result.stored)}")
    else:
        print(
            f"different: {item} differs from {escaped(result.stored)} by up to {result.max_difference}/255 "
            f"in {result.differing_fraction:.1%} of pixels"
        )
    for note in ([result.kept_because] if result.kept_source else []) + list(result.notes):
        print(f"  {escaped(note)}")
    return EXIT_OK if result.identical else EXIT_ITEMS_FAILED


def _prune(args) -> int:
    from contextlib import ExitStack

    from .job_chains import job_folders, producers_first, without_moved_sources
    from .prune import PruneStopped, prune_job, refuse_other_configs
    from .signals import InterruptibleLoad, LoadInterrupted, StopOnSignal

    with ExitStack() as held_folders:  # every job folder's lock, held from before the plans are made to the end
        try:
            with InterruptibleLoad():  # a stop while planning: nothing has changed yet
                config, output_root, plans, read, held = _plan_held(args, held_folders)
        except PruneStopped as stopped:  # a job folder it cannot lock: before any job is pruned or listed
            print(stopped.explained(stopped.locking, not_reached=0), file=sys.stderr)
            return EXIT_STOPPED
        except LoadInterrupted as stopped:
            print(f"prune stopped by {signal.Signals(stopped.signum).name}: nothing changed", file=sys.stderr)
            return 128 + stopped.signum
        if not args.config_changed:
            refuse_other_configs(plans, read, config)
        folders = job_folders([plan.name for plan in plans], output_root)
        plans, moved = producers_first(plans, folders), {}  # a job's results moved out before those edited from them
        # A stop finishes the file move in progress (and its record), rewrites that job's CSVs, says what is left
        stop = held_folders.enter_context(StopOnSignal("finishing the file move in progress, then stopping"))
        for number, plan in enumerate(plans):
            if stop.signal is not None:
                return _prune_stopped(stop.signal, plan.name, len(plans) - number)
            try:
                plan = without_moved_sources(plan, folders, moved)
                held_here = plan.name in held  # its records read under its lock: pruned from what planning read
                result = prune_job(
                    plan, output_root, held_here, args.dry_run, args.rejected, read.get(plan.name),
                    stopped=lambda: stop.signal is not None,
                )  # fmt: skip
                moved[plan.name] = result.moved
            except PruneStopped as stopped:
                print(stopped.explained(plan.name, not_reached=len(plans) - number - 1), file=sys.stderr)
                return EXIT_STOPPED
            _print_pruned(plan.name, result, args.dry_run)
            if result.stopped:
                return _prune_stopped(stop.signal, plan.name, len(plans) - number - 1, result.left)
    return EXIT_OK


def _prune_stopped(signum: int, job: str, not_reached: int, left: int | None = None) -> int:
    """A stop between two file moves: what is done is recorded and listed in the CSVs; the rest is said."""
    if left is None:
        where = f"before job {escaped(job)}"
    else:
        where = f"in job {escaped(job)} ({left} file(s) there at most still to move; its metadata.csv lists what stays)"
    later = f"; {not_reached} job(s) not pruned" if not_reached else ""
    print(
        f"prune stopped by {signal.Signals(signum).name} {where}{later}: nothing was deleted; "
        "run the same prune again to finish",
        file=sys.stderr,
    )
    return 128 + signum


def _plan_held(args, held_folders) -> tuple:
    """The plans, made while every job folder there is locked (`held_folders` holds the locks): the jobs' names
    read from the manifests (nothing planned, no record read), their folders locked, then planned once, and again
    while the manifests name jobs not locked yet (edited meanwhile). A run that ended before the locks were taken
    is planned with (a job reading another's results plans what it made). Returns the config, the output root,
    the plans, each job's (JobOutput, records) as read, the jobs held."""
    from .prune import hold_job_folders

    locked: set[tuple[Path, str]] = set()  # (output root, job): each folder tried, and those held
    held: set[tuple[Path, str]] = set()
    output_root, jobs = job_names(args)
    echo = True  # what a manifest merges is said once
    while True:
        root = Path(output_root)
        held.update((root, job) for job in hold_job_folders(jobs, output_root, held_folders, args.dry_run))
        locked.update((root, job) for job in jobs)
        read: dict = {}  # the same ids as `run`
        config, output_root, plans, _ = prepare(args, for_run=True, read=read, warn=False, echo=echo)
        echo = False
        root = Path(output_root)
        jobs = [plan.name for plan in plans if (root, plan.name) not in locked]
        if not jobs:
            return config, output_root, plans, read, {job for held_root, job in held if held_root == root}


def _print_pruned(job: str, result, dry_run: bool) -> None:
    verb = "would move" if dry_run else "moved"
    deleted = f", {result.deleted} deleted (the next run makes them again; --rejected marks them unwanted)"
    pruned = "would be pruned" if dry_run else "pruned"
    replaced = f", {len(result.replaced)} {pruned} without moving (their files hold planned results now)"
    print(
        f"job {job}: {verb} {len(result.moved)}, {'would reject' if dry_run else 'rejected'} "
        f"{len(result.rejected)}, kept {result.kept}{deleted if result.deleted else ''}"
        f"{replaced if result.replaced else ''} -> {escaped(result.folder)}"
    )
    for line in result.listing:  # under their job's line, as `plan` lists a job's details
        print(f"  {escaped(line)}")


def _make_tiny_model(args) -> int:
    from .tiny_model import write_tiny_model

    if args.directory.exists() and (not args.directory.is_dir() or any(args.directory.iterdir())) and not args.force:
        kind = "folder is not empty" if args.directory.is_dir() else "path is a file"
        print(f"error: {args.directory}: the {kind}; pass --force to write the tiny model there", file=sys.stderr)
        return EXIT_REFUSED
    directory = write_tiny_model(args.directory, verbose=args.verbose, task=args.task)
    print(f"wrote a tiny random FLUX {args.task} pipeline to {directory}")
    return EXIT_OK
