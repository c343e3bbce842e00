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
from .local_files import open_regular
from .manifest import JobSpec
from .masks import is_missing
from .parameters import axis_names
from .pipeline_config import PipelineConfig
from .source_decoding import SourceError, open_image
from .sources import SourceRef, fit_size


def resolved_folders(manifests: list[Path]) -> list[tuple[Path, Path]]:
    """Each manifest with the folder its relative paths resolve against (its own, not the working folder)."""
    return [(manifest, Path(os.path.abspath(manifest)).parent) for manifest in manifests]


def missing_sources(job: JobSpec) -> tuple[list[str], int]:
    """The local source files of a job that do not exist, and how many distinct sources the job has."""
    refs = list(dict.fromkeys(ref for grid in job.grids for ref in grid.sources))
    return [ref.key for ref in refs if not ref.is_url and not os.path.exists(ref.key)], len(refs)


def job_folders(names: list[str], output_root: Path) -> dict[str, str]:
    """Each job's output folder (absolute) -> its name."""
    return {os.path.abspath(Path(output_root) / name): name for name in names}


def waits_for(source: SourceRef, own: str, folders: dict[str, str]) -> str | None:
    """The job of this run (`folders`: job_folders) whose results the source stands for: that job's folder as a
    whole, or a file in it, where it is no file yet. Sources are listed when a run starts, so a job folder that
    did not exist then, or held no results yet, stands as itself (one ref) and gives this run nothing to edit.
    None for any other source."""
    if source.is_url or os.path.isfile(source.key):
        return None
    path = os.path.abspath(source.key)
    other = folders.get(path) or folders.get(os.path.dirname(path))
    return other if other != own else None


def unmade_job_folders(job: JobSpec, jobs: list[JobSpec], output_root: Path) -> dict[str, str]:
    """The job's sources that are another job's folder of this run without results yet (or a result in it not
    made yet), each with that job's name: their items wait for a run after the one that makes them."""
    folders = job_folders([other.name for other in jobs], output_root)
    refs = dict.fromkeys(ref for grid in job.grids for ref in grid.sources)
    return {ref.key: other for ref in refs if (other := waits_for(ref, job.name, folders)) is not None}


def unfilled_job_folders(job: JobSpec, jobs: list[JobSpec], output_root: Path) -> list[str]:
    """The job's sources that stand for a job folder holding no results (a folder, or a folder or glob naming
    one under the output root that matched nothing), of no job of this run: nothing will fill it."""
    unmade = unmade_job_folders(job, jobs, output_root)
    root = os.path.abspath(output_root)
    refs = dict.fromkeys(ref for grid in job.grids for ref in grid.sources)
    return [
        ref.key
        for ref in refs
        if not ref.is_url
        and ref.key not in unmade
        and (os.path.isdir(ref.key) or os.path.dirname(os.path.abspath(ref.key)) == root)
    ]


def later_results_warning(job: str, items, folders: dict[str, str], pending: dict[str, int]) -> str | None:
    """Where a job edits results of another job of this run that has items left to make (`pending`: per job),
    a warning that those new results wait for the next run (sources are listed when a run starts); else None."""
    inside = {  # the jobs whose folders this job's sources lie in
        other
        for item in items
        if not item.source.is_url
        and (other := folders.get(os.path.dirname(os.path.abspath(item.source.key)))) not in (None, job)
    }
    makers = sorted(other for other in inside if pending.get(other))
    if not makers:
        return None
    shown = ", ".join(f"up to {pending[other]} for job {other}" for other in makers)
    return (
        f"job {job}: edits the results its source folders held when this run started: what this run adds to "
        f"them ({shown}) is edited by the next run"
    )


def unmade_folder_warning(job: str, source: str, other: str) -> str:
    what = (
        f"is job {other}'s folder in this run, which holds no results yet"
        if os.path.basename(os.path.abspath(source)) == other
        else f"is a result of job {other} in this run, not made yet"
    )
    return (
        f"job {job}: source {source} {what}: a job reads another's results only once they exist, so this run "
        f"leaves job {job}'s items from it for the next run"
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


# What tells two items apart besides the size asked: items equal in all of these and fitted to one size are one image
_BESIDES_SIZE = tuple(name for name in axis_names() if name not in ("width", "height"))
_ORIENTATION, _TURNED = 0x0112, (5, 6, 7, 8)  # EXIF orientations that swap width and height


def fit_duplicates(job: str, items) -> str | None:
    """One warning for a job whose `resize: fit` gives two sizes asked the same result size for a source (same
    seed, prompt and settings: the same image twice under two ids), or None. Sources are measured from their
    headers (nothing decoded), and only those swept over sizes; a URL's size is unknown before it is fetched."""
    swept: dict[str, list[list[tuple[int, int]]]] = {}  # source -> the sizes asked of otherwise equal items
    for key, sizes in _sizes_asked(items).items():
        if len(sizes) > 1:
            swept.setdefault(key[0], []).append(sorted(sizes))
    found = []  # (source, the sizes asked, the size they fit to)
    for source, groups in swept.items():
        measured = _oriented_size(source)
        if measured is not None and (same := _same_fit(measured, groups)):
            found.append((source, *same))
    if not found:
        return None
    source, asked, result = found[0]
    more = f" (and {len(found) - 1} more source(s))" if len(found) > 1 else ""
    shown = " and ".join(f"{width}x{height}" for width, height in asked)
    return (
        f"job {job}: resize fit makes {shown} one size, {result[0]}x{result[1]}, for {Path(source).name}{more}, "
        "with the same seed: those items make the same image under different ids; ask for sizes of other areas, "
        "or another resize mode"
    )


def _same_fit(measured: tuple[int, int], groups) -> tuple[list, tuple[int, int]] | None:
    """The first sizes asked (of one group) that fit a source of the measured size to one size, and that size."""
    for group in groups:
        asked_for: dict[tuple[int, int], list] = {}
        for size in group:
            asked_for.setdefault(fit_size(*measured, *size, "fit"), []).append(size)
        for result, asked in asked_for.items():
            if len(asked) > 1:
                return asked, result
    return None


def _sizes_asked(items) -> dict[tuple, set[tuple[int, int]]]:
    """The sizes asked of each set of `fit` items that differ only in them (source, prompt, mask, output, seed...)."""
    sizes: dict[tuple, set[tuple[int, int]]] = {}
    for item in items:
        if item.resize == "fit" and not item.source.is_url:
            mask = item.mask.key if item.mask is not None else None
            key = (item.source.key, item.prompt, mask, item.output, *(getattr(item, name) for name in _BESIDES_SIZE))
            sizes.setdefault(key, set()).add((item.width, item.height))
    return sizes


def _oriented_size(path: str) -> tuple[int, int] | None:
    """A local image's size as it is fitted (camera rotation applied), read from its header; None where it cannot
    be read (loading the item says why)."""
    try:
        with os.fdopen(open_regular(Path(path)), "rb") as handle, open_image(handle) as img:
            width, height = img.size
            turned = img.getexif().get(_ORIENTATION) in _TURNED
    except (SourceError, OSError, ValueError, SyntaxError, EOFError):
        return None
    return (height, width) if turned else (width, height)
