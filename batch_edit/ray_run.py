"""The run spread over Ray workers (`run --ray`): Ray Data carries the pending items through a CPU stage that
loads and fits sources and a pool of workers that each hold one engine (one GPU each, or CPUs for a CPU config),
generate, and encode; the driver (`runner.drive`) records each result as it streams back and alone writes the job
folders. Ray is an optional dependency: nothing imports it before `--ray` asks for it.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import queue
import re
import socket
import sys
import threading
import warnings
from contextlib import closing
from dataclasses import dataclass

from .errors import BatchEditError, ConfigError, PipelineLoadError, first_line
from .pipeline_config import PipelineConfig
from .result_files import ItemResult
from .signals import LoadInterrupted, StopOnSignal, held
from .sources import FetchOptions
from .worker import ErrorLog, Generated, Prepared, Task, Worker, in_batches, prepare

INSTALL = "pip install -e '.[ray]'"
# Source-loading tasks reserve no CPU: they are light next to generating, and the workers take every CPU
# (a reserved share would cost a 2-core machine a whole torch thread per worker: Ray takes only whole CPUs above one)
PREPARE_CPUS = 0
FEEDER_STOP_S = 10  # how long a stopped run waits for the dataset's executor to stop before shutting Ray down
MAX_RESTARTS = 3  # a killed worker comes back this often (its unfinished items run again), then the run ends


class WorkersLost(BatchEditError):
    """The Ray workers died more often than they may restart, or the cluster went away, during the run. `result`:
    the run's summary up to then (what came back is recorded), set by the driver."""

    result = None


@dataclass(frozen=True)
class GpuNode:
    """What a node's GPUs would make of `auto`: fp8 (compute capability 8.9 or newer) and memory."""

    node: str
    name: str
    fp8: bool
    memory_gb: float

    def describe(self) -> str:
        return f"{self.name} on {self.node}"


def import_ray():
    # Without this, a Ray call made after the run's shutdown (Ray Data's executor thread winding down) would start a
    # new local Ray instance, and the process would wait on it past the end of the run.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    try:
        import ray
        import ray.data  # the extra installs it with ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


def resolve_for_cluster(config: PipelineConfig, gpus: list[GpuNode]) -> PipelineConfig:
    """The recipe every worker will run, resolved before ids are made: `auto` choices from the cluster's GPUs
    (refused when they would differ between nodes, naming them), one batch size for all (the smallest GPU's)."""
    if config.device == "cpu":
        return config.model_copy(update={"batch_size": config.resolved_batch_size(None)})
    if not gpus:
        raise PipelineLoadError(
            f"the pipeline config asks for device '{config.device}' but the Ray cluster has no GPU; "
            "use a config with 'device: cpu' or add GPU nodes"
        )
    if config.has_device_choices:
        fp8 = [gpu.describe() for gpu in gpus if gpu.fp8]
        other = [gpu.describe() for gpu in gpus if not gpu.fp8]
        if fp8 and other:
            raise ConfigError(
                f"the cluster's GPUs would resolve torchao_type auto differently (float8 on {', '.join(fp8)}; "
                f"int8 on {', '.join(other)}): set quantization.torchao_type in the pipeline config, or use one kind"
            )
        config = config.with_device_choices(bool(fp8))
    # each worker sees only its own GPU, as device "cuda"
    batch_size = config.resolved_batch_size(min(gpu.memory_gb for gpu in gpus))
    return config.model_copy(update={"device": "cuda", "batch_size": batch_size})


class _Unused:
    def __init__(self, argument):
        pass


