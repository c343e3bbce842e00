"""How the GPU throughput benchmark times a configuration: each pipeline call between device synchronisations,
the GPU's own utilisation counter sampled beside it, and a row's figures summarised from both."""

from __future__ import annotations

import faulthandler
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from throughput_report import Row  # beside this script

PROCESS_START = time.perf_counter()  # imported first thing by gpu_throughput.py: "first image" counts from here


def stage(message: str) -> None:
    """A timestamped progress line on stderr (the suite's log): where a step's time went, even when it is cut off."""
    print(f"[{time.perf_counter() - PROCESS_START:7.1f} s] {message}", file=sys.stderr, flush=True)


ENCODERS = {"text_encoder": "text encoder (CLIP)", "text_encoder_2": "text encoder 2 (T5)"}


class StageLines:
    """Stage lines for every text-encoder call, VAE encode and decode, and denoising step (`transformer step N of
    call M`), each when it begins: a step cut off at its limit shows the phase it reached (and, under offload, the
    component being moved on: the move runs inside the call), its stack dump the code. Torch module hooks, which
    accelerate's offload leaves alone; the VAE's methods wrapped on the instance (their offload hook runs inside).
    No transformer hooks under whole-model compile (a print would break its graph): its steps go unlogged."""

    def __init__(self, log=None):
        self._log = log or stage
        self._undo: list = []
        self.calls = 0  # pipeline calls begun (set by TimedEngine); steps count within the current one
        self.steps = 0

    def attach(self, pipe, whole_model_compile: bool = False) -> StageLines:
        for name, label in ENCODERS.items():
            module = getattr(pipe, name, None)
            if module is not None:
                handle = module.register_forward_pre_hook(lambda *_, label=label: self._log(f"{label} call begins"))
                self._undo.append(handle.remove)
        if not whole_model_compile:
            handle = pipe.transformer.register_forward_pre_hook(lambda *_: self._step())
            self._undo.append(handle.remove)
        for method, label in (("encode", "VAE encode"), ("decode", "VAE decode")):
            self._wrap(pipe.vae, method, label)
        return self

    def begin_call(self, index: int, items: int) -> None:
        self.calls, self.steps = index, 0
        self._log(f"pipeline call {index} ({items} item(s)) begins")

    def _step(self) -> None:
        self.steps += 1
        self._log(f"transformer step {self.steps} of call {self.calls} begins")

    def _wrap(self, owner, method: str, label: str) -> None:
        original = getattr(owner, method)
        had_own = method in owner.__dict__

        def logged(*args, **kwargs):
            self._log(f"{label} begins")
            return original(*args, **kwargs)

        object.__setattr__(owner, method, logged)
        self._undo.append(
            lambda: object.__setattr__(owner, method, original) if had_own else owner.__dict__.pop(method, None)
        )

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()


def dump_stacks_on_signal() -> None:
    """SIGUSR1 writes every thread's stack to stderr: the suite sends it to a step it is about to kill for its
    time limit, so the log says where the step was stuck."""
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:  # not on Windows, nor without a stderr
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


@dataclass
class Call:
    start: float
    end: float
    items: int
    error: str | None = None


class TimedEngine:
    """The real engine, with each generate() timed between device synchronisations; all else is delegated."""

    def __init__(self, engine, on_first_call=lambda: None, stages: StageLines | None = None):
        self.engine, self.calls, self._on_first_call, self._stages = engine, [], on_first_call, stages
        import torch

        cuda = engine.config.device.startswith("cuda")
        self._sync = (lambda: torch.cuda.synchronize(engine.config.device)) if cuda else (lambda: None)

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, items, images, **masks):
        self._sync()
        if self._stages:
            self._stages.begin_call(len(self.calls) + 1, len(items))
        start = time.perf_counter()
        try:
            results = self.engine.generate(items, images, **masks)
        except BaseException as exc:
            self.calls.append(Call(start, time.perf_counter(), len(items), type(exc).__name__))
            raise
        self._sync()
        self.calls.append(Call(start, time.perf_counter(), len(items)))
        stage(f"pipeline call {len(self.calls)} ({len(items)} item(s)): {self.calls[-1].end - start:.2f} s")
        if len(self.calls) == 1:
            self._on_first_call()
        return results


class UtilisationSampler:
    """The GPU's own utilisation counter (NVML through pynvml, else `nvidia-smi -lms`), sampled in a thread: a
    cross-check of the in-call fraction. Coarse (NVML counts any kernel running), and absent where neither exists."""

    def __init__(self, device: str):
        self.device, self.samples = device, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.device.startswith("cuda"):
            return
        read = _nvml_reader(self.device)
        if read is not None:
            self._thread = threading.Thread(target=self._poll, args=(read,), daemon=True)
        elif shutil.which("nvidia-smi"):
            query = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
            self._process = subprocess.Popen(
                ["nvidia-smi", f"--id={_gpu_uuid(self.device)}", *query],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            self._thread = threading.Thread(target=self._stream, daemon=True)
        if self._thread:
            self._thread.start()

    def _poll(self, read) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.perf_counter(), read()))

    def _stream(self) -> None:
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), int(line)))

    def stop(self) -> None:
        self._stop.set()
        if self._process:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread:
            self._thread.join(timeout=10)

    def mean(self, start: float, end: float) -> float | None:
        values = [value for at, value in self.samples if start <= at <= end]
        return statistics.fmean(values) / 100 if values else None


def _gpu_uuid(device: str) -> str:
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def _nvml_reader(device: str):
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(_gpu_uuid(device))
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:  # no pynvml, no driver library, or an unknown uuid: fall back to nvidia-smi
        return None


def summarise(row: Row, calls: list[Call], sampler: UtilisationSampler, result) -> None:
    """Warm-up = the first call; steady state = every later call, over the wall time from the first call's end
    to the last call's end, so the gaps between calls (the runner's own work) count against utilisation."""
    row.calls = len(calls)
    row.failed = result.failed
    problems = [f"{call.error} on a batch of {call.items}" for call in calls if call.error]
    problems += [f"{count} failed: {reason}" for job in result.jobs for reason, count in job.errors.items()]
    if result.interrupted_by:
        problems.append("interrupted")
    ok = [call for call in calls if not call.error]
    if not ok:
        row.status = "; ".join(problems) or "no pipeline call"
        return
    row.warmup_s = ok[0].end - ok[0].start
    steady = [call for call in calls if call.start >= ok[0].end]
    steady_ok = [call for call in steady if not call.error]
    if steady_ok:
        window = steady[-1].end - ok[0].end
        # A short last batch costs a whole one when compiled (it is padded): full batches only, where there are any.
        full = [call for call in steady_ok if call.items >= row.batch] or steady_ok
        row.s_per_image = statistics.median((call.end - call.start) / call.items for call in full)
        row.img_per_min = sum(call.items for call in steady_ok) / window * 60
        row.in_call = sum(call.end - call.start for call in steady) / window
        row.nvml = sampler.mean(ok[0].end, steady[-1].end)
    else:
        problems.append("only the warm-up call ran: use more --items")
    row.status = "; ".join(problems) or "ok"
