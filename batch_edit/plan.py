"""Pure expansion of job specs into WorkItems, each with a stable id, a seed and an output name."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass

from .manifest import PARAMETERS, JobSpec, render_prompt
from .sources import SourceRef

ID_CHARS = 16  # 64 bits of sha256: collisions are out of reach for any realistic run


@dataclass(frozen=True)
class WorkItem:
    job: str
    item_id: str
    source: SourceRef
    prompt: str
    strength: float
    num_inference_steps: int
    guidance_scale: float
    seed: int
    seed_derived: bool
    width: int
    height: int
    resize: str

    @property
    def output_name(self) -> str:
        """Human-readable and collision-free: the source's stem, then the item id."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", self.source.stem).strip("._-")[:48] or "image"
        return f"{stem}-{self.item_id}.png"

    @property
    def batch_key(self) -> tuple:
        """Items that can share one pipeline call (the fitted size is only known after loading)."""
        return (self.num_inference_steps, self.strength, self.guidance_scale)


@dataclass(frozen=True)
class JobPlan:
    name: str
    items: tuple[WorkItem, ...]
    duplicates: int  # identical items in the manifest, run once
    keep_sources: bool = False


def plan_jobs(jobs: list[JobSpec], pipeline_identity: dict) -> list[JobPlan]:
    pipeline_key = json.dumps(pipeline_identity, sort_keys=True)
    return [_plan_job(job, pipeline_key) for job in jobs]


def _plan_job(job: JobSpec, pipeline_key: str) -> JobPlan:
    items: dict[str, WorkItem] = {}
    total = 0
    for grid in job.grids:
        axes = [getattr(grid, name) for name in PARAMETERS]
        for ref, template in itertools.product(grid.sources, grid.prompts):
            prompt = render_prompt(template, ref)
            for values in itertools.product(*axes):
                item = make_item(job.name, ref, prompt, dict(zip(PARAMETERS, values)), pipeline_key)
                items.setdefault(item.item_id, item)
                total += 1
    return JobPlan(job.name, tuple(items.values()), total - len(items), job.keep_sources)


def make_item(job: str, ref: SourceRef, prompt: str, params: dict, pipeline_key: str) -> WorkItem:
    seed_derived = params["seed"] is None
    if seed_derived:
        params = {**params, "seed": derive_seed(ref.key, prompt, params)}
    identity = json.dumps(
        [ref.key, ref.fingerprint, prompt, [params[name] for name in PARAMETERS], pipeline_key],
        separators=(",", ":"),
    )
    item_id = hashlib.sha256(identity.encode()).hexdigest()[:ID_CHARS]
    return WorkItem(job=job, item_id=item_id, source=ref, prompt=prompt, seed_derived=seed_derived, **params)


def derive_seed(source_key: str, prompt: str, params: dict) -> int:
    """Default seed policy: a 32-bit seed from what the item is (not from the file's timestamp), so a
    manifest without seeds gives every item its own noise and the same noise on every run."""
    text = json.dumps([source_key, prompt, [params[name] for name in PARAMETERS if name != "seed"]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def grid_axes(job: JobSpec) -> dict[str, list]:
    """The swept axes of a job (those with more than one value) and their values, for `batch-edit plan`."""
    axes: dict[str, list] = {"sources": [], "prompts": [], **{name: [] for name in PARAMETERS}}
    for grid in job.grids:
        axes["sources"].extend(ref.stem for ref in grid.sources)
        axes["prompts"].extend(grid.prompts)
        for name in PARAMETERS:
            axes[name].extend(getattr(grid, name))
    distinct = {name: list(dict.fromkeys(values)) for name, values in axes.items()}
    return {name: values for name, values in distinct.items() if len(values) > 1}
