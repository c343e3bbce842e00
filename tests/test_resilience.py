"""Overnight-proof: kill -9 and resume, SIGINT, two runs at once, out-of-memory, a full disk, a crashing item."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from time import monotonic, sleep  # bound here: a test may replace time.sleep while a background run polls

import pandas as pd
import pytest
from PIL import Image

from batch_edit.errors import OutOfMemory
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run

from .conftest import PHOTOS, batch_edit, batch_edit_process, write_pipeline_config

JOB = "night"
# 2 photos x 2 prompts x 3 strengths x 4 seeds = 48 items
MANIFEST = f"""
jobs:
  - name: {JOB}
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "coffee.jpg"}]
    prompts: ["a tiger", "a watercolor"]
    strength: [0.5, 0.6, 0.7]
    seed: [1, 2, 3, 4]
    num_inference_steps: 4
    width: 64
    height: 64
"""


def night_in(folder: Path, config: Path) -> tuple[list[str], Path]:
    """The night job's command, its manifest and output root in `folder`, and its job folder."""
    manifest = folder / "night.yaml"
    manifest.write_text(MANIFEST)
    command = ["run", str(manifest), "--pipeline", str(config), "--output-root", str(folder / "out")]
    return command, folder / "out" / JOB


@pytest.fixture
def night(tmp_path, tiny_config):
    return night_in(tmp_path, tiny_config)


def start_stopped_nights(background, tmp_path_factory, model: Path) -> dict:
    """The night runs that end in a separate process (kill -9, a full disk), started with the test session
    (conftest's `stopped_nights`) to run while other tests do: name -> (command, job folder, future)."""
    started = {}
    for name, scenario in (("kill -9", _killed_three_times), ("full disk", _stopped_by_a_full_disk)):
        folder = tmp_path_factory.mktemp("night")
        command, job = night_in(folder, write_pipeline_config(folder / "tiny.yaml", model))
        if scenario is _stopped_by_a_full_disk:
            try:
                _quanto_kernels_built()
            except BaseException as exc:  # the test that reads this run fails with it
                started[name] = command, job, _failed(exc)
                continue
        started[name] = command, job, background.submit(scenario, folder, command, job)
    return started


def _failed(exc: BaseException) -> Future:
    future = Future()
    future.set_exception(exc)
    return future


def recorded_names(folder: Path) -> set[str]:
    lines = (folder / ".batch-edit" / "records.jsonl").read_bytes().splitlines()
    return {json.loads(line)["file_name"] for line in lines if line.endswith(b"}") and b'"status": "ok"' in line}


def ok_records(folder: Path) -> int:
    """Whole success records (a line a crash cut short doesn't count)."""
    try:
        lines = (folder / ".batch-edit" / "records.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith(b"}") and b'"status": "ok"' in line)


def wait_for_records(process: subprocess.Popen, folder: Path, count: int, timeout: float = 120) -> None:
    deadline = monotonic() + timeout
    while ok_records(folder) < count:
        assert process.poll() is None, f"the run ended early: {process.communicate()}"
        assert monotonic() < deadline, "the run made no progress"
        sleep(0.05)


def results(folder: Path) -> list[Path]:
    """The edited images (not the contact sheets written at the end of a run)."""
    return [p for p in folder.glob("*.png") if not p.name.startswith("contact-sheet")]


def image_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in results(folder)}


def assert_consistent(folder: Path) -> pd.DataFrame:
    """Every metadata row names a whole image on disk, and every image decodes."""
    metadata = pd.read_csv(folder / "metadata.csv")
    assert set(metadata["file_name"]) <= {p.name for p in results(folder)}
    for path in folder.glob("*.png"):
        with Image.open(path) as image:
            image.load()
    return metadata


