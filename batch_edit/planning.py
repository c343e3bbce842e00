"""The planning step `plan`, `run` and `prune` share: the pipeline config first (its task decides what manifests
may set), then the manifests, the config's `auto` choices resolved for the device, each local source identified by
its content, and the plans (item ids, seeds, file names)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ValidationError

from .errors import ConfigError, ManifestError, OutputError, OutputRefusedError, PipelineLoadError
from .job_chains import unfilled_job_folders
from .lora_config import names_used_twice
from .manifest import DEFAULT_OUTPUT_ROOT, JobSpec, load_manifests, output_root_settings, pipeline_settings
from .pipeline_config import PipelineConfig, load_pipeline_config
from .plan import JobPlan, plan_jobs
from .plan_checks import UNRESOLVED, fit_duplicates, job_warnings
from .source_identity import identify_sources
from .validation import describe_validation_error, escaped


def prepare(
    args, for_run: bool, read: dict | None = None, resolve=None, warn: bool = True, echo: bool = True
) -> tuple[PipelineConfig, Path, list[JobPlan], list[JobSpec]]:
    """The planning step `plan` and `run` share: the config with its `auto` choices resolved for this device
    (or by `resolve`: for the GPUs of a Ray cluster), each local source identified by its content, then the plans
    (ids, seeds, names). `read`, if given, gets each job's (JobOutput, records) as read here. `warn`: say what a
    run of these plans would leave or repeat (not for `prune`). `echo`: say which manifest rows merge (not when a
    run plans its jobs again)."""
    config, output_root, jobs = _loaded(args)
    _refuse_unfilled_job_folders(jobs, output_root)
    _refuse_csv_rows_naming_job_folders(jobs, output_root)
    config = (resolve or resolve_device_choices)(_with_job_loras(config, jobs), for_run)
    jobs = identify_sources(jobs, {}, _recorded_hashes(output_root, jobs, {} if read is None else read))
    plans = plan_jobs(jobs, config.identity())
    _refuse_rows_differing_in_output(jobs, plans)
    for job, plan in zip(jobs, plans) if echo else ():
        for first, variation, later in plan.merged_rows[:3]:
            repeated = f"row {first}'s variation {variation}" if variation else f"row {first}"  # its seed + variation
            print(
                f"warning: {job.origin}: row {later} gives the same item(s) as {repeated} (same source, prompt, "
                "parameters and seed), so they run once; for several images of one row use the 'variations' column",
                file=sys.stderr,
            )
        if len(plan.merged_rows) > 3:
            more = len(plan.merged_rows) - 3
            print(f"warning: {job.origin}: ... and {more} more row(s) merged the same way", file=sys.stderr)
    for plan in plans if warn else ():
        if duplicates := fit_duplicates(plan.name, plan.items):
            print(f"warning: {escaped(duplicates)}", file=sys.stderr)
    for noise in job_warnings(jobs) if warn and for_run else ():  # `plan` lists them
        print(f"warning: {escaped(noise)}", file=sys.stderr)  # among its own warnings
    return config, output_root, plans, jobs


def job_names(args) -> tuple[Path, list[str]]:
    """The output root and the names of the jobs `prepare` would plan, from the config and the manifests alone (no
    source identified, no record read, nothing planned): what `prune` locks before it plans."""
    _, output_root, jobs = _loaded(args)
    return output_root, [job.name for job in jobs]


def _loaded(args) -> tuple[PipelineConfig, Path, list[JobSpec]]:
    """The pipeline config, the output root and the manifests' jobs (validated, their sources listed)."""
    # the config first: its task decides the manifests' defaults and which parameters they may set
    config = load_pipeline_config(args.pipeline or _one_setting(pipeline_settings(args.manifests), "pipeline"))
    # the run's output root before any source is expanded: every manifest's folders and globs are kept out of it
    roots = output_root_settings(args.manifests)
    output_root = args.output_root or _one_setting(roots, "output_root") or DEFAULT_OUTPUT_ROOT
    manifests = load_manifests(args.manifests, output_root=output_root, task=config.task)
    return config, output_root, [job for manifest in manifests for job in manifest.jobs]


def _refuse_rows_differing_in_output(jobs: list[JobSpec], plans: list[JobPlan]) -> None:
    """CSV rows giving the same item (same source, prompt, parameters and seed) in another format, quality or
    captions: one item is written once, in one way, so the later row's asking would be dropped; refused, as a YAML
    job's list of formats is, naming both rows and what differs."""
    problems = []
    for job, plan in zip(jobs, plans):
        outputs = {grid.row: grid.output for grid in job.grids if grid.row is not None}
        for first, _, later in plan.merged_rows:
            one, other = outputs.get(first), outputs.get(later)
            if one is None or other is None or one == other:
                continue
            fields = _differing(one, other)
            asked = "; ".join(
                f"row {row}: " + ", ".join(f"{name} {_cell(getattr(output, name))}" for name in fields)
                for row, output in ((first, one), (later, other))
            )
            problems.append(
                f"{job.origin}: rows {first} and {later} give the same item(s) (same source, prompt, parameters and "
                f"seed) but differ in {_listed(fields)} ({asked}); an item is written once: give such rows a 'job' "
                f"column of their own (one job for each {_listed([_SETTING.get(f, f) for f in fields])}), or make "
                "them other items"
            )
    if problems:
        raise ManifestError(problems)


