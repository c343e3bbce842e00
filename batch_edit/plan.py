"""Pure expansion of job specs into WorkItems, each with a stable id, a seed and an output name."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field, make_dataclass
from pathlib import PurePosixPath

from .errors import ManifestError
from .file_names import DEFAULT_FILE_NAME, default_name, file_name_fields, name_clash, namer, reserved_clash
from .formats import OutputOptions, with_extension
from .manifest_models import JobSpec
from .parameters import axes, axis_names, hashed_axes
from .prompts import render_prompt
from .sources import SourceRef

ID_CHARS = 16  # 64 bits of sha256: collisions are out of reach for any realistic run


class _ItemBehaviour:
    """What a WorkItem says about itself beyond its fields."""

    __slots__ = ()  # the items stay slotted: a third the size of ones with a __dict__

    @property
    def output_name(self) -> str:
        """The planned name (by default the source's stem, then the item id), with its format's extension."""
        return with_extension(self.name or default_name(self.source, self.item_id), self.output.format)

    @property
    def batch_key(self) -> tuple:
        """Items that can share one pipeline call (the fitted size is only known after loading)."""
        return tuple(getattr(self, name) for name in _BATCH_KEY)


_BATCH_KEY = tuple(p.name for p in axes() if p.batches)
# One item of a plan: its job, id, source, prompt and a value of every swept parameter.
WorkItem = make_dataclass(
    "WorkItem",
    [
        ("job", str), ("item_id", str), ("source", SourceRef), ("prompt", str),
        *((p.name, p.value) for p in axes()),
        ("seed_derived", bool),
        ("output", OutputOptions, field(default=OutputOptions())),  # how it is written, not what it is
        ("mask", SourceRef | None, field(default=None)),  # white: repainted (masks.py); None: the whole image
        # Where the item sits in its manifest and what it is called: not what it is (its id), so not compared.
        ("variation", int, field(default=0, compare=False)),
        ("index", int, field(default=0, compare=False)),  # position in its job's plan: metadata.csv keeps this order
        ("row", int | None, field(default=None, compare=False)),  # the CSV data row (1-based) it came from
        ("name", str, field(default="", compare=False)),  # the file name without its extension
    ],
    bases=(_ItemBehaviour,),
    frozen=True,
    slots=True,
    namespace={"__module__": __name__},
)  # fmt: skip


@dataclass(frozen=True)
class JobPlan:
    name: str
    items: tuple[WorkItem, ...]
    duplicates: int  # identical items in the manifest (a source listed twice gives some), run once
    keep_sources: bool = False
    # (first row, its variation, later row) of CSV rows giving the same item: the later row's seed may be the
    # first's seed plus a variation
    merged_rows: tuple[tuple[int, int, int], ...] = ()
    contact_sheets: bool = True


def plan_jobs(jobs: list[JobSpec], pipeline_identity: dict) -> list[JobPlan]:
    """Every job's items; two items a file-name template would give one name, or a name the job's contact sheets
    use, are refused (ManifestError)."""
    pipeline_key = json.dumps(pipeline_identity, sort_keys=True)
    # Planning allocates hundreds of thousands of objects and frees none: the cycle collector's passes over the
    # growing plan would find nothing and cost a third of the time, so it waits until the plan is built.
    collecting = gc.isenabled()
    gc.disable()
    try:
        plans = [_plan_job(job, pipeline_key) for job in jobs]
    finally:
        if collecting:
            gc.enable()
    problems = [problem for job, plan in zip(jobs, plans) if (problem := _name_problem(job, plan.items, True))]
    if problems:
        raise ManifestError(problems)
    return plans


def name_problems(jobs: list[JobSpec]) -> list[str]:
    """The name problems of jobs whose own fields are valid, found before their sources are identified and the
    pipeline's identity is known, so that they are reported with the other jobs' errors. Only the ids differ
    from the run's plan (the pipeline and the sources' content are hashed alike into every id of a job, so the
    same grid points are one item); names a template builds from an {id} are left to plan_jobs."""
    return [problem for job in jobs if (problem := _name_problem(job, _plan_job(job, "").items, False))]


def _name_problem(job: JobSpec, items, ids_known: bool) -> str | None:
    """Two items the job's template gives one name, or a name its contact sheets use, with where; else None."""
    clash = reserved_clash(job.file_name, items)
    if clash is None and (ids_known or "id" not in file_name_fields(job.file_name)):
        clash = name_clash(job.file_name, items)
    return f"{job.origin}: {clash}" if clash else None