def _killed_three_times(start, root: Path, command: list[str], folder: Path) -> dict[str, str]:
    """The night run killed with kill -9 at three points, each checked: the recorded images' digests at the end."""
    before_kill: dict[str, str] = {}
    for stop_after in (3, 10, 25):
        process = start(*command, cwd=root)
        wait_for_records(process, folder, stop_after)
        process.send_signal(signal.SIGKILL)
        process.wait()
        digests = image_digests(folder)
        assert len(digests) >= stop_after
        assert all(digests[name] == digest for name, digest in before_kill.items()), "finished images changed"
        for path in folder.glob("*.png"):  # nothing half-written under a final name
            with Image.open(path) as image:
                image.load()
        # Finished means recorded: an image renamed into place just before the kill, whose record was not yet
        # written, is legitimately made again (with its new record and timing inside).
        before_kill = {name: digests[name] for name in recorded_names(folder)}
    return before_kill


def test_kill_9_at_several_points_then_resume(stopped_nights):
    command, folder, killed = stopped_nights["kill -9"]
    before_kill = killed.result(timeout=600)

    result = batch_edit(*command)
    assert result.returncode == 0, result.stderr
    metadata = assert_consistent(folder)
    assert len(metadata) == 48 and metadata["item_id"].is_unique
    final = image_digests(folder)
    assert len(final) == 48
    assert all(final[name] == digest for name, digest in before_kill.items()), "images written before a kill changed"
    assert not list(folder.glob(".*.tmp")), "temporary files left behind"
    # each item ran to completion exactly once: the resumed runs only did what was missing
    assert ok_records(folder) == 48


@pytest.mark.parametrize(
    "signum, status",
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],  # the same stop: slow suite
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_cleanly_and_a_rerun_completes(night, signum, status):
    command, folder = night
    process = batch_edit_process(*command)
    wait_for_records(process, folder, 5)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "received: finishing the batch in progress, then stopping" in stderr
    assert "run the same command again to resume" in stderr
    metadata = assert_consistent(folder)
    assert len(metadata) == len(results(folder)) == ok_records(folder) < 48

    result = batch_edit(*command)
    assert result.returncode == 0, result.stderr
    assert f"{len(metadata)} already done" in result.stdout
    assert len(assert_consistent(folder)) == 48