def _differing(one, other) -> list[str]:
    """The output options two rows really give differently: a quality only where both formats take one (a png
    row has none, so beside a jpeg row only the format differs)."""
    fields = [name for name in ("format", "captions") if getattr(one, name) != getattr(other, name)]
    if None not in (one.quality, other.quality) and one.quality != other.quality:
        fields.insert(1 if "format" in fields else 0, "quality")
    return fields


_SETTING = {"captions": "captions setting"}


def _listed(words: list[str]) -> str:
    return " and ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} and {words[-1]}"


def _cell(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _refuse_unfilled_job_folders(jobs: list[JobSpec], output_root: Path) -> None:
    """A source that is a job folder holding no results, of no job of this run, gives nothing to edit, ever."""
    problems = [
        f"{job.origin}: source {escaped(folder)} is a job folder holding no results (or none yet), and no job of "
        "this run makes them: run that job first, or add it to this run"
        for job in jobs
        for folder in unfilled_job_folders(job, jobs, output_root)
    ]
    if problems:
        raise ManifestError(problems)


def _refuse_csv_rows_naming_job_folders(jobs: list[JobSpec], output_root: Path) -> None:
    """CSV rows whose source is the folder of a job of the run not made yet: a CSV row names one file, so the run
    would refuse the row once that job made its folder; said now, as that refusal says it."""
    from .job_chains import folder_of_job, job_folders

    folders = job_folders([job.name for job in jobs], output_root)
    problems = [
        f"{job.origin}, row {grid.row}: field 'source': source {escaped(ref.key)} is job {other}'s folder; a CSV row "
        "names one image file or URL (folders and globs go in a YAML manifest's 'sources:')"
        for job in jobs
        for grid in job.grids
        if grid.row is not None
        for ref in grid.sources
        if not ref.is_url and (other := folder_of_job(ref.key, folders)) is not None
    ]
    if problems:
        raise ManifestError(problems)


def resolve_device_choices(config: PipelineConfig, for_run: bool) -> PipelineConfig:
    if not config.has_device_choices:
        return config
    from .backends import fp8_capable

    try:
        return config.with_device_choices(fp8_capable(config.device))
    except PipelineLoadError as exc:
        if for_run:
            raise
        import torch

        if torch.cuda.is_available():  # else no GPU at all: `plan`'s device warning says so, and what it leaves
            print(f"warning: {exc}: `batch-edit run` would refuse it here; {UNRESOLVED}", file=sys.stderr)
        return config


def _recorded_hashes(output_root: Path, jobs: list[JobSpec], read: dict) -> dict[str, list[dict]]:
    """Job name -> the records earlier runs wrote in that job's folder, in written order (read before anything
    runs): each job's history of its sources stays its own (identify_sources)."""
    from .outputs import JobOutput

    known: dict[str, dict] = {}
    try:
        for job in jobs:
            output = JobOutput(output_root, job.name)
            output.check()
            read[job.name] = (output, output.read_records())
            known[job.name] = output.in_written_order(read[job.name][1])
    except OutputError as exc:
        raise OutputRefusedError(str(exc)) from exc
    return known


def _with_job_loras(config: PipelineConfig, jobs: list[JobSpec]) -> PipelineConfig:
    """Jobs may list LoRAs too; they are fused into the run's one pipeline, so every job must list the same."""
    sets = {json.dumps([lora.identity() for lora in job.loras], sort_keys=True) for job in jobs}
    if len(sets) > 1:
        described = "; ".join(f"{job.name}: {' '.join(lora.tag() for lora in job.loras) or 'none'}" for job in jobs)
        raise ManifestError([
            f"the jobs list different LoRAs ({described}); one run fuses one set of LoRAs into its one pipeline, "
            "so run jobs with other LoRAs as a separate command"
        ])  # fmt: skip
    loras = jobs[0].loras if jobs else ()
    if not loras:
        return config
    if twice := names_used_twice([*config.loras, *loras]):  # a job's own list is checked with its manifest
        problem = (
            f"{jobs[0].origin}: field 'loras': LoRA name(s) {', '.join(twice)} also used by a LoRA of "
            f"{config._origin} (field 'loras'); the run fuses both lists, whose names must be unique: give one a `name:`"
        )
        raise ManifestError([problem])
    data = config.model_dump()
    data["loras"] = [*data["loras"], *(lora.model_dump() for lora in loras)]
    try:  # validated as one config; the config keeps what it was read from
        merged = config.model_copy(update={"loras": PipelineConfig.model_validate(data).loras})
    except ValidationError as exc:
        where = f"{jobs[0].origin}: its LoRAs with the pipeline config {config._origin}"
        raise ConfigError("\n".join(describe_validation_error(exc, where, PipelineConfig))) from None
    merged._job_loras = {lora.name: (jobs[0].origin, index) for index, lora in enumerate(loras)}
    return merged


def _one_setting(values: set[Path], name: str) -> Path | None:
    if len(values) > 1:
        shown = ", ".join(str(v) for v in sorted(values))
        error = ConfigError if name == "pipeline" else ManifestError
        message = f"the manifests name different '{name}' values ({shown}); one run uses one, so pass --{name.replace('_', '-')}"
        raise error(message) if error is ConfigError else error([message])
    return values.pop() if values else None
