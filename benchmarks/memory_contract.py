"""The memory contract: a shipped pipeline config run on the FLUX.1-dev architecture as if on a smaller card.

`gpu_throughput.py --config configs/X.yaml --memory-cap-gib 22` caps this process's share of the GPU with
`torch.cuda.set_per_process_memory_fraction` once the pipeline is loaded (on the smaller card quanto quantizes on
the CPU, so loading there needs no more GPU memory than the resident weights; here the random weights are built
on the GPU first, for speed, and the cap then covers every pipeline call), runs its items through the real runner
and records ok or out-of-memory, the peak, and s/image, one row per (config, cap) in
benchmarks/results/gpu_memory.md. Rows of earlier runs (other configs, other GPUs) stay; a new row replaces the one
of the same config and cap. The cap leaves out the CUDA context (about 0.5 GiB), which a real card also holds:
cap a 24 GB card (about 22 GiB usable) at 22, a 16 GB one at 15, a 12 GB one at 11.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from phase_memory import MEMORY_COLUMNS, memory_cells  # beside this script

NOT_MEASURED = "not yet measured"
COLUMNS = [
    "config", "cap GiB", "status", "peak GiB", "resident GiB", "batch", "work", "s/image (steady median)",
    "load s", "first image s (from process start)", *MEMORY_COLUMNS, "GPU", "date", "commit",
]  # fmt: skip
# What each shipped CUDA config is for: the cap it must pass under (about what that card leaves usable).
SHIPPED_CAPS = {
    "flux1-dev-24gb.yaml": 22.0,
    "flux1-dev-16gb.yaml": 15.0,
    "flux1-dev-12gb.yaml": 11.0,
    "flux1-dev-80gb-bf16.yaml": 78.0,
    "flux1-dev-hopper-fast.yaml": 78.0,
    "flux1-dev-inpaint-24gb.yaml": 22.0,
    "flux1-fill-dev-24gb.yaml": 22.0,
    "flux1-kontext-dev-24gb.yaml": 22.0,
    "flux1-schnell.yaml": 22.0,
}


class CapError(ValueError):
    """A memory cap that cannot be applied here (no CUDA GPU, or more than the card has)."""


def memory_fraction(cap_gib: float, total_bytes: int) -> float:
    """The share of the card that leaves `cap_gib` GiB to this process."""
    total_gib = total_bytes / 2**30
    if cap_gib <= 0:
        raise CapError(f"--memory-cap-gib must be positive (got {cap_gib:g})")
    if cap_gib > total_gib:
        raise CapError(f"--memory-cap-gib {cap_gib:g} is more than this GPU's {total_gib:.1f} GiB")
    return cap_gib * 2**30 / total_bytes


def apply_memory_cap(cap_gib: float, device: str, torch) -> float:
    """Cap the caching allocator at `cap_gib` GiB of `device`; the cache is emptied first so that memory freed
    while loading does not count. Returns the fraction set."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise CapError(f"--memory-cap-gib needs a CUDA GPU (device {device}, torch {torch.__version__})")
    index = torch.device(device).index  # set_per_process_memory_fraction wants an index: "cuda" has none
    index = torch.cuda.current_device() if index is None else index
    fraction = memory_fraction(cap_gib, torch.cuda.get_device_properties(index).total_memory)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def run_config(path: Path, overrides: tuple[str, ...], *, reduced: bool, scratch: Path, cache: Path | None):
    """The pipeline config of `path` (with `key=value` overrides, validated like the file itself), pointed at the
    benchmark's random-weight model. Reduced (CPU) form: the tiny model in float32, no offload or compile."""
    import yaml
    from pydantic import ValidationError

    from batch_edit.errors import ConfigError
    from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
    from batch_edit.validation import describe_validation_error

    config = load_pipeline_config(path)
    if overrides:
        data = config.model_dump(mode="json")
        for override in overrides:
            key, equals, value = override.partition("=")
            if not equals or key not in PipelineConfig.model_fields:
                raise ConfigError(f"--set {override!r} is not KEY=VALUE with a pipeline config key")
            data[key] = yaml.safe_load(value)
        try:
            config = PipelineConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError("; ".join(describe_validation_error(exc, f"{path} with --set", PipelineConfig))) from None
    if config.is_single_file:
        raise ConfigError(f"{path}: the benchmark builds random weights; a single-file model has its own")
    update = dict(
        model=f"{'tiny random FLUX' if reduced else 'FLUX.1-dev architecture, random weights'} ({label(path, overrides)})",
        local_files_only=True,
        compile_cache_dir=str(cache or scratch / "inductor"),
    )  # fmt: skip
    if reduced:
        update.update(device="cpu", dtype="float32", offload="none", compile=False)
    return config.model_copy(update=update)