def _plan_job(job: JobSpec, pipeline_key: str) -> JobPlan:
    """make_item for every grid point, with the JSON that ids hash assembled from pieces encoded once per value:
    a 100,000-item grid plans in a fraction of the time, and every id is byte-for-byte make_item's (tested)."""
    items: dict[str, WorkItem] = {}
    merged: dict[tuple[int, int], int] = {}  # (first row, later row) -> the first row's variation it repeats
    total = 0
    hashed = [p.name for p in hashed_axes(True)]
    seed_at = hashed.index("seed")
    id_end = "]," + json.dumps(pipeline_key) + "]"
    name_of = None if job.file_name == DEFAULT_FILE_NAME else namer(job.name, job.file_name)
    for grid in job.grids:
        # per axis: (value, its JSON), so each value is encoded once, not once per item
        axes = [[(value, json.dumps(value)) for value in getattr(grid, name)] for name in axis_names()]
        points = []  # (explicit seed, the parameters, the id's parameter JSON before the seed, after it, extras)
        for pairs in itertools.product(*axes):
            values = dict(zip(axis_names(), (value for value, _ in pairs)))
            texts = [text for name, (_, text) in zip(axis_names(), pairs) if name in hashed]
            head, tail = ",".join(texts[:seed_at] + [""]), ",".join([""] + texts[seed_at + 1 :])
            points.append((values["seed"], tuple(values.values()), head, tail, off_default(values)))
        variations = range(grid.variations)
        # a source listed again gives the first listing's items: duplicates, counted as those found below are
        total += grid.repeated_sources * len(grid.prompts) * len(points) * grid.variations
        masks = dict(zip(grid.sources, grid.masks))
        # what every item below needs, looked up once per grid
        job_name, output, row, sha256 = job.name, grid.output, grid.row, hashlib.sha256
        for ref, template in itertools.product(grid.sources, grid.prompts):
            prompt = render_prompt(template, ref)
            mask = masks.get(ref)
            id_start = json.dumps([ref.key, ref.fingerprint, prompt], separators=(",", ":"))[:-1] + ",["
            derived = [derive_seed(ref.key, prompt, variation) for variation in variations]  # shared by the point
            prefix = default_name(ref, "")  # the default name: this, then the id
            for explicit, params, head, tail, extra in points:
                start, end = id_start + head, tail + _extra_text(extra, mask) + id_end  # the same for each variation
                for variation in variations:
                    seed = derived[variation] if explicit is None else explicit + variation
                    item_id = sha256((start + str(seed) + end).encode()).hexdigest()[:ID_CHARS]
                    total += 1
                    if item_id in items:
                        if row is not None and items[item_id].row != row:
                            merged.setdefault((items[item_id].row, row), items[item_id].variation)
                        continue
                    item = items[item_id] = _work_item(
                        job_name, item_id, ref, prompt, explicit is None, output, mask, variation, len(items), row,
                        prefix + item_id, seed, params)  # fmt: skip
                    if name_of is not None:
                        _SET_NAME(item, name_of(item))
    rows = tuple((first, variation, later) for (first, later), variation in merged.items())
    return JobPlan(job.name, tuple(items.values()), total - len(items), job.keep_sources, rows, job.contact_sheets)


def _item_builder():
    """_work_item: a WorkItem made without its frozen __init__'s object.__setattr__ calls (a third of planning's
    time at 100,000 items), each slot set by its own setter (frozen dataclasses refuse setattr; a slotted item is a
    third the size of one with a dict), one line each, as dataclasses writes its own __init__: a loop over the
    setters costs as much again. There is no __post_init__ to skip; the instance is the same frozen, comparable
    WorkItem. `params`: the axes' values in axis_names() order, the seed among them replaced by `seed`."""
    # the arguments, in this order, then `params`
    fields = ("job", "item_id", "source", "prompt", "seed_derived", "output", "mask", "variation", "index", "row",
              "name", "seed")  # fmt: skip
    axes_set = [(at, name) for at, name in enumerate(axis_names()) if name != "seed"]
    # numbered names (setter s<n>, argument a<n>): no field or parameter name can clash with the code's own
    lines = [f"    s{n}(item, a{n})" for n in range(len(fields))]
    lines += [f"    s{len(fields) + k}(item, params[{at}])" for k, (at, _) in enumerate(axes_set)]
    arguments = ", ".join(f"a{n}" for n in range(len(fields)))
    source = f"def _work_item({arguments}, params):\n    item = new(WorkItem)\n" + "\n".join(lines)
    setters = [getattr(WorkItem, name).__set__ for name in [*fields, *(name for _, name in axes_set)]]
    scope = {"new": object.__new__, "WorkItem": WorkItem, **{f"s{n}": setter for n, setter in enumerate(setters)}}
    exec(source + "\n    return item\n", scope)  # noqa: S102 - code built from the numbered names above only
    return scope["_work_item"]


