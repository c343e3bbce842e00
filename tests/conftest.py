"""Shared fixtures: the tiny real FLUX pipeline (built once per session through the CLI) and its config.

`batch_edit(...)` runs the CLI's real entry point (`cli.main`) in this process, with its own working folder,
stdout and stderr: the imports and torch start-up are paid once per test run instead of once per command.
Tests about the process itself (signals, kill -9, exit-time behaviour) use `batch_edit_subprocess` or
`batch_edit_process`, which start the installed console script as a user would.
In this process, a local model folder is read from disk once per content (`model_folders_read_once`): each load
works on its own copy of what was read.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "jobs" / "images"


def sweep_manifest(format: str = "png", strengths: object = "[0.5, 0.7]") -> str:
    """A one-source strength sweep written with captions in `format`: the job the output-format and prune tests
    run and rewrite."""
    return f"""
jobs:
  - name: sweep
    sources: {PHOTOS / "cat.jpg"}
    prompts: 'a tiger, photo'
    strength: {strengths}
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
    format: {format}
    captions: true
"""


# In this process too: no test may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
# One OpenMP thread per process (this one, the runs it starts, their Ray workers) unless the environment says
# otherwise: on a 2-core machine the tiny model's small tensors gain nothing from a second thread, and torch's
# spinning threads in several processes at once make the suite two to three times slower. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def item_ids_read_as_text(monkeypatch):
    """Item ids are 16 hex digits: about one in 700 looks like a number (all digits, or digits around one "e"),
    which pandas would read as a float (even inf). Tests read metadata.csv with pandas: ids stay text there."""
    read_csv = pd.read_csv

    def reading_ids_as_text(*args, **kwargs):
        kwargs.setdefault("dtype", {"item_id": str})
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", reading_ids_as_text)


def copied_pipeline(pipe):
    """What copy.deepcopy(pipe) gives, in under half its time: each torch module is a new object with its own
    attributes, parameter, buffer and submodule dicts and its own copies of the tensors (shared ones, like T5's tied
    embeddings, stay shared); every other attribute is deep-copied. Loads in the suite are mostly this copy."""
    import torch

    copies: dict[int, object] = {}  # also copy.deepcopy's memo, so that what it copies shares what was copied here

    def tensor(value):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):  # a tensor subclass: as deepcopy copies it
            return copy.deepcopy(value, copies)
        if id(value) not in copies:
            data = value.detach().clone()
            copies[id(value)] = torch.nn.Parameter(data, value.requires_grad) if type(value) is torch.nn.Parameter else data
        return copies[id(value)]

    def module(value):
        if id(value) not in copies:
            new = copies[id(value)] = object.__new__(type(value))
            for key, item in value.__dict__.items():
                if key in ("_parameters", "_buffers"):
                    item = type(item)((name, None if each is None else tensor(each)) for name, each in item.items())
                elif key == "_modules":
                    item = type(item)((name, None if each is None else module(each)) for name, each in item.items())
                else:
                    item = other(item)
                new.__dict__[key] = item
        return copies[id(value)]

    def other(item):
        if isinstance(item, torch.nn.Module):
            return module(item)
        if isinstance(item, torch.Tensor):
            return tensor(item)
        if type(item) in (dict, OrderedDict, set, list) and not item:  # a module's many hook dicts, mostly empty
            return type(item)()
        return copy.deepcopy(item, copies)

    new = object.__new__(type(pipe))
    new.__dict__.update({key: other(item) for key, item in pipe.__dict__.items()})
    return new


class _LoadedFolders:
    """`engine._from_pretrained` with what diffusers read from a local model folder kept for the session: each
    load gets its own copy of the pipeline as read (`copied_pipeline`), and quantizing, fusing LoRAs and moving it
    still happen on that copy, as ever. A folder whose files changed in any byte is read again; a checkpoint file, a hub id and a
    verbose run (whose library logs a test may read) are always read."""

    def __init__(self, original):
        self.original, self.read = original, {}

    def __call__(self, config, dtype):
        import logging

        from batch_edit import engine

        key = self._key(config, dtype)
        if key is None or logging.getLogger(engine.__name__).isEnabledFor(logging.INFO):
            return self.original(config, dtype)
        if key not in self.read:
            pipe = self.original(config, dtype)  # checked for its task's weights there: only good ones are kept
            self.read[key] = copied_pipeline(pipe)
            return pipe
        pipe = copied_pipeline(self.read[key])
        engine.check_task_weights(pipe, config)
        return pipe

    @staticmethod
    def _key(config, dtype):
        """The folder's every file (through linked folders, as diffusers reads them) by path and content."""
        folder = Path(config.model)
        if config.is_single_file or not folder.is_dir():
            return None
        files, entered = [], set()
        try:
            for root, folders, names in os.walk(folder, followlinks=True):
                if os.path.realpath(root) in entered:  # a linked folder seen already (or a loop of links)
                    folders.clear()
                    continue
                entered.add(os.path.realpath(root))
                folders.sort()
                for name in sorted(names):
                    path = Path(root) / name
                    files.append((str(path.relative_to(folder)), hashlib.sha256(path.read_bytes()).hexdigest()))
        except OSError:
            return None
        return (
            config.pipeline_class,
            str(folder.resolve()),
            config.revision,
            config.local_files_only,
            str(dtype),
            *files,
        )


