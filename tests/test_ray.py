"""`run --ray`: the same items, names, metadata and images as the run in one process, on a local Ray instance
with two CPU workers and the tiny model; a worker killed mid-run restarts and nothing is lost or recorded twice;
the driver stopped by a signal or killed resumes as ever; workers that keep dying end the run (exit 1).

Ray must be installed (`pip install -e '.[test]'` installs it): these tests fail, never skip, without it. Each
scenario starts one Ray instance in one CLI process; the driver-side scenarios are slow (`pytest -m slow
tests/test_ray.py`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from time import monotonic, sleep  # bound here: a test may replace time.sleep while KilledWorkerRun polls

import numpy as np
import pandas as pd
import pytest
import ray  # a missing Ray fails this file instead of skipping it
from PIL import Image

from batch_edit.errors import ConfigError, PipelineLoadError
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig
from batch_edit.plan import plan_jobs
from batch_edit.ray_run import INSTALL, MAX_RESTARTS, GpuNode, resolve_for_cluster
from batch_edit.runner import InProcess, RunOptions, drive

from .conftest import (
    PHOTOS,
    batch_edit,
    batch_edit_process,
    batch_edit_subprocess,
    write_pipeline_config,
)
from .http_fixtures import LoopbackServer
from .test_chain_overwrite import stopped_between_rounds

# How an item ran, not what it is: its time, and the size of the call it was in (a retried batch may be split)
EXECUTION = ["seconds", "finished_at", "failed_at", "batch_size"]
GRID = f"""
jobs:
  - name: grid
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "coffee.jpg"}]
    prompts: ["a tiger", "a watercolor"]
    strength: [0.5, 0.7]
    seed: {{seeds}}
    num_inference_steps: 20
    width: 128
    height: 128