def label(path: Path, overrides: tuple[str, ...]) -> str:
    return " ".join([path.name, *overrides])


def status_of(row_status: str) -> str:
    """`ok`, or `out-of-memory` (with what ran out) whenever memory ran out anywhere, or the error as it was."""
    lowered = row_status.lower()
    if "outofmemory" in lowered or "out of memory" in lowered:
        return f"out-of-memory ({row_status})"
    return row_status


def cells(row, cap_gib: float | None, gpu: str, commit: str, work: str = "n/a") -> dict[str, str]:
    """A measured row's cells; `work`: what each item asked (task, size, steps, strength, guidance, masks)."""
    from throughput_report import _num  # beside this script; imported here: it imports this module

    return dict(zip(COLUMNS, [
        row.backend, "none" if cap_gib is None else f"{cap_gib:g}", status_of(row.status).replace("|", "/"),
        _num(row.peak_gib, ".1f"), _num(row.resident_gib, ".1f"), str(row.batch), work, _num(row.s_per_image),
        _num(row.load_s), _num(row.first_image_s), *memory_cells(row.phases).values(), gpu,
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), commit,
    ]))  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0]) if lines else []
    # A table written before a column was added reads with "n/a" there, so a new row keeps its measured ones.
    if header[:2] != COLUMNS[:2] or not set(header) <= set(COLUMNS):
        return []
    return [{**dict.fromkeys(COLUMNS, "n/a"), **dict(zip(header, split(line)))} for line in lines[1:]]


def record(path: Path, new: dict[str, str], reduced: bool = False) -> None:
    """Write `new` into the table at `path`, replacing the row of the same config and cap (a placeholder or an
    older run), keeping all others."""
    rows = read_rows(path) or ([] if reduced else placeholder_rows())
    key = (new["config"], new["cap GiB"])
    rows = [row for row in rows if (row["config"], row["cap GiB"]) != key] + [new]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(rows, reduced))


def placeholder_rows() -> list[dict[str, str]]:
    return [
        {**dict.fromkeys(COLUMNS, "n/a"), "config": name, "cap GiB": f"{cap:g}", "status": NOT_MEASURED}
        for name, cap in SHIPPED_CAPS.items()
    ]


def render(rows: list[dict[str, str]], reduced: bool = False) -> str:
    title = (
        "REDUCED CPU FORM (tiny random model, 64x64, no cap): NOT GPU figures"
        if reduced
        else ("each shipped pipeline config under the memory of the card it is for")
    )
    lines = [
        f"# Memory contract: {title}",
        "",
        "FLUX.1's full-size architecture with random weights (FLUX.1-Fill-dev's transformer for the fill task, "
        "FLUX.1-dev's otherwise), each item as the row's `work` says (the task's steps and guidance; a strength "
        "where the task takes one; for inpaint and fill a mask per photo, white over its central half), the "
        "project's photos x 2 prompts through the real runner, "
        "this process capped at `cap GiB` of the GPU named in the row. Rows saying "
        f'"{NOT_MEASURED}" hold no figures: no GPU has run them yet. Written by',
        "`python benchmarks/gpu_throughput.py --config configs/X.yaml --memory-cap-gib N` (or all at once: "
        "`benchmarks/gpu_suite.sh`).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row.get(column, "n/a") for column in COLUMNS) + " |" for row in rows),
        "",
        "- `status`: ok, or out-of-memory (where memory ran out: a pipeline call, or loading/encoding prompts).",
        "- `peak GiB`: torch.cuda.max_memory_allocated over the pipeline calls; `resident GiB`: allocated once "
        "loaded (with offload, what stays on the GPU between calls).",
        "- `first image s`: from the start of the benchmark's process to the end of its first pipeline call "
        "(imports, building random weights, loading, a compile if any, one call).",
        "- `text enc GiB` ... `VAE dec GiB` (with `--phases`): what each phase adds above what was allocated when "
        "it began, the largest over its calls (text enc: the larger of CLIP and T5; denoise: one transformer step); "
        "n/a where not measured. With offload, a component's own weights moved on count in its phase.",
        "- The cap excludes the CUDA context (about 0.5 GiB); the caps are what each card leaves usable.",
    ]
    return "\n".join(lines) + "\n"
