"""What `batch-edit plan` checks before a long run, without loading a model: source files that are missing,
where relative paths resolved, a pipeline config this machine cannot run (no GPU, no local model), jobs that start
from pure noise or sweep strengths that run the same steps, and JPEG items whose metadata would be over what a JPEG
holds."""

from __future__ import annotations

import glob
import itertools
import os
import sys
from pathlib import Path

from .grid_checks import denoising_steps
from .local_files import missing_reason, open_regular
from .manifest import JobSpec
from .masks import is_missing
from .parameters import axis_names
from .pipeline_config import PipelineConfig
from .source_decoding import SourceError, open_image
from .source_folders import shown_entries
from .sources import fit_size


def resolved_folders(manifests: list[Path]) -> list[tuple[Path, Path]]:
    """Each manifest with the folder its relative paths resolve against (its own, not the working folder)."""
    return [(manifest, Path(os.path.abspath(manifest)).parent) for manifest in manifests]


def missing_sources(job: JobSpec) -> tuple[dict[str, str], int]:
    """The local source files of a job that cannot be looked at, each with why ("not found", "a link loop",
    "Permission denied"), and how many distinct sources the job has."""
    refs = list(dict.fromkeys(ref for grid in job.grids for ref in grid.sources))
    reasons = {ref.key: missing_reason(ref.key) for ref in refs if not ref.is_url}
    return {key: reason for key, reason in reasons.items() if reason is not None}, len(refs)


def sources_without_mask(job: JobSpec, needed: set[tuple[str, str]] | None = None) -> list[str]:
    """The sources of a masked job whose mask file is not there (each of their items would fail at load); with
    `needed`, only those of the (source, mask) pairs that items still to run need."""
    return [
        source.key for source, mask in _without_mask_file(job) if needed is None or (source.key, mask.key) in needed
    ]


def gone_masks(job: JobSpec, needed: set[tuple[str, str]]) -> list[str]:
    """The mask files not there that no item still to run needs (archived once their items were done)."""
    gone = (mask.key for source, mask in _without_mask_file(job) if (source.key, mask.key) not in needed)
    return list(dict.fromkeys(gone))


def _without_mask_file(job: JobSpec) -> list[tuple]:
    pairs = dict.fromkeys(pair for grid in job.grids for pair in zip(grid.sources, grid.masks))
    return [(source, mask) for source, mask in pairs if is_missing(mask)]


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
    return warnings + job_warnings(jobs)


def job_warnings(jobs: list[JobSpec]) -> list[str]:
    """What `plan` and `run` both warn of in the jobs as written, before anything is planned."""
    return noise_warnings(jobs) + same_start_warnings(jobs) + exclude_warnings(jobs) + unlisted_warnings(jobs)


def unlisted_warnings(jobs: list[JobSpec]) -> list[str]:
    """A job's folders and globs holding names with an image's suffix that are no regular file (a link left
    pointing at a deleted photo, a FIFO): no item is made of them, and the user is told which."""
    warnings = []
    for job in jobs:
        odd = sorted({entry for grid in job.grids for entry in grid.not_regular})
        if odd:
            warnings.append(
                f"job {job.name}: left out {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} of its folders and globs "
                f"with an image's name that {'is not a regular file' if len(odd) == 1 else 'are not regular files'}: "
                f"{shown_entries(odd)}"
            )
    return warnings


def exclude_warnings(jobs: list[JobSpec]) -> list[str]:
    """A job's `exclude` patterns that leave out no image of its folders and globs: a typo, or a pattern
    relative to another folder than the one it applies in."""
    warnings = []
    for job in jobs:
        unused = list(dict.fromkeys(p for grid in job.grids for p in grid.exclude_unused))
        if unused:
            warnings.append(
                f"job {job.name}: exclude pattern(s) {', '.join(repr(p) for p in unused)} leave out no image of "
                "its folders and globs (a name matches a file or folder at any depth; a path with / starts at "
                "each folder or glob)"
            )
    return warnings


def noise_warnings(jobs: list[JobSpec]) -> list[str]:
    """One warning per job with (steps, strength) pairs that leave no step out: diffusers then starts from pure
    noise, the source image setting only the size (4 steps at strength 0.9: int(4 - 3.6) = 0 steps skipped)."""
    warnings = []
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