_work_item = _item_builder()
_SET_NAME = WorkItem.name.__set__


def make_item(
    job: str,
    ref: SourceRef,
    prompt: str,
    params: dict,
    pipeline_key: str,
    variation: int = 0,
    mask: SourceRef | None = None,
) -> WorkItem:
    """One item: the reference definition of its id and seed (plan_jobs builds the same, faster). The id hashes
    the parameters hashed at every value, then, only where there is any, what else tells the item apart: the
    others off their default, and its mask (so an item without either keeps the id it always had)."""
    params = {**{p.name: p.default_for() for p in axes()}, **params}
    seed_derived = params["seed"] is None
    seed = derive_seed(ref.key, prompt, variation) if seed_derived else params["seed"] + variation
    params = {**params, "seed": seed}
    hashed = [params[p.name] for p in hashed_axes(True)]
    identity = json.dumps([ref.key, ref.fingerprint, prompt, hashed], separators=(",", ":"))[:-2]
    identity += _extra_text(off_default(params), mask) + "]," + json.dumps(pipeline_key) + "]"
    item_id = hashlib.sha256(identity.encode()).hexdigest()[:ID_CHARS]
    return WorkItem(
        job=job, item_id=item_id, source=ref, prompt=prompt, seed_derived=seed_derived, variation=variation,
        mask=mask, **params,
    )  # fmt: skip


def off_default(params: dict) -> dict:
    """The parameters hashed only off their default that are off it."""
    return {p.name: params[p.name] for p in hashed_axes(False) if params[p.name] != p.default_for()}


def _extra_text(extra: dict, mask: SourceRef | None) -> str:
    """What an item's id hashes after its parameter list ("" for an item with no mask and nothing off default)."""
    if mask is not None:
        extra = {**extra, "mask": [mask.key, mask.fingerprint]}
    return "," + json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else ""


def derive_seed(source_key: str, prompt: str, variation: int = 0) -> int:
    """Default seed policy: a 32-bit seed from the source and the prompt only (not the file's timestamp, not
    strength, steps, guidance or size), so the cells of a sweep share their noise, as in an X/Y plot, and every
    run gets the same noise. Variation 0 hashes exactly what a single seed always hashed."""
    return _seed_of(json.dumps([source_key, prompt, variation] if variation else [source_key, prompt]))


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def grid_axes(job: JobSpec) -> dict[str, list]:
    """The swept axes of a job (those with more than one value) and their values, for `batch-edit plan`."""
    axes: dict[str, list] = {"sources": [], "prompts": [], **{name: [] for name in axis_names()}}
    for grid in job.grids:
        axes["sources"].extend(grid.sources)
        axes["prompts"].extend(grid.prompts)
        for name in axis_names():
            axes[name].extend(getattr(grid, name))
    axes["sources"] = source_names(axes["sources"])
    distinct = {name: list(dict.fromkeys(values)) for name, values in axes.items()}
    return {name: values for name, values in distinct.items() if len(values) > 1}


def source_names(refs: list[SourceRef]) -> list[str]:
    """Each source once, by its stem; sources sharing a stem (cat.jpg and cat.png, a/cat.jpg and b/cat.jpg) by
    the shortest end of their path that tells them apart (a URL whole)."""
    refs = list({ref.key: ref for ref in refs}.values())
    stems = Counter(ref.stem for ref in refs)
    names = {ref.key: ref.stem for ref in refs}
    shared, depth = [ref for ref in refs if stems[ref.stem] > 1], 1
    while shared:  # each pass names those whose path's last `depth` parts are theirs alone; a whole key always is
        tails = {ref.key: _path_end(ref, depth) for ref in shared}
        taken = Counter(tails.values())
        names.update((key, tail) for key, tail in tails.items() if taken[tail] == 1)
        shared, depth = [ref for ref in shared if taken[tails[ref.key]] > 1], depth + 1
    return [names[ref.key] for ref in refs]


def _path_end(ref: SourceRef, depth: int) -> str:
    parts = PurePosixPath(ref.key).parts
    return ref.key if ref.is_url or depth >= len(parts) else str(PurePosixPath(*parts[-depth:]))