def _spend_restart_notice(ray) -> None:
    """Ray Data passes its own objects by reference to every worker it creates, and Ray's core then logs, once
    per process and at level ERROR (straight to stderr, past `logging_level`), that restarting such an actor
    would fail if they were lost: the driver holds them for the whole run, so it does not apply here. Ray's one
    setting that hides it (RAY_BACKEND_LOG_LEVEL) hides every error of its core; instead the notice is spent
    on a throwaway actor while stderr points at /dev/null (Ray's driver log file still has it)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        unused = ray.remote(num_cpus=0, max_restarts=1)(_Unused).remote(ray.put(None))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    ray.kill(unused)


class RayCluster:
    """The Ray instance of one run: a local one started for it (and stopped at the end) without an address, or a
    cluster joined (and left running)."""

    def __init__(self, address: str | None, workers: int | None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self.ray = import_ray()
        self.started = False
        self._gpus: list[GpuNode] | None = None

    def __enter__(self) -> RayCluster:
        return self

    def _start(self) -> None:
        """Ray starts (or is joined) when first needed: a manifest or config refused while planning costs no Ray
        start-up and prints none of its lines. A SIGINT/SIGTERM while it starts is held until it is up, then stops
        the run as a stop while loading does (nothing made, no folder left; Ray shuts down with the run)."""
        if self.started:
            return
        self.started = True
        with held() as received:
            try:
                self._init()
            except ConfigError:
                if not received:
                    raise
        if received:
            raise LoadInterrupted(received[0], during="starting Ray")

    def _init(self) -> None:
        # Ray's own notices (token authentication on a local instance...) are not the user's business; its errors are
        options = {"include_dashboard": False, "logging_level": logging.ERROR}
        try:
            _check_reachable(self.address)
            if self.address is None:
                self.ray.init(address="local", **options)
            else:
                self.ray.init(address=self.address, **options)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for the same cause
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise ConfigError(f"cannot start or reach {where}: {first_line(exc, None)}") from None
        _spend_restart_notice(self.ray)
        context = self.ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the run's own progress line says what matters
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no line per dataset started and finished
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # nor that bars are off
        # A job of fewer batches than workers leaves some idle: Ray Data warns, with advice for its own API
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)

    def __exit__(self, *exc_info) -> None:
        if self.started:
            self.ray.shutdown()  # a local instance stops; a joined cluster only loses this driver

    def resolve(self, config: PipelineConfig, for_run: bool = True) -> PipelineConfig:
        """The config as item ids need it, while planning: the cluster's GPUs are probed here only for an `auto`
        that changes images (a finished run of any other config starts no Ray). The rest (a GPU there at all, the
        batch size) waits for the execution's `check`, the first step of a run with items to make."""
        if config.device == "cpu" or config.has_device_choices:
            return self.resolved(config)
        return config.model_copy(update={"device": "cuda"})  # as resolve_for_cluster says it: each worker's own GPU

    def resolved(self, config: PipelineConfig) -> PipelineConfig:
        """The config as every worker loads it (`resolve_for_cluster`), the GPUs probed for one that needs them."""
        return resolve_for_cluster(config, [] if config.device == "cpu" else self.gpus())

    def gpus(self) -> list[GpuNode]:
        """One probe per GPU node (its GPUs are taken to be alike), on that node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self._gpus is not None:  # probed once a run: a chained job's later planning asks again
            return self._gpus
        self._start()
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
        probe = self.ray.remote(num_gpus=1, num_cpus=0)(_probe_gpu)
        placed = [NodeAffinitySchedulingStrategy(node["NodeID"], soft=False) for node in nodes]
        self._gpus = self.ray.get([probe.options(scheduling_strategy=where).remote() for where in placed], timeout=600)
        return self._gpus

    def execution(self, config: PipelineConfig, fetch: FetchOptions) -> RayExecution:
        """The execution on this cluster: Ray starts (a CPU config's run may not have started it yet) once the
        run has items to make, when the execution's `check` runs; a finished run starts no Ray."""
        return RayExecution(self, fetch)

    def shape(self, config: PipelineConfig) -> tuple[int, dict, int]:
        """(workers, each one's Ray resources, each one's torch threads) for `config` on this cluster."""
        self._start()
        resources = self.ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 0)
        if config.device != "cpu":
            workers = self.workers or gpus
            if workers > gpus:
                raise ConfigError(f"--workers {workers}: the Ray cluster has {gpus} GPU(s), one per worker")
            return workers, {"num_gpus": 1, "num_cpus": 1}, 1
        workers = self.workers or max(1, int(cpus))
        share = cpus / workers  # Ray takes fractions below one CPU, whole numbers above
        if share < 0.1:
            raise ConfigError(f"--workers {workers}: too many for the Ray cluster's {cpus:g} CPU(s)")
        num_cpus = math.floor(share) if share >= 1 else math.floor(share * 100) / 100
        return workers, {"num_cpus": num_cpus}, max(1, math.floor(share))


