"""The shapes a manifest is validated against (YAML jobs and defaults, CSV rows: pydantic models with a field
per declared parameter) and the frozen specs it becomes (Grid, JobSpec, Manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from .file_names import DEFAULT_FILE_NAME
from .formats import OutputOptions
from .lora_config import LoraList
from .parameters import PARAMETERS, axes
from .pipeline_config import LoraConfig
from .prompts import MAX_PROMPT_CHARS
from .source_folders import exclude_problem
from .sources import SourceRef

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
FileName = Annotated[str, Field(min_length=1, max_length=200)]
SourceText = Annotated[str, Field(min_length=1, max_length=4096)]


def _one_mask_spec(value):
    """`masks` is one spec that pairs a mask with each source, never a list: say what it takes."""
    if value is None or isinstance(value, str):
        return value
    takes = "takes one folder, glob, {stem} template, file or URL"
    if isinstance(value, list):
        takes += ", not a list: one glob can span folders (masks/*/*.png), or give each mask folder its own job"
    raise PydanticCustomError("mask_spec", takes)


MaskSpec = Annotated[SourceText, BeforeValidator(_one_mask_spec)]


def _exclude_pattern(value: str) -> str:
    if (problem := exclude_problem(value)) is not None:
        raise PydanticCustomError("exclude_pattern", "{problem}", {"problem": problem})
    return value


ExcludePattern = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_exclude_pattern)]


def _one_or_many(kind):
    return kind | Annotated[list[kind], Field(min_length=1)]


def _parameter_fields(csv: bool) -> dict:
    """A field per declared parameter, None when not given (its default is the task's); a YAML axis takes a
    list of values too."""
    return {
        p.name: ((p.value if csv or not p.axis else _one_or_many(p.value)) | None, None)
        for p in PARAMETERS
        if p.csv or not csv
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


JobDefaults = create_model(
    "JobDefaults",
    __base__=_Strict,
    __doc__="Every job key but `name`; also the shape of the top-level `defaults:`.",
    sources=(_one_or_many(SourceText) | None, None),
    prompts=(_one_or_many(Prompt) | None, None),
    recursive=(bool, False),
    # images of the folders and globs in `sources` left out: names (`*_thumb.jpg`, `rejects`) or paths from there
    exclude=(_one_or_many(ExcludePattern) | None, None),
    keep_sources=(bool, False),  # save each fitted source (and mask) beside the results (before/after pairs)
    contact_sheets=(bool, True),  # a contact sheet per source in the job folder; false: none (drawn ones removed)
    masks=(MaskSpec | None, None),  # each source's mask, by stem: a template (`masks/{stem}.png`), folder or glob
    loras=(LoraList | None, None),  # fused into the run's one pipeline: every job of a run must agree
    file_name=(FileName, DEFAULT_FILE_NAME),  # the images' names, without the extension
    **_parameter_fields(csv=False),
)


class JobModel(JobDefaults):
    name: str
    sources: _one_or_many(SourceText)
    prompts: _one_or_many(Prompt)


class ManifestModel(_Strict):
    jobs: Annotated[list[dict], Field(min_length=1)]
    defaults: dict = {}
    output_root: str | None = None
    pipeline: str | None = None


CsvRow = create_model(
    "CsvRow",
    __base__=_Strict,
    source=(SourceText, ...),
    prompt=(Prompt, ...),
    job=(str | None, None),
    caption=(str | None, None),
    mask=(SourceText | None, None),
    **_parameter_fields(csv=True),
)

Grid = make_dataclass(
    "Grid",
    [
        ("sources", tuple[SourceRef, ...]),
        ("prompts", tuple[str, ...]),
        *((p.name, tuple, field(default=(p.default_for(),))) for p in axes()),  # one value: the default
        ("output", OutputOptions, field(default=OutputOptions())),
        ("variations", int, field(default=1)),  # seeds per grid point: derived ones, or seed, seed+1, ...
        ("row", int | None, field(default=None)),  # the CSV data row (1-based) this grid came from
        ("masks", tuple[SourceRef, ...], field(default=())),  # each source's mask, in order; () without masks
        # (folder, spec) of each YAML source as written: which results made in the run a folder or glob will add
        ("specs", tuple[tuple[str, str], ...], field(default=(), compare=False)),
        # YAML sources listed again (by name, or by a folder and a glob both), left out of `sources`: the items each
        # would give are the first listing's, so `plan` counts them with the duplicates merged
        ("repeated_sources", int, field(default=0, compare=False)),
        # files a folder or glob of `sources` gave that the job's mask spec pairs with another source, left out of
        # `sources` (masks beside their images: `cat.png`, `cat_mask.png`); `plan` counts them
        ("masks_left_out", int, field(default=0, compare=False)),
        # files a folder or glob of `sources` gave that the job's `exclude` leaves out; and its patterns that left
        # out none (`plan` and `run` warn)
        ("excluded", int, field(default=0, compare=False)),
        ("exclude", tuple[str, ...], field(default=(), compare=False)),
        ("exclude_unused", tuple[str, ...], field(default=(), compare=False)),
        # (path, what it is) of each name with an image's suffix that a folder or glob of `sources` found and that
        # is no regular file (a link to nothing, a FIFO, a device): no item (`plan` and `run` warn)
        ("not_regular", tuple[tuple[str, str], ...], field(default=(), compare=False)),
    ],
    frozen=True,
    namespace={"__module__": __name__, "__doc__": "A cartesian grid: sources x prompts x every swept parameter. "
               "A CSV row is a grid of one."},
)  # fmt: skip


@dataclass(frozen=True)
class JobSpec:
    name: str
    origin: str
    grids: tuple[Grid, ...]
    keep_sources: bool = False
    loras: tuple[LoraConfig, ...] = ()
    file_name: str = DEFAULT_FILE_NAME
    contact_sheets: bool = True


@dataclass(frozen=True)
class Manifest:
    path: Path
    jobs: tuple[JobSpec, ...]
    output_root: Path | None = None
    pipeline: Path | None = None
