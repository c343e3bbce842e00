"""Manifests (YAML grids or CSV rows) in, validated and frozen job specs out.

Everything a run could trip over in the manifest is found here, before any model loads, and reported
together: file, job, field, and what is allowed. YAML grids are read here, CSV rows in `csv_manifest`; the
checks both share live in `grid_checks`.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .csv_manifest import load_csv
from .errors import ManifestError
from .file_names import template_problems
from .grid_checks import (
    check_grid,
    check_job_name,
    inherited_defaults,
    output_options,
    param,
    without_listed_options,
    without_random_seed,
    without_untaken,
)
from .manifest_models import Grid, JobDefaults, JobModel, JobSpec, Manifest, ManifestModel
from .masks import pair_masks, task_problems, without_masks_as_sources
from .parameters import DEFAULT_TASK, MAX_ITEMS_PER_RUN, PARAMETERS, axes, axis_names
from .plan import name_problems
from .source_folders import Exclusions
from .sources import SourceRef, SourceSpecError, expand_source
from .validation import describe_errors, describe_validation_error, printable, read_yaml_file, shown_path

DEFAULT_OUTPUT_ROOT = Path("outputs")


def load_manifests(paths: list[Path], output_root: Path | None = None, task: str = DEFAULT_TASK) -> list[Manifest]:
    """Load every manifest, collecting all problems; job names must be unique across the run, and the run
    at most MAX_ITEMS_PER_RUN items. `output_root` (the command line's) is kept out of folder and glob sources.
    `task` (the pipeline config's) gives the parameters' defaults and refuses those it does not take, and masks
    where it takes none (or none where it needs them)."""
    manifests, problems, valid = [], [], []
    for path in paths:
        try:
            manifests.append(load_manifest(path, output_root, task, valid))
        except ManifestError as exc:
            problems.extend(exc.problems)
    # what the task makes of a job's masks needs only that job's fields: reported with the others' errors
    problems.extend(task_problems(valid, task))
    seen: dict[str, str] = {}
    for manifest in manifests:
        for job in manifest.jobs:
            if job.name in seen:
                problems.append(
                    f"{job.origin}: job name '{printable(job.name)}' is used twice (also in {seen[job.name]})"
                )
            seen.setdefault(job.name, job.origin)
    if problems and sum(map(job_size, valid)) <= MAX_ITEMS_PER_RUN:
        # names need the job planned: done here only where other errors are reported anyway (else plan_jobs does)
        problems.extend(name_problems(valid))
    total = sum(job_size(job) for manifest in manifests for job in manifest.jobs)
    if total > MAX_ITEMS_PER_RUN and not problems:
        problems.append(
            f"the manifests expand to {total:,} items; the limit is {MAX_ITEMS_PER_RUN:,} per run: "
            "split the jobs over several runs"
        )
    if problems:
        raise ManifestError(problems)
    return manifests


def load_manifest(
    path: Path, output_root: Path | None = None, task: str = DEFAULT_TASK, valid: list[JobSpec] | None = None
) -> Manifest:
    """`valid`, if given, gets the jobs whose own fields are valid, even where others' are not."""
    if path.suffix.lower() == ".csv":
        return load_csv(path, task, valid)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml(path, output_root, task, valid)
    raise ManifestError([f"{shown_path(path)}: a manifest must be a .yaml, .yml or .csv file"])


def grid_size(grid: Grid) -> int:
    """The items a grid expands to (duplicates included), counted without expanding it."""
    return math.prod(len(getattr(grid, axis)) for axis in ("sources", "prompts", *axis_names())) * grid.variations


def job_size(job: JobSpec) -> int:
    return sum(grid_size(grid) for grid in job.grids)


def pipeline_settings(paths: list[Path]) -> set[Path]:
    """The pipeline configs the YAML manifests name (`pipeline:`), read before the manifests are validated: the
    config's task decides their defaults and what they may set. A manifest that cannot be read names none here
    (loading it reports why)."""
    settings = _settings(paths, "pipeline")
    if missing := [_missing_pipeline(*setting) for setting in settings if not setting[2].exists()]:
        raise ManifestError(missing)
    return {where for _, _, where in settings}


def _missing_pipeline(manifest: Path, value: str, where: Path) -> str:
    """A `pipeline:` naming no file: where its relative path led, and the path to write where the file is in the
    working folder (the usual slip: a manifest in a subfolder naming a config beside the command)."""
    message = (
        f"{shown_path(manifest)}: field 'pipeline': file not found: {shown_path(where)} (relative paths resolve "
        f"against the manifest's folder, {shown_path(manifest.parent.resolve())})"
    )
    here = Path(os.path.expanduser(value))
    if not here.is_absolute() and here.resolve().is_file():
        relative = os.path.relpath(here.resolve(), manifest.parent.resolve())
        message += f"; for the {printable(value)} in the working folder write pipeline: {printable(relative)}"
    return message


def output_root_settings(paths: list[Path]) -> set[Path]:
    """The output roots the YAML manifests name (`output_root:`), read before the manifests are validated: the
    run's one output root (and each job's folder in it) is kept out of every manifest's folder and glob sources,
    also of a manifest that names none."""
    return _path_settings(paths, "output_root")


def _path_settings(paths: list[Path], key: str) -> set[Path]:
    return {where for _, _, where in _settings(paths, key)}


def _settings(paths: list[Path], key: str) -> list[tuple[Path, str, Path]]:
    """(manifest, the value as written, the path it names) for each YAML manifest setting `key`."""
    named = []
    for path in paths:
        if path.suffix.lower() not in (".yaml", ".yml"):
            continue
        try:
            data = read_yaml_file(path, lambda message: ManifestError([message]))
        except ManifestError:
            continue
        if isinstance(data, dict) and isinstance(data.get(key), str) and data[key]:
            if "\0" in data[key]:  # no path holds one (YAML's "\0" escape writes it)
                raise ManifestError([f"{shown_path(path)}: field '{key}': {data[key]!r} holds a NUL byte (\\0), "
                                     "which no path can"])  # fmt: skip
            named.append((path, data[key], setting_path(path.parent, data[key])))
    return named


def setting_path(base: Path, value: str) -> Path:
    """A path a manifest's setting names (`output_root:`, `pipeline:`), `~` expanded as for sources, relative
    to the manifest's folder."""
    return (base / os.path.expanduser(value)).resolve()


def _load_yaml(
    path: Path, output_root: Path | None = None, task: str = DEFAULT_TASK, valid: list[JobSpec] | None = None
) -> Manifest:
    data = read_yaml_file(path, lambda message: ManifestError([message]))
    if not isinstance(data, dict):
        raise ManifestError([f"{shown_path(path)}: a manifest must be a mapping with a 'jobs:' list"])
    top, problems = _top_level(data, path)
    where = f"{shown_path(path)}: defaults"
    given = without_listed_options(without_untaken(top.defaults, task, where, problems), where, problems)
    defaults, refused = _valid_defaults(given, where, problems)
    base = path.parent
    own_root = setting_path(base, top.output_root) if top.output_root else None
    exclude = output_root or own_root or DEFAULT_OUTPUT_ROOT  # the run's output root, as the CLI picks it
    jobs, named = [], {}  # named: job name -> where it was first given, checked before a job's own problems
    for index, raw in enumerate(top.jobs):
        before = len(problems)
        name = f" ('{printable(raw['name'])}')" if isinstance(raw.get("name"), str) else ""
        where = f"{shown_path(path)}: jobs[{index}]{name}"
        if name and raw["name"] in named:
            problems.append(f"{where}: job name {name[2:-1]} is used twice (also in {named[raw['name']]})")
        named.setdefault(raw.get("name") if name else None, where)
        merged = {**inherited_defaults(defaults.model_dump(exclude_unset=True) if defaults else {}, raw, task), **raw}
        merged = without_random_seed(without_untaken(merged, task, where, problems), where, problems)
        merged = without_listed_options(merged, where, problems)
        model = _validated(JobModel, merged, where, problems, refused)
        job = _job_from_model(model, base, where, problems, exclude, task) if model is not None else None
        if job is not None:
            jobs.append(job)
        if job is not None and len(problems) == before and valid is not None:
            valid.append(job)
    if problems:
        raise ManifestError(problems)
    return Manifest(
        path=path,
        jobs=tuple(jobs),
        output_root=own_root,
        pipeline=setting_path(base, top.pipeline) if top.pipeline else None,
    )


def _top_level(data: dict, path: Path) -> tuple[ManifestModel, list[str]]:
    """The manifest's top-level keys. Unknown ones are reported with the jobs' problems, not instead of them."""
    if "jobs" in data and data["jobs"] in (None, []):  # `jobs: []` or `jobs:` with nothing under it
        raise ManifestError([f"{shown_path(path)}: the manifest lists no jobs: 'jobs:' needs at least one job"])
    try:
        return ManifestModel.model_validate(data, strict=True), []
    except ValidationError as exc:
        problems = describe_validation_error(exc, shown_path(path), ManifestModel)
        if any(error["type"] != "extra_forbidden" for error in exc.errors()):
            raise ManifestError(problems) from None
    known = {key: value for key, value in data.items() if key in ManifestModel.model_fields}
    return ManifestModel.model_validate(known, strict=True), problems


def _valid_defaults(given: dict, where: str, problems: list[str]) -> tuple[BaseModel | None, frozenset[str]]:
    """`defaults:` validated, and the fields of it refused. Its valid keys still reach the jobs: left out with the
    refused ones, every job taking `sources` or `prompts` from there would be told they are missing."""
    try:
        return JobDefaults.model_validate(given, strict=True), frozenset()
    except ValidationError as exc:
        problems.extend(describe_validation_error(exc, where, JobDefaults))
        errors = exc.errors()
    keys = {err["loc"][0] for err in errors if err["loc"]}
    refused = keys if all(err["loc"] for err in errors) else set(given)  # a check across fields: none kept
    try:
        defaults = JobDefaults.model_validate({k: v for k, v in given.items() if k not in refused}, strict=True)
    except ValidationError:  # the keys kept fail together: keep none (their problems are reported above)
        defaults, refused = None, set(given)
    return defaults, frozenset(refused).intersection(JobDefaults.model_fields)


def _validated(
    model: type[BaseModel], data: dict, where: str, problems: list[str], refused: frozenset[str] = frozenset()
):
    """`refused`: fields `defaults:` gave but were refused there; a job that would take one is not told it is
    missing (the problem is the default's, reported once)."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (e["type"] == "missing" and e["loc"] and e["loc"][0] in refused)]
        problems.extend(describe_errors(errors, where, model))
        return None


def _job_from_model(
    model: JobModel, base: Path, where: str, problems: list[str], exclude: Path | None = None, task: str = DEFAULT_TASK
) -> JobSpec | None:
    named = len(problems)
    check_job_name(model.name, where, problems)
    # The job's own results are never its sources; a name refused above names no folder.
    own = exclude / model.name if exclude is not None and len(problems) == named else None
    sources: list[SourceRef] = []
    skip = Exclusions(tuple(_as_list(model.exclude))) if model.exclude is not None else None
    unlisted: list[tuple[Path, str]] = []
    for index, spec in enumerate(_as_list(model.sources)):
        try:
            sources.extend(expand_source(spec, base, model.recursive, exclude, own, skip=skip, unlisted=unlisted))
        except SourceSpecError as exc:
            problems.append(f"{where}: field 'sources[{index}]': {exc}")
    unique = tuple(dict.fromkeys(sources))
    grid = Grid(
        sources=unique,
        prompts=tuple(_as_list(model.prompts)),
        **{name: tuple(_as_list(param(model, name, task))) for name in axis_names()},
        output=output_options(model, where, problems, task),
        variations=param(model, "variations", task),
        specs=tuple((str(base), spec) for spec in _as_list(model.sources)),
        repeated_sources=len(sources) - len(unique),
        excluded=len({path for path, _ in skip.left_out}) if skip else 0,
        exclude=skip.patterns if skip else (),
        exclude_unused=skip.unused() if skip else (),
        not_regular=tuple(dict.fromkeys((str(path), kind) for path, kind in unlisted)),
    )
    if grid_size(grid) > MAX_ITEMS_PER_RUN:  # before the checks below, which walk the grid's axes
        problems.append(f"{where}: {_too_large(grid, model.masks is not None)}")
        return None
    if model.masks is not None:
        try:
            grid = without_masks_as_sources(
                replace(grid, masks=pair_masks(model.masks, base, grid.sources, model.recursive))
            )
        except SourceSpecError as exc:
            problems.append(f"{where}: field 'masks': {exc}")
    check_grid(grid, where, problems, masks_given=model.masks is not None)
    problems.extend(f"{where}: field 'file_name': {problem}" for problem in template_problems(model.file_name))
    problems.extend(
        f"{where}: field 'file_name': the {task} task takes no {p.name}, so {{{p.file_field}}} names nothing"
        for p in PARAMETERS
        if p.file_field and not p.taken_by(task) and f"{{{p.file_field}" in model.file_name
    )
    loras = tuple(lora.resolved_against(base) for lora in model.loras or ())
    return JobSpec(
        model.name,
        where,
        (grid,),
        keep_sources=model.keep_sources,
        loras=loras,
        file_name=model.file_name,
        contact_sheets=model.contact_sheets,
    )


def _too_large(grid: Grid, masked: bool) -> str:
    """The limit counts every job of a run together, so only fewer values per run (the rest in other manifests,
    run one after another) helps; mask parameters are counted only where a job has masks or sweeps them."""
    shown = [p.name for p in axes() if p.needs is None or masked or len(getattr(grid, p.name)) > 1]
    counts = " x ".join(f"{len(getattr(grid, axis))} {axis}" for axis in ("sources", "prompts", *shown))
    counts += f" x {grid.variations} variations" if grid.variations > 1 else ""
    return (
        f"the grid expands to {grid_size(grid):,} items ({counts}); the limit is {MAX_ITEMS_PER_RUN:,} items per "
        "run, every job counted: split the job's values over several manifests and run each separately"
    )


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]