class RayExecution:
    """`runner.Execution` on Ray Data: tasks in, results streamed back to the driver's thread."""

    on_stop = "recording the results already back, then stopping (batches still on the workers run again on resume)"

    def __init__(self, cluster: RayCluster, fetch: FetchOptions):
        self.cluster, self.ray, self.fetch = cluster, cluster.ray, fetch
        self.workers, self.resources, self.threads = 0, {}, 1  # the cluster's shape, once the run needs Ray
        self.config: PipelineConfig | None = None
        self.resolved: PipelineConfig | None = None

    def check(self, config: PipelineConfig) -> None:
        """The engine's refusals (no GPU, no model folder, no LoRA file) where the workers run, not here: the first
        step of a run with items to make, where Ray starts if it has not. The config is resolved for the cluster's
        GPUs here (a cluster without any refused), as every worker will load it."""
        from .engine import Engine

        config = self.resolved = self.cluster.resolved(config)
        self.workers, self.resources, self.threads = self.cluster.shape(config)
        check = self.ray.remote(num_cpus=0, num_gpus=self.resources.get("num_gpus", 0))(Engine.check)
        try:
            self.ray.get(check.remote(config))
        except self.ray.exceptions.RayError as exc:
            cause = _cause(exc)
            raise cause if isinstance(cause, BatchEditError) else PipelineLoadError(first_line(exc, None)) from None

    def load(self, config: PipelineConfig, prompts: list[str]) -> PipelineConfig:
        """Each worker encodes the prompts of its tasks as it starts (part of its load)."""
        from .engine import described

        # resolved for the cluster (before ids were made where that changes images); each worker loads it as it starts
        self.config = config = self.resolved if self.resolved is not None else config
        print(f"batch-edit: {self.workers} Ray worker(s), each loading {described(config)}", file=sys.stderr)
        return config

    def run(self, tasks: list[Task], pipeline: dict, record, stop: StopOnSignal) -> None:
        results: queue.Queue = queue.Queue(maxsize=64)  # bounded: Ray's backpressure reaches the workers
        stopping = threading.Event()
        feeder = threading.Thread(
            target=self._stream, args=(self._dataset(tasks, pipeline), results, stopping), daemon=True
        )
        feeder.start()
        received = 0
        try:
            received = self._receive(results, record, stop)
        finally:
            stopping.set()
            # The feeder closes the dataset's iterator, which stops its executor, before Ray shuts down; it may be
            # waiting on workers that died with the signal, hence the bound. Before any result, the workers are
            # still loading: nothing would come back to end that wait.
            feeder.join(timeout=FEEDER_STOP_S if received else 0)
            if feeder.is_alive():  # Ray Data would report Ray's shutdown under it as its own error, traceback and all
                logging.getLogger("ray.data").setLevel(logging.CRITICAL + 1)
        if stop.signal is not None and not received:  # stopped while the workers load, as a plain run's load
            raise LoadInterrupted(stop.signal)

    @staticmethod
    def _receive(results: queue.Queue, record, stop: StopOnSignal) -> int:
        """Records each result as it comes back until the end or a stop; returns how many."""
        received = 0
        while stop.signal is None:
            try:
                kind, value = results.get(timeout=0.2)  # a signal is noticed at once, not after the next result
            except queue.Empty:
                continue
            if kind == "end":
                return received
            if kind == "error":
                if stop.signal is not None:  # the workers died of the same signal (sent to the process group)
                    break
                raise value
            record(value)
            received += 1
        while True:  # stopped: what already came back is recorded too
            try:
                kind, value = results.get_nowait()
            except queue.Empty:
                return received
            if kind == "result":
                record(value)
                received += 1

    @staticmethod
    def _stream(dataset, results: queue.Queue, stopping: threading.Event) -> None:
        try:
            # closed on every way out: that stops the dataset's executor (and its workers) when the driver stopped first
            with closing(iter(dataset.iter_rows())) as rows:
                for row in rows:
                    if not _offer(results, ("result", pickle.loads(row["result"])), stopping):
                        return
            _offer(results, ("end", None), stopping)
        except Exception as exc:  # handed to the driver's thread, which ends the run with it
            _offer(results, ("error", _lost(exc)), stopping)

    def _dataset(self, tasks: list[Task], pipeline: dict):
        rows = [{"task": pickle.dumps(task)} for task in tasks]
        # One block per batch: a worker sends back each block's results when it has done the whole block, so
        # results stream back batch by batch, and a killed worker loses at most its batches in progress.
        blocks = max(1, math.ceil(len(rows) / self.config.batch_size))
        dataset = self.ray.data.from_items(rows, override_num_blocks=blocks)
        dataset = dataset.map_batches(
            _prepare_rows, fn_kwargs={"fetch": self.fetch}, batch_size=None, num_cpus=PREPARE_CPUS
        )
        prompts = list(dict.fromkeys(task.item.prompt for task in tasks))
        with warnings.catch_warnings():
            # Ray Data 2.60 names no parameter for these two and warns that its catch-all goes in 2.64 (the extra
            # stays below it); without them a worker that dies every time would be restarted forever
            warnings.simplefilter("ignore", category=DeprecationWarning)
            return dataset.map_batches(
                _GenerateStage,
                fn_constructor_kwargs={
                    "config": self.config,
                    "pipeline": pipeline,
                    "prompts": prompts,
                    "threads": self.threads,
                },
                batch_size=self.config.batch_size,
                compute=self.ray.data.ActorPoolStrategy(size=self.workers),
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_RESTARTS,
                **self.resources,
            )


