"""Manifests (YAML grids or CSV rows) in, validated and frozen job specs out.

Everything a run could trip over in the manifest is found here, before any model loads, and reported
together: file, job, field, and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .csv_table import CsvRecord, CsvTable, CsvTableError, read_csv_table
from .errors import ManifestError
from .file_names import template_problems
from .formats import DEFAULT_QUALITY, OutputOptions
from .manifest_models import CsvRow, Grid, JobDefaults, JobModel, JobSpec, Manifest, ManifestModel
from .masks import pair_masks, parameter_problems
from .parameters import DEFAULT_TASK, PARAMETERS, SEED_MAX, axes, axis_names, named
from .prompts import prompt_problem, render_prompt, template_fields
from .sources import SourceRef, SourceSpecError, expand_source, row_source_ref
from .validation import MAX_FILE_BYTES, describe_validation_error, printable, read_text_file, read_yaml_file, shown_path

# CSV cells: where a semicolon or tab delimits, "0,75" is a decimal comma.
DECIMAL_COMMA = re.compile(r"\s*[0-9]+,[0-9]+\s*")
# Keys a CSV row cannot express.
YAML_ONLY_HINTS = {
    "name": " (a CSV names jobs in a 'job' column)",
    "sources": " (a CSV row has one 'source')",
    "prompts": " (a CSV row has one 'prompt')",
    "defaults": " (empty CSV cells take the defaults)",
}
# Counted before anything is expanded: a plan holds every item in memory (about 300 MB per 1,000,000 items).
MAX_ITEMS_PER_RUN = 10_000_000
DEFAULT_OUTPUT_ROOT = Path("outputs")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def load_manifests(paths: list[Path], output_root: Path | None = None, task: str = DEFAULT_TASK) -> list[Manifest]:
    """Load every manifest, collecting all problems; job names must be unique across the run, and the run
    at most MAX_ITEMS_PER_RUN items. `output_root` (the command line's) is kept out of folder and glob sources.
    `task` (the pipeline config's) gives the parameters' defaults and refuses those it does not take."""
    manifests, problems = [], []
    for path in paths:
        try:
            manifests.append(load_manifest(path, output_root, task))
        except ManifestError as exc:
            problems.extend(exc.problems)
    seen: dict[str, str] = {}
    for manifest in manifests:
        for job in manifest.jobs:
            if job.name in seen:
                problems.append(
                    f"{job.origin}: job name '{printable(job.name)}' is used twice (also in {seen[job.name]})"
                )
            seen.setdefault(job.name, job.origin)
    total = sum(job_size(job) for manifest in manifests for job in manifest.jobs)
    if total > MAX_ITEMS_PER_RUN and not problems:
        problems.append(
            f"the manifests expand to {total:,} items; the limit is {MAX_ITEMS_PER_RUN:,} per run: "
            "split the jobs over several runs"
        )
    if problems:
        raise ManifestError(problems)
    return manifests


def load_manifest(path: Path, output_root: Path | None = None, task: str = DEFAULT_TASK) -> Manifest:
    if path.suffix.lower() == ".csv":
        return _load_csv(path, task)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml(path, output_root, task)
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
    named = set()
    for path in paths:
        if path.suffix.lower() not in (".yaml", ".yml"):
            continue
        try:
            data = read_yaml_file(path, lambda message: ManifestError([message]))
        except ManifestError:
            continue
        if isinstance(data, dict) and isinstance(data.get("pipeline"), str) and data["pipeline"]:
            named.add((path.parent / data["pipeline"]).resolve())
    return named


def _load_yaml(path: Path, output_root: Path | None = None, task: str = DEFAULT_TASK) -> Manifest:
    data = read_yaml_file(path, lambda message: ManifestError([message]))
    if not isinstance(data, dict):
        raise ManifestError([f"{shown_path(path)}: a manifest must be a mapping with a 'jobs:' list"])
    top, problems = _top_level(data, path)
    where = f"{shown_path(path)}: defaults"
    defaults = _validated(JobDefaults, _without_untaken(top.defaults, task, where, problems), where, problems)
    base = path.parent
    own_root = (base / top.output_root).resolve() if top.output_root else None
    exclude = output_root or own_root or DEFAULT_OUTPUT_ROOT  # the run's output root, as the CLI picks it
    jobs, named = [], {}  # named: job name -> where it was first given, checked before a job's own problems
    for index, raw in enumerate(top.jobs):
        name = f" ('{printable(raw['name'])}')" if isinstance(raw.get("name"), str) else ""
        where = f"{shown_path(path)}: jobs[{index}]{name}"
        if name and raw["name"] in named:
            problems.append(f"{where}: job name {name[2:-1]} is used twice (also in {named[raw['name']]})")
        named.setdefault(raw.get("name") if name else None, where)
        merged = {**(defaults.model_dump(exclude_unset=True) if defaults else {}), **raw}
        merged = _without_random_seed(_without_untaken(merged, task, where, problems), where, problems)
        model = _validated(JobModel, merged, where, problems)
        if model is not None:
            jobs.append(_job_from_model(model, base, where, problems, exclude, task))
    if problems:
        raise ManifestError(problems)
    return Manifest(
        path=path,
        jobs=tuple(jobs),
        output_root=own_root,
        pipeline=(base / top.pipeline).resolve() if top.pipeline else None,
    )


def _top_level(data: dict, path: Path) -> tuple[ManifestModel, list[str]]:
    """The manifest's top-level keys. Unknown ones are reported with the jobs' problems, not instead of them."""
    try:
        return ManifestModel.model_validate(data, strict=True), []
    except ValidationError as exc:
        problems = describe_validation_error(exc, shown_path(path), ManifestModel)
        if any(error["type"] != "extra_forbidden" for error in exc.errors()):
            raise ManifestError(problems) from None
    known = {key: value for key, value in data.items() if key in ManifestModel.model_fields}
    return ManifestModel.model_validate(known, strict=True), problems


def _validated(model: type[BaseModel], data: dict, where: str, problems: list[str]):
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        problems.extend(describe_validation_error(exc, where, model))
        return None


def _job_from_model(
    model: JobModel, base: Path, where: str, problems: list[str], exclude: Path | None = None, task: str = DEFAULT_TASK
) -> JobSpec | None:
    _check_job_name(model.name, where, problems)
    sources: list[SourceRef] = []
    for index, spec in enumerate(_as_list(model.sources)):
        try:
            sources.extend(expand_source(spec, base, recursive=model.recursive, exclude=exclude))
        except SourceSpecError as exc:
            problems.append(f"{where}: field 'sources[{index}]': {exc}")
    grid = Grid(
        sources=tuple(dict.fromkeys(sources)),
        prompts=tuple(_as_list(model.prompts)),
        **{name: tuple(_as_list(_param(model, name, task))) for name in axis_names()},
        output=_output_options(model, where, problems, task),
        variations=_param(model, "variations", task),
    )
    if grid_size(grid) > MAX_ITEMS_PER_RUN:  # before the checks below, which walk the grid's axes
        problems.append(f"{where}: {_too_large(grid, model.masks is not None)}")
        return None
    if model.masks is not None:
        try:
            grid = replace(grid, masks=pair_masks(model.masks, base, grid.sources, model.recursive))
        except SourceSpecError as exc:
            problems.append(f"{where}: field 'masks': {exc}")
    _check_grid(grid, where, problems)
    problems.extend(f"{where}: field 'file_name': {problem}" for problem in template_problems(model.file_name))
    problems.extend(
        f"{where}: field 'file_name': the {task} task takes no {p.name}, so {{{p.file_field}}} names nothing"
        for p in PARAMETERS
        if p.file_field and not p.taken_by(task) and f"{{{p.file_field}" in model.file_name
    )
    loras = tuple(lora.resolved_against(base) for lora in model.loras or ())
    return JobSpec(
        model.name, where, (grid,), keep_sources=model.keep_sources, loras=loras, file_name=model.file_name
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


def _without_random_seed(data: dict, where: str, problems: list[str]) -> dict:
    """`seed: -1` means "random" in AUTOMATIC1111; here it gets an explanation rather than a range error."""
    seeds = data.get("seed")
    if not any(str(seed).strip() == "-1" for seed in (seeds if isinstance(seeds, list) else [seeds])):
        return data
    problems.append(
        f"{where}: field 'seed': -1 (random) is not supported: leave 'seed' out for seeds derived from each "
        "item (the same on every run), add 'variations: N' for N different seeds per item, or list explicit seeds"
    )
    return {key: value for key, value in data.items() if key != "seed"}


def _without_untaken(data: dict, task: str, where: str, problems: list[str]) -> dict:
    """A parameter the task does not take (`strength` for fill and kontext) is refused by name, then left out so
    that nothing else complains about it."""
    untaken = [p.name for p in PARAMETERS if not p.taken_by(task) and data.get(p.name) is not None]
    problems.extend(f"{where}: field '{name}': the {task} task takes no {name}" for name in untaken)
    return {key: value for key, value in data.items() if key not in untaken}


def _output_options(model: BaseModel, where: str, problems: list[str], task: str = DEFAULT_TASK) -> OutputOptions:
    """png is lossless: a quality for it is refused rather than silently ignored."""
    format = _param(model, "format", task)
    if format == "png" and model.quality is not None:
        problems.append(f"{where}: field 'quality': applies to format jpeg or webp only (png is lossless)")
    quality = None if format == "png" else _param(model, "quality", task) or DEFAULT_QUALITY
    return OutputOptions(format, quality, _param(model, "captions", task))


def _param(model: BaseModel, name: str, task: str = DEFAULT_TASK):
    """The value given, else the task's default; None for a parameter the task does not take."""
    value, declared = getattr(model, name), named(name)
    if value is None and declared.taken_by(task):
        return declared.default_for(task)
    return value


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _check_job_name(name: str, where: str, problems: list[str]) -> None:
    if not JOB_NAME.fullmatch(name) or ".." in name:
        problems.append(
            f"{where}: field 'name': '{printable(name)}' is not allowed: it names the output folder, so use 1-100 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit, with no '..'"
        )


def _check_grid(grid: Grid, where: str, problems: list[str]) -> None:
    problems.extend(parameter_problems(grid, where))
    largest = max((seed for seed in grid.seed if seed is not None), default=0)
    if largest + grid.variations - 1 > SEED_MAX:
        problems.append(f"{where}: seed {largest} with {grid.variations} variations passes the largest seed {SEED_MAX}")
    strengths = sorted(strength for strength in set(grid.strength) if strength is not None)  # none: not taken
    for steps in set(grid.num_inference_steps):
        for strength in strengths:  # passes grow with strength: the first that works ends it
            if denoising_steps(steps, strength) >= 1:
                break
            problems.append(
                f"{where}: strength {strength} with {steps} steps leaves no denoising step "
                "(the pipeline runs steps - int(steps - steps * strength) passes): use a larger strength"
            )
    for prompt in grid.prompts:
        try:
            fields = template_fields(prompt)
        except ValueError as exc:
            problems.append(f"{where}: prompt '{printable(prompt)}': {exc}")
            continue
        missing = [ref.key for ref in grid.sources if ref.caption is None] if "caption" in fields else []
        if missing:
            problems.append(
                f"{where}: prompt '{printable(prompt)}' uses {{caption}} but no caption was found for {_few(missing)}"
            )
        elif fields:
            _check_final_prompts(prompt, grid.sources, where, problems)
        elif problem := prompt_problem(prompt):
            problems.append(f"{where}: prompt '{printable(prompt)}' {problem}")


def _check_final_prompts(template: str, sources: tuple[SourceRef, ...], where: str, problems: list[str]) -> None:
    """Limits hold for the prompt the model gets: a long or odd caption makes a bad prompt of a good template."""
    bad = [(ref, problem) for ref in sources if (problem := prompt_problem(render_prompt(template, ref)))]
    if bad:
        ref, problem = bad[0]
        more = f" (and {len(bad) - 1} more source(s))" if len(bad) > 1 else ""
        problems.append(
            f"{where}: prompt '{printable(template)}' for source '{printable(ref.key, limit=1000)}' {problem} "
            f"once {{caption}} and {{stem}} are filled in{more}"
        )


def _few(values: list[str]) -> str:
    shown = ", ".join(printable(value, limit=1000) for value in values[:3])
    return shown + (f" and {len(values) - 3} more" if len(values) > 3 else "")


def denoising_steps(steps: int, strength: float) -> int:
    """Transformer passes the img2img pipeline runs (diffusers' get_timesteps, computed the same way)."""
    init_timestep = min(steps * strength, steps)
    t_start = int(max(steps - init_timestep, 0))
    return steps - t_start


def _load_csv(path: Path, task: str = DEFAULT_TASK) -> Manifest:
    text = read_text_file(path, lambda message: ManifestError([message]))
    try:
        table = read_csv_table(text.lstrip("\ufeff"), max_field=MAX_FILE_BYTES)
    except CsvTableError as exc:
        raise ManifestError([f"{path}: {exc}"]) from None
    problems = _check_csv_header(path, table.header)
    if problems:
        raise ManifestError(problems)
    grids: dict[str, list[Grid]] = {}
    origins: dict[str, str] = {}
    for number, record in enumerate(table.rows, start=1):
        where = f"{path}: row {number} (line {record.line})"
        row = _csv_values(table, record, where, problems)
        grid, job = _grid_from_row(row, path, where, problems, task) if row is not None else (None, "")
        if grid is not None:
            grids.setdefault(job, []).append(replace(grid, row=number))
            origins.setdefault(job, f"{path}: job '{job}'")
    if not grids and not problems:
        problems.append(f"{path}: the CSV has a header but no rows")
    for job in grids:
        _check_job_name(job, origins[job], problems)
    if problems:
        raise ManifestError(problems)
    jobs = tuple(JobSpec(name=name, origin=origins[name], grids=tuple(rows)) for name, rows in grids.items())
    return Manifest(path=path, jobs=jobs)


def _check_csv_header(path: Path, header: tuple[str, ...]) -> list[str]:
    """Header names are already stripped and lower-cased; a column without a name is allowed (left blank)."""
    allowed = list(CsvRow.model_fields)
    yaml_only = [key for key in (*JobModel.model_fields, *ManifestModel.model_fields) if key not in allowed]
    problems = [
        f"{path}: the header lacks the required column '{name}' (header read: {', '.join(filter(None, header))})"
        for name in ("source", "prompt")
        if name not in header
    ]
    for column, count in Counter(filter(None, header)).items():
        if count > 1:
            problems.append(f"{path}: column '{column}' appears {count} times in the header")
        if column in yaml_only:
            hint = YAML_ONLY_HINTS.get(column, "")
            problems.append(f"{path}: column '{column}': only YAML manifests support '{column}'{hint}")
        elif column not in allowed:
            close = [c for c in allowed if c.startswith(column[:4])]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{path}: unknown column '{column}'{hint}; allowed columns: {', '.join(allowed)}")
    return problems


def _csv_values(table: CsvTable, record: CsvRecord, where: str, problems: list[str]) -> dict | None:
    try:
        values = table.values(record)
    except CsvTableError as exc:
        problems.append(f"{where}: {exc}")
        return None
    if table.delimiter != ",":  # spreadsheets that write ';' or tabs often write decimal commas: 0,75
        for name in (p.name for p in PARAMETERS if p.decimal_comma):
            if DECIMAL_COMMA.fullmatch(values.get(name, "")):
                values[name] = values[name].replace(",", ".")
    return values


def _grid_from_row(
    row: dict, path: Path, where: str, problems: list[str], task: str = DEFAULT_TASK
) -> tuple[Grid | None, str]:
    row = _without_random_seed(_without_untaken(row, task, where, problems), where, problems)
    try:
        model = CsvRow.model_validate(row)
    except ValidationError as exc:
        problems.extend(describe_validation_error(exc, where, CsvRow))
        return None, ""
    try:
        ref = row_source_ref(model.source, path.parent)
    except SourceSpecError as exc:
        problems.append(f"{where}: field 'source': {exc}")
        return None, ""
    if model.caption is not None:
        ref = replace(ref, caption=model.caption)
    try:
        masks = () if model.mask is None else (row_source_ref(model.mask, path.parent),)
    except SourceSpecError as exc:
        message = str(exc).replace("source ", "mask ", 1).replace("'sources:'", "'masks:'")
        problems.append(f"{where}: field 'mask': {message}")
        return None, ""
    grid = Grid(
        sources=(ref,),
        masks=masks,
        prompts=(model.prompt,),
        **{name: (_param(model, name, task),) for name in axis_names()},
        output=_output_options(model, where, problems, task),
        variations=_param(model, "variations", task),
    )
    _check_grid(grid, where, problems)
    return grid, model.job or path.stem
