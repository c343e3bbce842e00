"""What `batch-edit plan` checks before a long run, without loading a model: source files that are missing,
where relative paths resolved, a pipeline config this machine cannot run (no GPU, no local model), and jobs that
start from pure noise."""

from __future__ import annotations

import glob
import itertools
import os
import sys
from pathlib import Path

from .grid_checks import denoising_steps
from .manifest import JobSpec
from .masks import is_missing
from .pipeline_config import PipelineConfig


def resolved_folders(manifests: list[Path]) -> list[tuple[Path, Path]]:
    """Each manifest with the folder its relative paths resolve against (its own, not the working folder)."""
    return [(manifest, Path(os.path.abspath(manifest)).parent) for manifest in manifests]


def missing_sources(job: JobSpec) -> tuple[list[str], int]:
    """The local source files of a job that do not exist, and how many distinct sources the job has."""
    refs = list(dict.fromkeys(ref for grid in job.grids for ref in grid.sources))
    return [ref.key for ref in refs if not ref.is_url and not os.path.exists(ref.key)], len(refs)


def unmade_job_folders(job: JobSpec, jobs: list[JobSpec], output_root: Path) -> dict[str, str]:
    """The job's sources that are another job's folder of this run not made yet, each with that job's name:
    sources are listed when the run is planned, so such a folder gives nothing to this run (its items wait)."""
    folders = {os.path.abspath(Path(output_root) / other.name): other.name for other in jobs if other is not job}
    refs = dict.fromkeys(ref for grid in job.grids for ref in grid.sources)
    return {
        ref.key: folders[os.path.abspath(ref.key)]
        for ref in refs
        if not ref.is_url and os.path.abspath(ref.key) in folders and not os.path.exists(ref.key)
    }


def unmade_folder_warning(job: str, source: str, other: str) -> str:
    return (
        f"job {job}: source {source} is job {other}'s folder in this run, which does not exist yet: a job reads "
        f"another's results only once they exist, so this run leaves job {job}'s items from it for the next run"
    )


def sources_without_mask(job: JobSpec) -> list[str]:
    """The sources of a masked job whose mask file is not there (each of their items would fail at load)."""
    pairs = dict.fromkeys(pair for grid in job.grids for pair in zip(grid.sources, grid.masks))
    return [source.key for source, mask in pairs if is_missing(mask)]


# torchao_type auto waits on a GPU to resolve (fp8 or int8): without one, `plan`'s item ids cannot be those a run makes
UNRESOLVED = "torchao_type auto stays unresolved, so items a run on a GPU has done are not counted as done"


def plan_warnings(config: PipelineConfig, jobs: list[JobSpec]) -> list[str]:
    warnings = []
    cuda = _cuda_missing(config.device)
    if cuda:
        unresolved = f"; {UNRESOLVED}" if config.has_device_choices else ""
        warnings.append(
            f"the pipeline config asks for device '{config.device}' but {cuda}: `batch-edit run` would refuse it "
            f"here (use a config with 'device: cpu', or run on a machine with a CUDA GPU){unresolved}"
        )
    missing = [*config.missing_paths(), *config.missing_loras()]
    warnings.extend(f"{problem}: `batch-edit run` would refuse it here" for problem in missing)
    for job in jobs:
        pairs = {
            (steps, strength)
            for grid in job.grids
            for steps, strength in itertools.product(grid.num_inference_steps, grid.strength)
            if strength is not None  # fill and kontext take no strength
        }
        noisy = sorted(pair for pair in pairs if denoising_steps(*pair) == pair[0])
        if noisy:
            shown = ", ".join(f"strength {strength} with {steps} steps" for steps, strength in noisy[:4])
            more = f" and {len(noisy) - 4} more" if len(noisy) > 4 else ""
            warnings.append(
                f"job {job.name}: {shown}{more} start(s) from pure noise (every step runs, so the source image "
                "only sets the size): use a smaller strength or more steps to keep its content"
            )
    return warnings


def _cuda_missing(device: str) -> str | None:
    """Why no CUDA GPU is visible, or None. Without importing torch (seconds) unless it is imported already."""
    if not device.startswith("cuda"):
        return None
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    if "torch" in sys.modules:
        return None if sys.modules["torch"].cuda.is_available() else "torch sees no CUDA GPU"
    if not os.path.exists("/proc/driver/nvidia/version") and not glob.glob("/dev/nvidia[0-9]*"):
        return "no NVIDIA GPU driver was found"
    return None