def test_two_runs_on_one_folder_refuse_each_other(tmp_path, night):
    command, folder = night
    slow = tmp_path / "slow.yaml"  # big enough that the first run is still going when the second starts
    slow.write_text(MANIFEST.replace("width: 64", "width: 128").replace("height: 64", "height: 128"))
    command = ["run", str(slow), *command[2:]]
    first = batch_edit_process(*command)
    try:
        wait_for_records(first, folder, 1)
        second = batch_edit(*command)
        assert first.poll() is None, "the first run ended before the second one tried"
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another batch-edit run (pid" in second.stderr and str(folder) in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done = ok_records(folder)
    third = batch_edit(*command, "--limit", "1")  # the killed run's lock died with it
    assert third.returncode == 0, third.stdout + third.stderr
    assert ok_records(folder) == done + 1


def test_finished_run_returns_without_loading_the_model(night, tmp_path):
    command, folder = night
    assert batch_edit(*command).returncode == 0
    probe = (
        "import sys; from batch_edit.cli import main; code = main(sys.argv[1:]); "
        "print('torch imported:', 'torch' in sys.modules); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout and "torch imported: False" in result.stdout


def test_deleted_or_damaged_images_are_redone_and_overwrite_redoes_all(night):
    command, folder = night
    assert batch_edit(*command).returncode == 0
    names = sorted(image_digests(folder))
    (folder / names[0]).unlink()
    damaged = folder / names[1]
    damaged.write_bytes(damaged.read_bytes()[:100])
    (folder / ".leftover.png.999.tmp").write_bytes(b"partial")
    result = batch_edit(*command)
    assert result.returncode == 0, result.stderr
    assert "2 written, 46 already done" in result.stdout
    assert not (folder / ".leftover.png.999.tmp").exists()
    assert len(assert_consistent(folder)) == 48

    result = batch_edit(*command, "--overwrite")
    assert result.returncode == 0 and "48 written, 0 already done" in result.stdout
    assert len(assert_consistent(folder)) == 48


def _quanto_kernels_built() -> None:
    """quanto compiles its CPU kernels on first use (and again where another ninja built them last): before a run
    under a file size cap, in this process."""
    from optimum.quanto.library.extensions.cpp import ext

    assert ext.lib is not None


# Every file the run writes is capped at 20 KB (records.jsonl fills up first): set, then the run's command exec'd.
SMALL_FILES = (
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); "
    "os.execv(sys.argv[1], sys.argv[1:])",
)


def _stopped_by_a_full_disk(start, root: Path, command: list[str], folder: Path) -> subprocess.CompletedProcess:
    process = start(*command, cwd=root, prefix=SMALL_FILES)
    stdout, stderr = process.communicate()  # no timeout (Popen's timed waits call time.sleep): the future has one
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_full_disk_stops_the_run_with_records_intact(stopped_nights):
    command, folder, stopped = stopped_nights["full disk"]
    process = stopped.result(timeout=600)
    stderr = process.stderr
    assert process.returncode == 3, stderr
    assert "File too large" in stderr and "re-run the same command to resume" in stderr
    written = ok_records(folder)
    assert 0 < written < 48
    result = batch_edit(*command)
    assert result.returncode == 0, result.stderr
    assert f"{written} already done" in result.stdout
    assert len(assert_consistent(folder)) == 48


# --- faults the tiny pipeline can't produce: a fake engine stands in for the GPU -----------------------------


class FaultyEngine:
    """Runs out of memory on batches over `fits` items and always on one prompt; crashes on another prompt."""

    def __init__(self, config: PipelineConfig, fits: int):
        self.config, self.batch_size = config, config.batch_size
        self.fits, self.calls = fits, []

    def encode_prompts(self, prompts):
        pass

    def generate(self, items, images, pad=True):
        self.calls.append(len(items))
        if len(items) > self.fits or any(item.prompt == "huge" for item in items):
            raise OutOfMemory(f"out of memory on a batch of {len(items)} at {images[0].size[0]}x{images[0].size[1]}")
        if any(item.prompt == "crash" for item in items):
            raise ZeroDivisionError("division by zero in a custom step")
        return [Image.new("RGB", image.size, (item.seed % 256, 0, 0)) for item, image in zip(items, images)]


def plan_for(tmp_path, prompts):
    manifest = tmp_path / "faults.yaml"
    manifest.write_text(
        f"jobs: [{{name: faults, sources: {PHOTOS / 'cat.jpg'}, prompts: {prompts}, seed: [1, 2], width: 64, height: 64}}]\n"
    )
    (loaded,) = load_manifests([manifest])
    return plan_jobs(list(loaded.jobs), {"model": "fake"})


def test_out_of_memory_halves_the_batch_down_to_one_item(tmp_path):
    plans = plan_for(tmp_path, '["a", "b", "c", "huge"]')  # 8 items
    config = PipelineConfig(model="fake", device="cpu", batch_size=8)
    engine = FaultyEngine(config, fits=2)
    result = run(plans, config, tmp_path / "out", lambda _: engine, RunOptions())
    (job,) = result.jobs
    assert (job.done, job.failed) == (6, 2)
    assert engine.calls[0] == 8 and 1 in engine.calls and max(engine.calls[1:]) <= 4
    failures = pd.read_csv(tmp_path / "out" / "faults" / "failures.csv")
    assert set(failures["prompt"]) == {"huge"} and failures["error"].str.startswith("out of memory").all()
    assert len(pd.read_csv(tmp_path / "out" / "faults" / "metadata.csv")) == 6


def test_an_unexpected_exception_fails_only_its_batch(tmp_path, caplog):
    plans = plan_for(tmp_path, '["a", "crash", "b"]')
    config = PipelineConfig(model="fake", device="cpu", batch_size=1)
    result = run(plans, config, tmp_path / "out", lambda _: FaultyEngine(config, fits=8), RunOptions())
    assert (result.jobs[0].done, result.jobs[0].failed) == (4, 2)
    failures = pd.read_csv(tmp_path / "out" / "faults" / "failures.csv")
    assert set(failures["error_type"]) == {"ZeroDivisionError"} and set(failures["stage"]) == {"generate"}
    assert (failures["error"] == "division by zero in a custom step").all()
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1, "the traceback is logged once, repeats get one line"