@pytest.fixture(scope="session", autouse=True)
def model_folders_read_once():
    """Reading the tiny model folder is a large part of a tiny run: read each folder once (see _LoadedFolders)."""
    from batch_edit import engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_from_pretrained", _LoadedFolders(engine._from_pretrained))
        yield


# The environment as the session started: what processes started in the background take (`background_process`),
# not what a test running meanwhile has set.
SESSION_ENVIRONMENT = dict(os.environ)


def _command(args: tuple[str, ...], environment: dict | None = None) -> tuple[list[str], dict]:
    environment = os.environ if environment is None else environment
    exe = shutil.which("batch-edit", path=environment.get("PATH")) or str(Path(sys.executable).parent / "batch-edit")
    return [exe, *args], {**environment, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def batch_edit(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `batch-edit ARGS` through cli.main in this process; the result looks like subprocess.run's.
    (`timeout` is accepted for symmetry with batch_edit_subprocess; in-process runs are not interrupted.)"""
    from batch_edit import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse refusals and --version
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["batch-edit", *args], code, stdout.getvalue(), stderr.getvalue())


def batch_edit_subprocess(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed console script in its own process, as a user would."""
    command, env = _command(args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("models") / "tiny-flux"
    result = batch_edit("make-tiny-model", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def tiny_task_model(tmp_path_factory, tiny_model):
    """task -> the folder of its tiny model, made once per session by `make-tiny-model --task TASK`."""
    made = {"img2img": tiny_model}

    def model(task: str) -> Path:
        if task not in made:
            directory = tmp_path_factory.mktemp("models") / f"tiny-flux-{task}"
            result = batch_edit("make-tiny-model", str(directory), "--task", task)
            assert result.returncode == 0, result.stderr
            made[task] = directory
        return made[task]

    return model


@pytest.fixture(scope="session")
def tiny_task_config(tmp_path_factory, tiny_task_model):
    """(task, **overrides) -> a CPU config of the task's tiny model (the quanto recipe, like tiny_config)."""
    folder = tmp_path_factory.mktemp("task-configs")

    def config(task: str, **overrides) -> Path:
        name = "-".join([task, *(f"{key}={value}" for key, value in sorted(overrides.items()))])
        path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:12]}.yaml"
        return write_pipeline_config(path, tiny_task_model(task), task=task, **overrides)

    return config


class Background:
    """Scenarios of separate processes, run one after another in a thread of this process while the session's
    tests run: the processes' start-up (imports, Ray) and what they compute take the second CPU core and the waits
    between steps cost no test any time. A scenario starts its processes with `start` (`background_process`), polls
    with a sleep bound at import (a test may replace time.sleep meanwhile) and calls no in-process `batch_edit`
    (the test running meanwhile owns this process's working folder and output); the test that reads it gets its
    result, or what it raised, from the future `submit` returns."""

    def __init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
        self.processes: list[subprocess.Popen] = []

    def submit(self, scenario, *args) -> Future:
        return self.executor.submit(scenario, self.start, *args)

    def start(self, *args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        process = background_process(*args, cwd=cwd, prefix=prefix)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """At the session's end: processes still running (the session cut short) are killed, not waited for."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        self.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def background():
    running = Background()
    yield running
    running.close()


@pytest.fixture(scope="session")
def killed_worker_run(background, tmp_path_factory, tiny_model):
    """test_ray's Ray run with a worker killed, in the background: (folder, command, future)."""
    from .test_ray import start_killed_worker_run

    return start_killed_worker_run(background, tmp_path_factory.mktemp("ray"), tiny_model)


@pytest.fixture(scope="session")
def stopped_nights(background, tmp_path_factory, tiny_model):
    """test_resilience's runs killed with kill -9 and stopped by a full disk, in the background."""
    from .test_resilience import start_stopped_nights

    return start_stopped_nights(background, tmp_path_factory, tiny_model)


@pytest.fixture(scope="session")
def usability_processes(background, tmp_path_factory, tiny_model):
    """test_usability's make-tiny-model --force and runs stopped while loading, in the background."""
    from .test_usability import start_separate_processes

    return start_separate_processes(background, tmp_path_factory, tiny_model)


@pytest.fixture(scope="session", autouse=True)
def background_started_first(request):
    """The background scenarios the session's tests read start with the session (see Background). Not in a worker
    of `pytest -n`: each collects every test but runs only the files it is given, so a scenario starts there when
    the first test of its file asks for it, while the other workers go on with other files."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    wanted = {name for item in request.session.items for name in item.fixturenames}
    for name in ("killed_worker_run", "stopped_nights", "usability_processes"):  # the longest first
        if name in wanted:
            request.getfixturevalue(name)


def write_pipeline_config(path: Path, model: Path, **overrides) -> Path:
    lines = {
        "model": str(model),
        "dtype": "float32",
        "device": "cpu",
        "local_files_only": "true",
        **{key: str(value) for key, value in overrides.items()},
    }
    path.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()))
    return path


@pytest.fixture
def tiny_config(tmp_path, tiny_model) -> Path:
    """The quanto reference recipe on the CPU, like configs/tiny-cpu.yaml."""
    return write_pipeline_config(tmp_path / "tiny.yaml", tiny_model)


def batch_edit_process(*args: str, **popen_options) -> subprocess.Popen:
    """Start the installed console script without waiting, for tests that signal or kill it."""
    command, env = _command(args)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_options
    )


def background_process(*args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """batch_edit_process for a thread that runs while other tests do (Background): the session's starting
    environment and a working folder of its own, whatever the test running meanwhile has changed. No preexec_fn
    (unsafe with threads): `prefix`, a command that sets up the process and execs the rest, does that part."""
    command, env = _command(args, SESSION_ENVIRONMENT)
    return subprocess.Popen(
        [*prefix, *command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def image_file(path: Path, size=(64, 48), mode="RGB", color=0, box=None, fill=255) -> Path:
    """A `mode` image of `color`, with `box` (left, top, right, bottom) painted `fill`, saved at `path`."""
    picture = Image.new(mode, size, color)
    if box is not None:
        picture.paste(fill, box)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def file_stamps(root) -> dict[str, tuple[int, int]]:
    """Every file under `root` (a job folder lock's own files aside) with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in ("lock", "owner")
    }


def noise_image(path: Path, seed: int) -> None:
    """A 64x64 RGB image of random pixels (its content told apart by `seed`), its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def run_manifest(folder: Path, config: Path, *args: str, code: int = 0) -> str:
    """`batch-edit ARGS m.yaml` in `folder` with `config` and the output root `out`; its exit status must be
    `code`. Returns what it printed (stdout, then stderr)."""
    result = batch_edit(*args, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=folder)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def many_jobs(folder: Path, count: int, name: str = "m.yaml", strength: float = 1.0, steps: int = 1) -> str:
    """A manifest `name` in `folder` of `count` one-item jobs j000, j001... (the cat at 16x16, seed n): for the
    open-file limit, one lock per job."""
    jobs = "".join(
        f"  - {{name: j{n:03d}, sources: {PHOTOS / 'cat.jpg'}, prompts: p, width: 16, height: 16, "
        f"strength: {strength}, num_inference_steps: {steps}, seed: {n}}}\n"
        for n in range(count)
    )
    (folder / name).write_text("jobs:\n" + jobs)
    return name


def refusal(path: Path) -> str:
    """What loading the manifest `path` is refused with (ManifestError), as one text."""
    from batch_edit.errors import ManifestError
    from batch_edit.manifest import load_manifests

    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    return str(info.value)