"""
CSV = f"""source,prompt,strength,seed,width,height
{PHOTOS / "rocket.jpg"},a rocket at night,0.6,1,64,48
{PHOTOS / "astronaut.jpg"},an astronaut in the snow,0.8,2,48,64
{PHOTOS / "missing.jpg"},a photo that is not there,0.6,3,64,64
{PHOTOS / "rocket.jpg"},a rocket in winter,0.6,4,64,48
"""
ITEMS = {"grid": 24, "table": 4}


def manifests(folder: Path, seeds: int = 3) -> list[str]:
    """The grid job (8 items per seed) and the CSV job."""
    (folder / "grid.yaml").write_text(GRID.replace("{seeds}", str(list(range(1, seeds + 1)))))
    (folder / "table.csv").write_text(CSV)
    return [str(folder / "grid.yaml"), str(folder / "table.csv")]


def records(folder: Path) -> list[dict]:
    lines = (folder / ".batch-edit" / "records.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.endswith(b"}")]


def done_ids(folder: Path) -> list[str]:
    return [record["item_id"] for record in records(folder) if record["status"] == "ok"]


def recorded(root: Path) -> int:
    return sum(len(records(root / job)) for job in ITEMS if (root / job / ".batch-edit" / "records.jsonl").exists())


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (Ray's own processes and its workers), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def ray_workers(pid: int, loaded: bool = False) -> list[int]:
    """The pipeline workers a driver started (Ray titles them after the stage's class and what they run);
    `loaded`: only those past loading the pipeline."""
    workers = []
    for child in descendants(pid):
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"_GenerateStage" in title and not (loaded and b"__init__" in title):
            workers.append(child)
    return workers


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and b"zombie" not in _state(pid)]


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return b"zombie"


def wait_for_exit(pids: list[int], timeout: float = 60) -> None:
    deadline = monotonic() + timeout
    while alive(pids):
        assert monotonic() < deadline, f"still running: {alive(pids)}"
        sleep(0.1)


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended early: {process.communicate()}"
        assert monotonic() < deadline, "the run made no progress"
        sleep(0.05)


def start_killed_worker_run(background, folder: Path, model: Path):
    """The manifests run with `--ray --workers 2`, one of whose workers is killed (SIGKILL) once results have come
    back: started with the test session (conftest's `killed_worker_run`), so that Ray starts, loads its workers and
    runs while the tests before this file do. (folder, command, future of (the run, records when killed))."""
    config = write_pipeline_config(folder / "tiny.yaml", model)
    command = ["run", *manifests(folder), "--pipeline", str(config)]
    return folder, command, background.submit(_killed_worker_run, folder, command)


def _killed_worker_run(start, folder: Path, command: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    process = start(*command, "--output-root", str(folder / "ray"), "--ray", "--workers", "2", cwd=folder)
    wait_for(lambda: recorded(folder / "ray") >= 1 and ray_workers(process.pid, loaded=True), process)
    killed_at, started = recorded(folder / "ray"), descendants(process.pid)
    os.kill(ray_workers(process.pid, loaded=True)[0], signal.SIGKILL)  # the one that sent results: busy
    stdout, stderr = process.communicate()  # no timeout (Popen's timed waits call time.sleep): the future has one
    wait_for_exit(started, timeout=10)  # the local Ray instance does not outlive its run (a worker may take a moment)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), killed_at


@pytest.fixture(scope="module")
def runs(killed_worker_run):
    """The same manifests run in this process and with `--ray --workers 2`, one of whose workers is killed."""
    folder, command, spread = killed_worker_run
    single = batch_edit(*command, "--output-root", str(folder / "single"))
    ray_run, killed_at = spread.result(timeout=600)
    return single, ray_run, folder, killed_at


def test_a_killed_worker_restarts_and_every_item_is_recorded_once(runs):
    single, ray_run, folder, killed_at = runs
    assert killed_at < sum(ITEMS.values()), "the worker was killed after the run had finished"
    assert single.returncode == 1, single.stderr  # the CSV's missing photo
    assert ray_run.returncode == 1, ray_run.stderr
    for job, count in ITEMS.items():
        ids = [record["item_id"] for record in records(folder / "ray" / job)]
        assert len(ids) == len(set(ids)) == count, job


def test_ray_gives_the_same_ids_names_metadata_and_failures(runs):
    _, ray_run, folder, _ = runs
    for job in ITEMS:
        for table in ("metadata.csv", "failures.csv"):
            single = pd.read_csv(folder / "single" / job / table)
            spread = pd.read_csv(folder / "ray" / job / table)
            timing = [column for column in EXECUTION if column in single]
            pd.testing.assert_frame_equal(
                single.drop(columns=timing), spread.drop(columns=timing), obj=f"{job}/{table}"
            )
    assert (
        "job grid: 24 written" in ray_run.stdout and "job table: 3 written, 0 already done, 1 failed" in ray_run.stdout
    )


def test_the_driver_says_once_what_the_workers_load_and_ray_keeps_its_notices(runs):
    _, ray_run, _, _ = runs
    stderr = ray_run.stderr
    assert stderr.count("batch-edit: 2 Ray worker(s), each loading ") == 1, stderr
    assert "batch-edit: loading" not in stderr, stderr  # not once per worker, interleaved
    assert "Token authentication" not in stderr, stderr
    assert "core_worker.cc" not in stderr, stderr  # nor its core's notice about restarting Ray Data's actors


def test_ray_images_match_the_single_process_run(runs):
    _, _, folder, _ = runs
    for job in ITEMS:
        for name in pd.read_csv(folder / "single" / job / "metadata.csv")["file_name"]:
            single, spread = (np.asarray(Image.open(folder / run / job / name), dtype=int) for run in ("single", "ray"))
            assert np.abs(single - spread).max() <= 2, name


def test_without_ray_installed_run_ray_refuses_with_the_install_line(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = batch_edit("run", *manifests(tmp_path), "--pipeline", str(tiny_config), "--ray")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --ray needs Ray Data, which is not installed: {INSTALL}"


def test_ray_flags_without_ray_are_refused(tmp_path, tiny_config):
    result = batch_edit("run", *manifests(tmp_path), "--pipeline", str(tiny_config), "--workers", "2")
    assert (result.returncode, result.stderr.strip()) == (2, "error: --workers needs --ray")


def test_a_cluster_that_does_not_answer_is_refused_and_nothing_is_written(tmp_path, tiny_config):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        address = f"127.0.0.1:{port}"
        result = batch_edit(
            "run", *manifests(tmp_path), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out"),
            "--ray", "--ray-address", address,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot start or reach the Ray cluster at {address}: ")
    assert not (tmp_path / "out").exists()


def gpu(node: str, name: str, fp8: bool, memory_gb: float = 80.0) -> GpuNode:
    return GpuNode(node, name, fp8, memory_gb)


def test_a_cluster_whose_gpus_would_resolve_auto_differently_is_refused_naming_them():
    config = PipelineConfig(quantization=QuantizationConfig(backend="torchao"))
    mixed = [gpu("head", "NVIDIA H100", True), gpu("node-2", "NVIDIA A100", False)]
    with pytest.raises(ConfigError, match=r"float8 on NVIDIA H100 on head; int8 on NVIDIA A100 on node-2"):
        resolve_for_cluster(config, mixed)
    same = resolve_for_cluster(config, [gpu("head", "NVIDIA H100", True), gpu("node-2", "NVIDIA H200", True, 140)])
    assert same.quantization.torchao_type == "float8_dynamic_row"
    assert same.identity() == config.with_device_choices(True).identity()  # the ids one such GPU gives here
    assert resolve_for_cluster(config, mixed[1:]).quantization.torchao_type == "int8_weight_only"


def test_one_batch_size_for_the_whole_cluster_and_no_gpu_is_refused():
    config = PipelineConfig()
    small = PipelineConfig().resolved_batch_size(16.0)
    assert resolve_for_cluster(config, [gpu("a", "L4", False, 16.0), gpu("b", "H200", True, 140.0)]).batch_size == small
    assert resolve_for_cluster(PipelineConfig(device="cpu"), []).batch_size == PipelineConfig().resolved_batch_size(
        None
    )
    with pytest.raises(PipelineLoadError, match="the Ray cluster has no GPU"):
        resolve_for_cluster(config, [])


class SentTwice(InProcess):
    """A retried worker task sends results again: every result reaches the driver twice."""

    def run(self, tasks, pipeline, record, stop):
        super().run(tasks, pipeline, lambda result: (record(result), record(result)), stop)


def test_a_result_that_comes_back_twice_is_recorded_once(tmp_path, tiny_config):
    from batch_edit.engine import Engine
    from batch_edit.pipeline_config import load_pipeline_config
    from batch_edit.planning import resolve_device_choices

    grid = Path(manifests(tmp_path)[0])  # its 24 items, smaller: what counts here is how often each is recorded
    grid.write_text(grid.read_text().replace("num_inference_steps: 20", "num_inference_steps: 4")
                    .replace("width: 128", "width: 32").replace("height: 128", "height: 32"))  # fmt: skip
    (loaded,) = load_manifests([grid])
    config = resolve_device_choices(load_pipeline_config(tiny_config), True)
    plans = plan_jobs(list(loaded.jobs), config.identity())
    result = drive(
        plans, config, tmp_path / "out", SentTwice(Engine.load, Engine.check, RunOptions().fetch), RunOptions()
    )
    assert (result.jobs[0].done, result.jobs[0].failed) == (24, 0)
    ids = [record["item_id"] for record in records(tmp_path / "out" / "grid")]
    assert len(ids) == len(set(ids)) == 24


# --- the driver stopped: slow, each starts Ray twice ---------------------------------------------------------


@pytest.fixture
def spread(tmp_path, tiny_config):
    """A longer grid (64 items), so that a stop comes well before the end."""
    command = [
        "run",
        *manifests(tmp_path, seeds=8),
        "--pipeline",
        str(tiny_config),
        "--output-root",
        str(tmp_path / "out"),
    ]
    return command, tmp_path / "out"


def assert_consistent(root: Path) -> int:
    """Every metadata row names a whole image; each item recorded at most once; returns the rows."""
    rows = 0
    for job in ITEMS:
        if not (root / job / "metadata.csv").exists():
            continue
        metadata = pd.read_csv(root / job / "metadata.csv")
        for name in metadata["file_name"]:
            with Image.open(root / job / name) as image:
                image.load()
        ids = done_ids(root / job)
        assert len(ids) == len(set(ids)) == len(metadata)
        rows += len(metadata)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("group", [False, True], ids=["driver", "process-group"])
def test_a_signal_stops_the_driver_records_what_came_back_and_stops_ray(spread, signum, status, group):
    """`group`: the signal reaches every process of the run, Ray's included, as Ctrl-C in a terminal does."""
    command, root = spread
    process = batch_edit_process(*command, "--ray", "--workers", "2", start_new_session=group)
    wait_for(lambda: recorded(root) >= 1, process)
    started = descendants(process.pid)
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stdout + stderr
    assert "received: recording the results already back, then stopping (batches still on the workers" in stderr
    assert "run the same command again to resume" in stderr
    assert 0 < assert_consistent(root) < 67
    wait_for_exit(started, timeout=10)  # the local Ray instance does not outlive its run (a worker may take a moment)
    result = batch_edit(*command)
    assert result.returncode == 1, result.stderr  # the missing photo
    assert assert_consistent(root) == 67


@pytest.mark.slow
def test_a_driver_killed_with_sigkill_resumes_on_the_next_ray_run(spread):
    command, root = spread
    process = batch_edit_process(*command, "--ray", "--workers", "2")
    wait_for(lambda: recorded(root) >= 1, process)
    workers = ray_workers(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    wait_for_exit(workers)  # the local Ray instance shares the driver's fate: its workers stop
    done = sum(len(set(done_ids(root / job))) for job in ITEMS if (root / job / ".batch-edit/records.jsonl").exists())
    assert done > 0
    result = subprocess.run(
        [sys.executable, "-m", "batch_edit", *command, "--ray", "--workers", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert assert_consistent(root) == 67
    already = sum(
        int(line.split(" already done")[0].rsplit(" ", 1)[1])
        for line in result.stdout.splitlines()
        if " already done" in line
    )
    assert already == done


@pytest.mark.slow
def test_workers_that_keep_dying_end_the_run_with_exit_1_and_say_so(spread):
    command, root = spread
    process = batch_edit_process(*command, "--ray", "--workers", "1")
    kills, deadline = 0, monotonic() + 300
    while process.poll() is None and monotonic() < deadline:
        for worker in ray_workers(process.pid):  # each time the worker (re)starts: more often than it may
            os.kill(worker, signal.SIGKILL)
            kills += 1
            sleep(1)
        sleep(0.1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: the Ray workers stopped (")
    assert "run the same command again to resume" in stderr and kills > MAX_RESTARTS
    assert_consistent(root)


@pytest.mark.slow  # tens of seconds on 2 cores: `pytest -m slow`
def test_an_inpainting_job_with_masks_runs_alike_on_ray(tmp_path, tiny_task_config):
    """Masks travel with their items through the CPU stage and the workers: the same records, images within
    2/255, and every pixel outside the mask still the fitted source's."""
    mask = Image.new("L", (640, 427))
    mask.paste(255, (100, 80, 400, 300))
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "cat.png")
    (tmp_path / "m.yaml").write_text(f"""
jobs:
  - name: masked
    keep_sources: true
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "coffee.jpg"}]
    masks: masks
    prompts: a tiger
    mask_blur: [0, 4]
    num_inference_steps: 4
    width: 64
    height: 48
""")
    command = ["run", "m.yaml", "--pipeline", str(tiny_task_config("inpaint"))]
    single = batch_edit(*command, "--output-root", "single", cwd=tmp_path)
    spread = batch_edit_subprocess(*command, "--output-root", "ray", "--ray", "--workers", "2", cwd=tmp_path)
    assert single.returncode == spread.returncode == 1, spread.stderr  # coffee has no mask: its items fail
    for table in ("metadata.csv", "failures.csv"):
        one, other = (pd.read_csv(tmp_path / run / "masked" / table) for run in ("single", "ray"))
        timing = [column for column in EXECUTION if column in one]
        pd.testing.assert_frame_equal(one.drop(columns=timing), other.drop(columns=timing), obj=table)
    for _, row in pd.read_csv(tmp_path / "ray" / "masked" / "metadata.csv").iterrows():
        folder = tmp_path / "ray" / "masked"
        made, alone = (np.asarray(Image.open(tmp_path / run / "masked" / row["file_name"]), dtype=int)
                       for run in ("ray", "single"))  # fmt: skip
        source = np.asarray(Image.open(folder / row["source_image_file_name"]), dtype=int)
        outside = np.asarray(Image.open(folder / row["mask_file_name"])) == 0
        assert np.abs(made - alone).max() <= 2 and (made[outside] == source[outside]).all()


@pytest.mark.slow  # tens of seconds on 2 cores: `pytest -m slow`
def test_url_sources_run_alike_on_ray_each_downloaded_once_per_batch(tmp_path, tiny_config):
    """Each batch's Ray task downloads its own sources, each once; the records and failures are the run's in one
    process, the images within 1/255."""
    with LoopbackServer(image=(PHOTOS / "coffee.jpg").read_bytes()) as server:
        urls = [server.url(f"/ok.png?n={n}") for n in range(6)] + [server.url("/404")]
        sources = ", ".join(f"'{url}'" for url in urls)
        (tmp_path / "m.yaml").write_text(
            f"jobs:\n  - {{name: urls, sources: [{sources}], prompts: p, strength: [0.5, 0.8], seed: 1, width: 32, "
            "height: 32, num_inference_steps: 4}\n"
        )  # 7 sources x 2 strengths: batches of 8 (the CPU's auto), each of one strength
        command = ["run", "m.yaml", "--pipeline", str(tiny_config), "--allow-private-urls"]
        single = batch_edit(*command, "--output-root", "single", cwd=tmp_path)
        assert server.hits["/ok.png"] == 6, "in one process: once each"
        spread = batch_edit_subprocess(*command, "--output-root", "ray", "--ray", "--workers", "2", cwd=tmp_path)
        assert single.returncode == spread.returncode == 1, spread.stderr  # the 404
        assert server.hits["/ok.png"] == 6 + 12, "on Ray: once per batch using it (one per strength here)"
    for table in ("metadata.csv", "failures.csv"):
        one, other = (pd.read_csv(tmp_path / run / "urls" / table) for run in ("single", "ray"))
        timing = [column for column in EXECUTION if column in one]
        pd.testing.assert_frame_equal(one.drop(columns=timing), other.drop(columns=timing), obj=table)
    for name in pd.read_csv(tmp_path / "ray" / "urls" / "metadata.csv")["file_name"]:
        made, alone = (np.asarray(Image.open(tmp_path / run / "urls" / name), dtype=int) for run in ("ray", "single"))
        assert np.abs(made - alone).max() <= 1


@pytest.mark.slow  # tens of seconds on 2 cores: `pytest -m slow`
def test_a_pipeline_that_fails_to_load_on_the_workers_is_a_load_error(tmp_path, tiny_model):
    """The engine's checks pass where the workers run (the folder exists), the load itself fails: exit 2 with
    the load's reason, as in a plain run, not "workers lost, run again to resume"."""
    (tmp_path / "broken").mkdir()
    config = write_pipeline_config(tmp_path / "broken.yaml", tmp_path / "broken")
    (tmp_path / "m.yaml").write_text(f"jobs: [{{name: b, sources: {PHOTOS / 'cat.jpg'}, prompts: x, width: 64, "
                                     "height: 64, num_inference_steps: 2}]\n")  # fmt: skip
    result = batch_edit_subprocess(
        "run", "m.yaml", "--pipeline", str(config), "--ray", "--workers", "1", "--output-root", "o", cwd=tmp_path
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a Ray worker could not load the pipeline: could not load model"), last
    assert "model_index.json" in last and "resume" not in last
    assert not (tmp_path / "o").exists()  # as when the load fails in a plain run: no folder left behind


def test_a_manifest_refused_while_planning_is_refused_before_ray_is_reached(tmp_path, tiny_config):
    """Ray starts (or is joined) once the run needs it: a typo in a manifest is the error, at once, even with a
    cluster address that does not answer, and no Ray instance is started for it."""
    (tmp_path / "m.yaml").write_text(f"jobs: [{{name: b, sources: {PHOTOS / 'cat.jpg'}, prompts: x, steps: 2}}]\n")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        result = batch_edit(
            "run", str(tmp_path / "m.yaml"), "--pipeline", str(tiny_config), "--ray", "--ray-address", address
        )
    assert result.returncode == 2
    assert "unknown key 'steps'" in result.stderr and "Ray" not in result.stderr, result.stderr
    assert not ray.is_initialized()


def chain_of_two(tmp_path: Path, photos: list[str]) -> None:
    """m.yaml: job a edits the photos, job b edits a's results (output root o)."""
    sources = ", ".join(str(PHOTOS / name) for name in photos)
    size = "width: 64, height: 64, num_inference_steps: 2"
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - {{name: a, sources: [{sources}], prompts: x, {size}}}\n"
                                     f"  - {{name: b, sources: [o/a], prompts: y, {size}}}\n")  # fmt: skip


@pytest.mark.slow  # two rounds on Ray, each loading its workers: a minute and more on 2 cores (`pytest -m slow`)
def test_a_chained_job_runs_after_its_producer_in_the_same_ray_run(tmp_path, tiny_config):
    chain_of_two(tmp_path, ["cat.jpg", "coffee.jpg"])
    result = batch_edit_subprocess(
        "run", "m.yaml", "--pipeline", str(tiny_config), "--ray", "--workers", "2", "--output-root", "o", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "job b: 2 written" in result.stdout + result.stderr
    assert "concurrent actors" not in result.stderr  # Ray Data's advice when a job has fewer batches than workers
    made = pd.read_csv(tmp_path / "o" / "a" / "metadata.csv")["file_name"]
    read = pd.read_csv(tmp_path / "o" / "b" / "metadata.csv")["source"]
    assert sorted(read) == sorted(str(tmp_path / "o" / "a" / name) for name in made) and len(made) == 2


@pytest.mark.slow  # a Ray run (`pytest -m slow`)
def test_a_stop_between_rounds_on_ray_ends_the_run_with_its_summary_not_as_a_load(tmp_path, tiny_config):
    """Each round's workers load again on Ray: a stop there is the run's stop (what the producer made is summed
    up, the reader's items left for later), not "stopped while loading the pipeline; nothing was generated"."""
    chain_of_two(tmp_path, ["cat.jpg"])
    result = stopped_between_rounds(
        "run", "m.yaml", "--pipeline", str(tiny_config), "--ray", "--workers", "1", "--output-root", "o", cwd=tmp_path
    )
    assert result.returncode == 130, result.stderr
    assert "nothing was generated" not in result.stderr
    assert "job a: 1 written" in result.stdout and "1 left for later (stopped by SIGINT)" in result.stdout
    assert len(pd.read_csv(tmp_path / "o" / "a" / "metadata.csv")) == 1
