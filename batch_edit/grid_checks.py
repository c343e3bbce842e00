"""Checks a job's values get wherever they were written (YAML grid or CSV row): its name, the task's parameters,
seeds, strength against steps, prompt templates and the prompts they make; each problem names where it is."""

from __future__ import annotations

import os
import re

from pydantic import BaseModel

from .captions import missing_caption
from .formats import DEFAULT_QUALITY, OutputOptions
from .manifest_models import Grid
from .masks import parameter_problems
from .parameters import DEFAULT_TASK, PARAMETERS, SEED_MAX, named
from .prompts import prompt_problem, render_prompt, template_fields
from .sources import SourceRef
from .validation import printable

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_LISTED = 20  # problems of one kind listed per job (then a count)


def without_random_seed(data: dict, where: str, problems: list[str]) -> dict:
    """`seed: -1` means "random" in AUTOMATIC1111; here it gets an explanation rather than a range error."""
    seeds = data.get("seed")
    if not any(str(seed).strip() == "-1" for seed in (seeds if isinstance(seeds, list) else [seeds])):
        return data
    problems.append(
        f"{where}: field 'seed': -1 (random) is not supported: leave 'seed' out for seeds derived from each "
        "item (the same on every run), add 'variations: N' for N different seeds per item, or list explicit seeds"
    )
    return {key: value for key, value in data.items() if key != "seed"}


def without_untaken(data: dict, task: str, where: str, problems: list[str]) -> dict:
    """A parameter the task does not take (`strength` for fill and kontext) is refused by name, then left out so
    that nothing else complains about it."""
    untaken = [p.name for p in PARAMETERS if not p.taken_by(task) and data.get(p.name) is not None]
    problems.extend(f"{where}: field '{name}': the {task} task takes no {name}" for name in untaken)
    return {key: value for key, value in data.items() if key not in untaken}


def without_listed_options(data: dict, where: str, problems: list[str]) -> dict:
    """`format`, `quality`, `captions` and `variations` are the job's, one value each (not grid axes: results of
    two formats would share their ids and names): a list is told so by name, then left out."""
    listed = [p.name for p in PARAMETERS if not p.axis and isinstance(data.get(p.name), list)]
    problems.extend(
        f"{where}: field '{name}': one value per job, not a list (write a job per value)" for name in listed
    )
    return {key: value for key, value in data.items() if key not in listed}


def output_options(model: BaseModel, where: str, problems: list[str], task: str = DEFAULT_TASK) -> OutputOptions:
    """png is lossless: a quality for it is refused rather than silently ignored."""
    format = param(model, "format", task)
    if format == "png" and model.quality is not None:
        problems.append(f"{where}: field 'quality': applies to format jpeg or webp only (png is lossless)")
    quality = None if format == "png" else param(model, "quality", task) or DEFAULT_QUALITY
    return OutputOptions(format, quality, param(model, "captions", task))


def inherited_defaults(defaults: dict, job: dict, task: str = DEFAULT_TASK) -> dict:
    """What `defaults:` gives a job: all of it but a `quality` where the job writes png. A default applies where it
    means something (a manifest of jpeg and png jobs sets one quality for its jpegs); a png job's own quality is
    still refused."""
    format = job.get("format", defaults.get("format")) or named("format").default_for(task)
    if format == "png" and "quality" not in job:
        return {key: value for key, value in defaults.items() if key != "quality"}
    return defaults


def param(model: BaseModel, name: str, task: str = DEFAULT_TASK):
    """The value given, else the task's default; None for a parameter the task does not take."""
    value, declared = getattr(model, name), named(name)
    if value is None and declared.taken_by(task):
        return declared.default_for(task)
    return value


def check_job_name(name: str, where: str, problems: list[str], field: str = "field 'name'", fix: str = "") -> None:
    """`field`: where the name was given (a YAML job's `name`, a CSV's `job` column or its file name); `fix`: what
    to do instead, where that is not to write another name there."""
    if not JOB_NAME.fullmatch(name) or ".." in name:
        problems.append(
            f"{where}: {field}: '{printable(name)}' is not allowed: it names the output folder, so use 1-100 letters, "
            f"digits, '.', '_' or '-', starting with a letter or digit, with no '..'{fix}"
        )


def check_grid(grid: Grid, where: str, problems: list[str], masks_given: bool = False) -> None:
    """`masks_given`: the job gives masks, paired into the grid or refused already."""
    problems.extend(parameter_problems(grid, where, masks_given))
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
    caption_checked = False
    for prompt in grid.prompts:
        try:
            fields = template_fields(prompt)
        except ValueError as exc:
            problems.append(f"{where}: prompt '{printable(prompt)}': {exc}")
            continue
        if "caption" in fields and not caption_checked:  # the sources' captions, once for all prompts using them
            caption_checked = True
            uncaptioned = [ref for ref in grid.sources if ref.caption is None and _is_image_there(ref)]
            problems.extend(_bounded(where, [_no_caption(prompt, ref) for ref in uncaptioned]))
        if fields:
            _check_final_prompts(prompt, [ref for ref in grid.sources if ref.caption or "caption" not in fields],
                                 where, problems)  # fmt: skip
        elif problem := prompt_problem(prompt):
            problems.append(f"{where}: prompt '{printable(prompt)}' {problem}")


def _is_image_there(ref: SourceRef) -> bool:
    """A URL, or a local file that exists: a missing one fails as its item's "file not found" (or, being a job
    folder not made yet, waits for that job's results), whatever its caption."""
    return ref.is_url or os.path.isfile(ref.key)


def _no_caption(prompt: str, ref: SourceRef) -> str:
    reason = missing_caption(ref.key, ref.is_url, ref.caption_problem)
    return f"prompt '{printable(prompt)}' uses {{caption}}, but source '{printable(ref.key, limit=1000)}' has none: {reason}"


def _check_final_prompts(template: str, sources: list[SourceRef], where: str, problems: list[str]) -> None:
    """Limits hold for the prompt the model gets: a long or odd caption makes a bad prompt of a good template."""
    bad = [
        f"prompt '{printable(template)}' for source '{printable(ref.key, limit=1000)}' {problem} once {{caption}} "
        "and {stem} are filled in"
        for ref in sources
        if (problem := prompt_problem(render_prompt(template, ref)))
    ]
    problems.extend(_bounded(where, bad))


def _bounded(where: str, found: list[str]) -> list[str]:
    """Every problem of a kind up to MAX_LISTED, then a count: a folder of 10,000 uncaptioned photos is one fix."""
    listed = [f"{where}: {problem}" for problem in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        listed.append(f"{where}: ... and {len(found) - MAX_LISTED} more source(s) with the same kind of problem")
    return listed


def denoising_steps(steps: int, strength: float) -> int:
    """Transformer passes the img2img pipeline runs (diffusers' get_timesteps, computed the same way)."""
    init_timestep = min(steps * strength, steps)
    t_start = int(max(steps - init_timestep, 0))
    return steps - t_start
