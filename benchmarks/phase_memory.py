"""Where a pipeline's time and GPU memory go, phase by phase: text encoders, VAE encode, denoising, VAE decode.

`PhaseMeter.for_device(device).attach(pipe)` instruments a loaded diffusers FLUX pipeline without changing what
it computes, and `detach()` takes the instruments off again:

- the text encoders and the transformer through torch's module hooks (a pre-hook and an always-called forward
  hook). accelerate's offload replaces a module's `forward` on the instance and, under `offload: model`, puts
  back the original after every pipeline call (`maybe_free_model_hooks` removes and re-adds its hooks): a
  `forward` wrapped on the instance would be dropped after the first call, module hooks are not touched;
- the VAE's `encode` and `decode` wrapped on the instance around the bound methods, whose diffusers decorator
  (`apply_forward_hook`) looks the offload hook up at each call, so the VAE still moves on first (and the move
  counts in the phase, as it does on a card that offloads).

Per phase: calls, seconds (the device synchronised at both ends of each call: opt-in, for that reason), and on
CUDA the transient: the allocator's peak during a call minus what was allocated when it began, the maximum over
calls (the transformer runs once per denoising step). Phases may nest, or run outside pipeline calls (the engine
encodes prompts through its cache): each phase start resets the allocator's peak, so the meter folds the peak
into every open phase and into the run's own peak before each reset; an outer phase's peak still includes what
ran inside it, and `run_peak()` replaces torch.cuda.max_memory_allocated for the whole run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# phase -> how the tables name it
PHASES = {
    "text_encoder": "text encoder (CLIP)",
    "text_encoder_2": "text encoder 2 (T5)",
    "vae_encode": "VAE encode",
    "transformer": "denoise (transformer, once per step)",
    "vae_decode": "VAE decode",
}
HOOKED_MODULES = ("text_encoder", "text_encoder_2", "transformer")
# The memory table's phase columns -> the phases each one reports (the larger transient of the two encoders).
MEMORY_COLUMNS = {
    "text enc GiB": ("text_encoder", "text_encoder_2"),
    "VAE enc GiB": ("vae_encode",),
    "denoise GiB": ("transformer",),
    "VAE dec GiB": ("vae_decode",),
}
HISTORY_ENTRIES = 200_000  # alloc/free events kept (a ring buffer): several KB each, about one 1024x1024 call's
GIB = 2**30


class HistoryError(ValueError):
    """A CUDA memory history asked for where there is no CUDA GPU."""


@dataclass(frozen=True)
class MemoryReader:
    """The allocator's counters, in bytes (torch.cuda's; a fake in tests)."""

    allocated: Callable[[], int]
    peak: Callable[[], int]
    reset_peak: Callable[[], None]


def cuda_memory(device: str, torch) -> MemoryReader:
    return MemoryReader(
        allocated=lambda: torch.cuda.memory_allocated(device),
        peak=lambda: torch.cuda.max_memory_allocated(device),
        reset_peak=lambda: torch.cuda.reset_peak_memory_stats(device),
    )


@dataclass
class PhaseStats:
    calls: int = 0
    seconds: float = 0.0
    transient: int | None = None  # bytes: max over calls of (peak during the call - allocated at its start)
    peak: int | None = None  # bytes: max over calls of the peak during the call (absolute)


@dataclass
class _Open:
    name: str
    started: float
    allocated: int | None
    peak: int


class PhaseMeter:
    def __init__(self, memory: MemoryReader | None = None, synchronize=lambda: None, clock=time.perf_counter):
        self.memory, self._sync, self._clock = memory, synchronize, clock
        self.stats = {name: PhaseStats() for name in PHASES}
        self._open: list[_Open] = []
        self._run_peak = 0
        self._undo: list[Callable[[], None]] = []

    @classmethod
    def for_device(cls, device: str) -> PhaseMeter:
        """Memory and synchronisation on CUDA; on the CPU calls and seconds only."""
        import torch

        if device.startswith("cuda"):
            return cls(cuda_memory(device, torch), lambda: torch.cuda.synchronize(device))
        return cls()

    def begin(self, name: str) -> None:
        self._sync()
        allocated = None
        if self.memory:
            self._fold()
            self.memory.reset_peak()
            allocated = self.memory.allocated()
        self._open.append(_Open(name, self._clock(), allocated, allocated or 0))

    def end(self, name: str) -> None:
        self._sync()
        if self.memory:
            self._fold()
        # The innermost open phase of that name (an exception may have left an inner one of another open).
        index = max(i for i, phase in enumerate(self._open) if phase.name == name)
        phase = self._open.pop(index)
        stats = self.stats.setdefault(name, PhaseStats())
        stats.calls += 1
        stats.seconds += self._clock() - phase.started
        if phase.allocated is not None:
            stats.transient = max(stats.transient or 0, phase.peak - phase.allocated)
            stats.peak = max(stats.peak or 0, phase.peak)

    @contextmanager
    def phase(self, name: str):
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def _fold(self) -> None:
        """The peak since the last reset, into the run's peak and every open phase's, before it is lost."""
        peak = self.memory.peak()
        self._run_peak = max(self._run_peak, peak)
        for phase in self._open:
            phase.peak = max(phase.peak, peak)

    def run_peak(self) -> int | None:
        """The allocator's peak over the whole run (since its last reset before the meter's first phase)."""
        return None if self.memory is None else max(self._run_peak, self.memory.peak())

    def attach(self, pipe) -> PhaseMeter:
        for name in HOOKED_MODULES:
            module = getattr(pipe, name, None)
            if module is not None:
                self._hook_forward(name, module)
        self._wrap_method(pipe.vae, "encode", "vae_encode")
        self._wrap_method(pipe.vae, "decode", "vae_decode")
        return self

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _hook_forward(self, name: str, module) -> None:
        before = module.register_forward_pre_hook(lambda *_: self.begin(name))
        after = module.register_forward_hook(lambda *_: self.end(name), always_call=True)  # also when it raises
        self._undo += [before.remove, after.remove]

    def _wrap_method(self, owner, method: str, name: str) -> None:
        original = getattr(owner, method)  # bound, with diffusers' offload decorator inside
        had_own = method in owner.__dict__

        @functools.wraps(original)
        def measured(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        object.__setattr__(owner, method, measured)
        self._undo.append(
            lambda: object.__setattr__(owner, method, original) if had_own else owner.__dict__.pop(method, None)
        )


@contextmanager
def memory_history(path: Path | None, device: str):
    """torch.cuda's allocation history around the block, dumped to `path` as a snapshot at its end (an
    out-of-memory included) for pytorch.org/memory_viz. Nothing when `path` is None."""
    if path is None:
        yield
        return
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise HistoryError(f"--memory-history needs a CUDA GPU (device {device}): the CPU has no allocator history")
    torch.cuda.memory._record_memory_history(max_entries=HISTORY_ENTRIES)
    try:
        yield
    finally:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.cuda.memory._dump_snapshot(str(path))
        torch.cuda.memory._record_memory_history(enabled=None)


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f}"


def memory_cells(stats: dict[str, PhaseStats] | None) -> dict[str, str]:
    """The memory table's phase columns: each one's transient in GiB; n/a where not measured."""
    cells = {}
    for column, names in MEMORY_COLUMNS.items():
        measured = [stats[name].transient for name in names if stats and stats[name].transient is not None]
        cells[column] = _gib(max(measured)) if measured else "n/a"
    return cells


PHASE_COLUMNS = ["phase", "calls", "s total", "s/call", "transient GiB (max over calls)", "peak GiB (max over calls)"]
NOTES = [
    "- `--phases`: every call of each component measured, warm-up included, the device synchronised at both "
    "ends of each (the table above is timed with those synchronisations in). `transient GiB`: the allocator's "
    "peak during a call minus what was allocated when it began (with offload, the component's own weights moved "
    "on count); `peak GiB`: the peak itself. Text encoders run when prompts are encoded (outside pipeline calls, "
    "once per new prompt); the VAE encodes each image of a batch separately. Memory is n/a off CUDA.",
]


def phase_table(stats: dict[str, PhaseStats]) -> list[str]:
    lines = ["| " + " | ".join(PHASE_COLUMNS) + " |", "|" + "---|" * len(PHASE_COLUMNS)]
    for name, label in PHASES.items():
        phase = stats[name]
        per_call = f"{phase.seconds / phase.calls:.4g}" if phase.calls else "n/a"
        cells = [label, str(phase.calls), f"{phase.seconds:.4g}", per_call, _gib(phase.transient), _gib(phase.peak)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sections(rows) -> list[str]:
    """For the throughput table: one phase table per configuration measured with --phases."""
    lines = []
    for row in rows:
        if getattr(row, "phases", None):
            lines += ["", f"Phases: {row.backend}, batch {row.batch}", "", *phase_table(row.phases)]
    return [*lines, "", *NOTES] if lines else []