def _offer(results: queue.Queue, message: tuple, stopping: threading.Event) -> bool:
    """Put `message` for the driver unless it has stopped taking them; False once it has."""
    while not stopping.is_set():
        try:
            results.put(message, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _prepare_rows(batch: dict, fetch: FetchOptions) -> dict:
    """The CPU stage: each task's source loaded and fitted (or its "load" failure)."""
    import numpy as np

    prepared = prepare([pickle.loads(task) for task in batch["task"]], fetch, ErrorLog())
    return {"prepared": np.array([pickle.dumps(ready) for ready in prepared], dtype=object)}


class _GenerateStage:
    """A Ray worker: one engine, loaded once, for every batch it is given."""

    def __init__(self, config: PipelineConfig, pipeline: dict, prompts: list[str], threads: int):
        import torch

        from .engine import Engine

        torch.set_num_threads(threads)  # the CPUs Ray gives this worker, not the whole machine's
        self.worker = Worker(Engine.load(config, announce=False), pipeline, prompts)

    def __call__(self, batch: dict) -> dict:
        return {"result": _results(self.worker, batch["prepared"])}


def _results(worker: Worker, rows) -> object:
    import numpy as np

    results: list[ItemResult] = []
    for ready in in_batches([pickle.loads(row) for row in rows], worker.batch_size):
        if isinstance(ready, Prepared):  # its source could not be used
            results.append(worker.encode(Generated(ready, failure=ready.failure)))
        else:
            results.extend(worker.run(ready))
    return np.array([pickle.dumps(result) for result in results], dtype=object)


def _check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """A head that does not answer is refused now: Ray itself would keep retrying for minutes."""
    if address is None or address == "auto":
        return  # a local instance, or the one `ray start` recorded on this machine (Ray says at once if none)
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # a form Ray checks itself
    with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
        pass


def _probe_gpu() -> GpuNode:
    import torch

    properties = torch.cuda.get_device_properties(0)
    fp8 = (properties.major, properties.minor) >= (8, 9)
    return GpuNode(socket.gethostname(), properties.name, fp8, properties.total_memory / 2**30)


def _cause(exc: BaseException) -> BaseException:
    """The error a worker raised, as the project's own type where it is one (a RayTaskError wraps it)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BatchEditError) else exc


# A worker whose pipeline failed to load dies in its constructor; Ray hands the driver only that error's text
_LOAD_FAILURE = re.compile(r"batch_edit\.errors\.PipelineLoadError: (.+)")


def _lost(exc: Exception) -> BatchEditError:
    cause = _cause(exc)
    if isinstance(cause, BatchEditError):
        return cause
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for found in (_LOAD_FAILURE.search(str(error)) for error in chain):
        if found:  # the same message (and exit 2) as a load failing in a plain run; it would fail again on resume
            return PipelineLoadError(f"a Ray worker could not load the pipeline: {found.group(1).strip()}")
    return WorkersLost(
        f"the Ray workers stopped ({first_line(exc, None)}); every finished item is recorded: run the same command "
        "again to resume"
    )