def same_start_warnings(jobs: list[JobSpec]) -> list[str]:
    """One warning per job, steps and step count where a grid sweeps strengths that run the same denoising steps
    (4 steps at 0.3 and 0.5: both run the last 2): items differing only in those strengths are one image. Strengths
    running every step are left to `noise_warnings`, which names them (they too are one image: pure noise)."""
    warnings = []
    for job in jobs:
        same: dict[tuple[int, int], set[float]] = {}  # (steps, steps run) -> strengths of one grid sharing them
        for grid in job.grids:
            strengths = {strength for strength in grid.strength if strength is not None}  # fill, kontext: none
            for steps in set(grid.num_inference_steps):
                runs: dict[int, set[float]] = {}
                for strength in strengths:
                    runs.setdefault(denoising_steps(steps, strength), set()).add(strength)
                for ran, shared in runs.items():
                    if len(shared) > 1 and 0 < ran < steps:
                        same.setdefault((steps, ran), set()).update(shared)
        for (steps, ran), shared in sorted(same.items()):
            listed = sorted(shared)
            more = [f"{len(listed) - 4} more"] if len(listed) > 4 else []
            shown = [str(strength) for strength in listed[:4]] + more
            last = "the last step" if ran == 1 else f"the last {ran} steps"
            warnings.append(
                f"job {job.name}: strengths {', '.join(shown[:-1])} and {shown[-1]} at {steps} steps "
                f"{'both' if len(listed) == 2 else 'all'} run {last} (the pipeline starts at step "
                f"int(steps - steps * strength)), so items differing only in them make the same image: use more "
                "steps to tell them apart, or keep one of them"
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


# An upper bound of the EXIF bytes one character adds: a prompt's (12 in the record's ASCII JSON, 4 in the UTF-16
# parameters text, a "Negative prompt:" one more), a source or mask path's (12 in each); and of what the rest of two
# items' records may differ by (numbers, file names, a URL's sha256)
_PROMPT_CHAR, _PATH_CHAR, _REST_SLACK = 17, 26, 2048


def jpeg_metadata_warnings(config: PipelineConfig, plans, pending: dict[str, list], folders: dict[str, str]):
    """One warning per JPEG job with pending items whose result would carry more EXIF than a JPEG holds (a very
    long prompt of emoji, a long path): the run fails them at stage `encode`. The EXIF is worked out as the encoder
    is handed it (`result_files.planned_exif_length`), only for items a cheap bound cannot clear."""
    from .chain_counts import stand_in
    from .formats import JPEG_EXIF_MOST
    from .result_files import pipeline_fields, planned_exif_length

    pipeline, warnings, standing = None, [], {}
    for plan in plans:
        items = []
        for item in pending[plan.name]:
            if item.output.format != "jpeg":
                continue
            if (stands := standing.get(id(item.source))) is None:  # the items of one source share its ref
                stands = standing[id(item.source)] = bool(stand_in(item.source, folders))
            if not stands:  # a stand-in for a folder to fill: no result of its own
                items.append(item)
        if not items:
            continue
        pipeline = pipeline or pipeline_fields(config)
        first = items[0]
        rest = planned_exif_length(first, pipeline, plan.keep_sources, widest=True) - _chars(first)[0]
        over = []  # (item, widest, narrowest)
        for item in items:
            prompt, paths = _chars(item)[1:]
            if rest + _REST_SLACK + _PROMPT_CHAR * prompt + _PATH_CHAR * paths <= JPEG_EXIF_MOST:
                continue
            widest = planned_exif_length(item, pipeline, plan.keep_sources, widest=True)
            if widest > JPEG_EXIF_MOST:
                over.append((item, widest, planned_exif_length(item, pipeline, plan.keep_sources, widest=False)))
        if over:
            warnings.append(_too_much_exif(plan.name, over, JPEG_EXIF_MOST))
    return warnings


def _chars(item) -> tuple[int, int, int]:
    """The characters of the item's prompt and paths together, of its prompt, and of its source and mask paths."""
    prompt, paths = len(item.prompt), len(item.source.key) + (len(item.mask.key) if item.mask is not None else 0)
    return prompt + paths, prompt, paths


def _too_much_exif(job: str, over: list, most: int) -> str:
    item, widest, narrowest = over[0]
    fails = all(low > most for _, _, low in over)
    size = f"{narrowest:,}" if narrowest == widest else f"{narrowest:,} to {widest:,}"
    texts = [("prompt", item.prompt), ("source path", item.source.key)]
    texts += [("mask path", item.mask.key)] if item.mask is not None else []
    taken, field, text = max((_text_bytes(text), field, text) for field, text in texts)
    verb = "would fail" if fails else "may fail"
    return (
        f"job {job}: {len(over)} item(s) {verb} at stage encode: the metadata (EXIF) a JPEG result carries "
        f"would be over the {most:,} bytes a JPEG holds (first: item {item.item_id}, source {item.source.key}: "
        f"{size} bytes, about {taken:,} of them for its {field} of {len(text):,} characters): write the job as "
        f"format png or webp (no such limit), or shorten its {field}"
    )


def _text_bytes(text: str) -> int:
    """About the EXIF bytes a text takes: in the record's ASCII-only JSON and as UTF-16 in the parameters text."""
    import json

    return len(json.dumps(text)) - 2 + len(text.encode("utf-16-be"))


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
