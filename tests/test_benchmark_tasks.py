"""The GPU benchmarks run every shipped config, whatever its task: each task's pipeline at full size (fill on
FLUX.1-Fill-dev's transformer), items as that task takes them (masks for inpaint and fill, no strength for fill
and kontext, the task's steps and guidance), a memory-table row and a suite step for each task config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from batch_edit.pipeline_config import MASKED_TASKS, PIPELINE_CLASSES, TASKS, load_pipeline_config

from .test_benchmarks import bench  # loads gpu_throughput.py, which puts benchmarks/ on the path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
SUITE = REPO / "benchmarks" / "gpu_suite.py"
TASK_CONFIGS = {
    "inpaint": REPO / "configs" / "flux1-dev-inpaint-24gb.yaml",
    "fill": REPO / "configs" / "flux1-fill-dev-24gb.yaml",
    "kontext": REPO / "configs" / "flux1-kontext-dev-24gb.yaml",
}
memory = sys.modules["memory_contract"]
architecture = sys.modules["flux_architecture"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def args_for(config: Path | None = None, **given) -> argparse.Namespace:
    """The benchmark's arguments as its parser leaves them when only `given` is on the command line."""
    defaults = dict(
        reduced=False, device=None, backends=None, batch_sizes=None, configs=None, items=None, calls=4, size=None,
        steps=None, strength=None, guidance=None, out=None, keep_metadata=None, set=None, memory_cap_gib=None,
        compile_cache_dir=None, config=config, phases=False, memory_history=None,
    )  # fmt: skip
    return argparse.Namespace(**{**defaults, **given})


# --- full-size pipelines per task ------------------------------------------------------------------------------


@pytest.mark.slow  # the suite's default run stays short: `pytest -m slow` runs it
def test_each_task_builds_its_own_pipeline_at_full_size_without_memory():
    """On the meta device: the task's diffusers class; FLUX.1-dev's transformer (11,901,408,320 parameters, as
    test_benchmarks pins) for img2img, inpaint and kontext; for fill FLUX.1-Fill-dev's, whose input layer also
    takes the masked source's latents and the mask (384 channels in, 64 out: 320 x 3072 more weights)."""
    import torch

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    for task in TASKS:
        pipe = architecture.build_flux_dev_pipeline("meta", torch.bfloat16, task=task)
        assert type(pipe).__name__ == PIPELINE_CLASSES[task], task
        transformer = pipe.transformer.config
        if task == "fill":
            # what FluxFillPipeline feeds it: packed noise and masked-source latents, and the mask per 8x8 cell x 2x2
            packed = pipe.vae.config.latent_channels * 4
            assert transformer.in_channels == 2 * packed + 4 * pipe.vae_scale_factor**2 == 384
            assert transformer.out_channels == packed == 64
            assert count(pipe.transformer) == 11_901_408_320 + (384 - 64) * 3072
        else:
            assert (transformer.in_channels, transformer.out_channels) == (64, None), task
            assert count(pipe.transformer) == 11_901_408_320, task
        assert pipe.transformer.proj_out.out_features == 64, task
        assert count(pipe.text_encoder_2) == 4_762_310_656 and count(pipe.vae) == 83_819_683, task
        assert {p.device.type for p in pipe.transformer.parameters()} == {"meta"}, task
        assert {p.dtype for p in pipe.transformer.parameters()} == {torch.bfloat16}, task
    assert torch.get_default_dtype() == torch.float32


# --- items per task ---------------------------------------------------------------------------------------------


def test_items_take_the_tasks_steps_guidance_and_strength():
    expected = {"inpaint": (28, 0.9, 3.5), "fill": (50, None, 30.0), "kontext": (28, None, 2.5)}
    for task, config in TASK_CONFIGS.items():
        settings = bench.settings_from(args_for(config))
        assert settings.task == task
        assert (settings.steps, settings.strength, settings.guidance) == expected[task], task
        given = bench.settings_from(args_for(config, steps=20, guidance=4.0))
        assert (given.steps, given.guidance) == (20, 4.0), "given values win over the task's"
    fill = bench.settings_from(args_for(TASK_CONFIGS["fill"]))
    assert fill.work() == "fill 1024x1024, 50 steps, guidance 30, a mask per photo" and fill.passes == 50
    inpaint = bench.settings_from(args_for(TASK_CONFIGS["inpaint"]))
    assert inpaint.work() == "inpaint 1024x1024, 28 steps, strength 0.9, guidance 3.5, a mask per photo"
    assert inpaint.passes == 26


def test_a_strength_for_a_task_that_takes_none_is_refused(tmp_path, capsys):
    out = tmp_path / "m.md"
    with pytest.raises(SystemExit) as refused:
        bench.main(["--reduced", "--config", str(TASK_CONFIGS["kontext"]), "--strength", "0.5", "--out", str(out)])
    assert refused.value.code == 2
    assert "--strength: the kontext task takes no strength (flux1-kontext-dev-24gb.yaml)" in capsys.readouterr().err
    assert not out.exists()


def test_masked_tasks_plan_a_mask_per_photo_through_the_manifest(tmp_path):
    for task, config in TASK_CONFIGS.items():
        settings = bench.settings_from(args_for(config, reduced=True))
        folder = tmp_path / task
        folder.mkdir()
        (plan,) = bench.write_plans(settings, folder, 8)
        assert len(plan.items) == 8
        assert {item.strength for item in plan.items} == ({0.9} if task == "inpaint" else {None})
        if task not in MASKED_TASKS:
            assert {item.mask for item in plan.items} == {None} and not (folder / "masks").exists()
            continue
        for item in plan.items:  # paired by stem from the folder the manifest names
            assert Path(item.mask.key) == folder / "masks" / f"{Path(item.source.key).stem}.png"
            with Image.open(item.source.key) as source, Image.open(item.mask.key) as mask:
                assert mask.mode == "L" and mask.size == source.size
                width, height = mask.size
                assert mask.getpixel((width // 2, height // 2)) == 255 and mask.getpixel((0, 0)) == 0


# --- the memory table and the suite -----------------------------------------------------------------------------


def test_every_shipped_cuda_config_has_a_cap_and_a_placeholder_row(tmp_path):
    configs = sorted((REPO / "configs").glob("*.yaml"))
    cuda = {path.name for path in configs if load_pipeline_config(path).device.startswith("cuda")}
    assert cuda == set(memory.SHIPPED_CAPS), "a shipped CUDA config needs its card's cap in SHIPPED_CAPS"
    assert {name: memory.SHIPPED_CAPS[name] for name in (p.name for p in TASK_CONFIGS.values())} == dict.fromkeys(
        (p.name for p in TASK_CONFIGS.values()), 22.0
    )
    table = tmp_path / "gpu_memory.md"  # a fresh table: one measured row, every other config a placeholder
    row = bench.Row("flux1-dev-24gb.yaml", 1, s_per_image=6.2, peak_gib=20.1)
    memory.record(table, memory.cells(row, 22.0, "NVIDIA H100", "abc1234", "img2img 1024x1024, 28 steps"))
    rows = {r["config"]: r for r in memory.read_rows(table)}
    assert set(rows) == set(memory.SHIPPED_CAPS)
    assert rows["flux1-dev-24gb.yaml"]["work"] == "img2img 1024x1024, 28 steps"
    for path in TASK_CONFIGS.values():
        assert (rows[path.name]["status"], rows[path.name]["work"]) == (memory.NOT_MEASURED, "n/a")


def test_a_table_written_before_the_work_column_keeps_its_rows(tmp_path):
    table = tmp_path / "gpu_memory.md"
    old_columns = [column for column in memory.COLUMNS if column != "work"]
    measured = ["flux1-dev-16gb.yaml", "15", "ok", "14.2", "9.0", "1", "9.9", "30", "80", "NVIDIA L4", "d", "c"]
    table.write_text("| " + " | ".join(old_columns) + " |\n|" + "---|" * len(old_columns) + "\n| "
                     + " | ".join(measured) + " |\n")  # fmt: skip
    memory.record(table, memory.cells(bench.Row("flux1-fill-dev-24gb.yaml", 1), 22.0, "NVIDIA L4", "c", "fill"))
    rows = {r["config"]: r for r in memory.read_rows(table)}
    assert (rows["flux1-dev-16gb.yaml"]["peak GiB"], rows["flux1-dev-16gb.yaml"]["work"]) == ("14.2", "n/a")
    assert rows["flux1-fill-dev-24gb.yaml"]["work"] == "fill"


def test_the_suite_measures_each_task_config_under_22_gib(tmp_path):
    import gpu_suite  # beside gpu_throughput.py, on the path

    steps = gpu_suite.steps(tmp_path, tmp_path)
    names = [step.name for step in steps]
    tasks = ["memory-inpaint-24gb", "memory-fill-24gb", "memory-kontext-24gb"]
    at = names.index("memory-12gb")
    assert names[at + 1 : at + 4] == tasks
    for step, (task, config) in zip(steps[at + 1 : at + 4], TASK_CONFIGS.items()):
        assert step.name == f"memory-{task}-24gb" and step.timeout_s <= 150
        args = step.args
        assert args[args.index("--config") + 1] == str(config)
        assert args[args.index("--memory-cap-gib") + 1] == "22" and args[args.index("--calls") + 1] == "2"
        reduced = gpu_suite.reduced_args(args)
        assert "--memory-cap-gib" not in reduced and reduced[reduced.index("--config") + 1] == str(config)


def test_every_shipped_config_gets_its_row_from_a_suite_step_run_as_shipped(tmp_path):
    """Each (config, cap) row of the memory table is written by a step running that config unchanged (no --set:
    an override is another row) under that cap."""
    import gpu_suite

    measured = set()
    for step in gpu_suite.steps(tmp_path, tmp_path):
        args = step.args
        if "--config" in args and "--memory-cap-gib" in args and "--set" not in args:
            measured.add((Path(args[args.index("--config") + 1]).name, float(args[args.index("--memory-cap-gib") + 1])))
    assert measured == set(memory.SHIPPED_CAPS.items())


# --- reduced runs through the real runner ------------------------------------------------------------------------


def reduced_run(tmp_path: Path, task: str) -> dict[str, str]:
    """One reduced-form memory row of the task's config, its metadata.csv kept."""
    out, kept = tmp_path / "memory.md", tmp_path / "metadata"
    command = [sys.executable, str(SCRIPT), "--reduced", "--config", str(TASK_CONFIGS[task]), "--items", "2",
               "--calls", "2", "--out", str(out), "--keep-metadata", str(kept)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = memory.read_rows(out)
    assert row["config"] == TASK_CONFIGS[task].name and row["status"] == "ok"
    assert row["batch"] == "1" and float(row["s/image (steady median)"]) > 0
    assert row["work"].startswith(f"{task} 64x64, 4 steps")
    (metadata,) = kept.iterdir()
    return pd.read_csv(metadata, keep_default_na=False).to_dict("records")


@pytest.mark.slow  # the suite's default run stays short: `pytest -m slow` runs it
def test_the_fill_config_runs_through_the_runner_with_masks(tmp_path):
    records = reduced_run(tmp_path, "fill")
    assert len(records) == 2
    for record in records:
        assert (record["task"], record["guidance_scale"], record["strength"]) == ("fill", 30.0, "")
        assert Path(record["mask"]).name == f"{Path(record['source']).stem}.png"


@pytest.mark.slow  # each reduced run takes about 9 s on 2 cores
@pytest.mark.parametrize("task", ["inpaint", "kontext"])
def test_the_inpaint_and_kontext_configs_run_through_the_runner(tmp_path, task):
    records = reduced_run(tmp_path, task)
    assert {record["task"] for record in records} == {task} and len(records) == 2
    if task == "inpaint":
        assert {record["strength"] for record in records} == {0.9}
        assert all(Path(r["mask"]).name == f"{Path(r['source']).stem}.png" for r in records)
    else:
        assert {record["strength"] for record in records} == {""} and "mask" not in records[0]


@pytest.mark.slow  # a reduced run through the suite's driver: about 10 s
def test_the_suite_step_of_the_fill_config_gives_its_row(tmp_path):
    results = tmp_path / "r"
    command = [sys.executable, str(SUITE), "--reduced", "--only", "memory-fill-24gb", "--results", str(results)]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "| memory-fill-24gb | ok |" in (results / "gpu_suite.md").read_text()
    (row,) = memory.read_rows(results / "gpu_memory.md")
    assert (row["config"], row["status"], row["GPU"]) == ("flux1-fill-dev-24gb.yaml", "ok", "CPU")


def test_a_step_cut_off_at_its_limit_leaves_its_stacks_in_the_log(tmp_path, monkeypatch):
    """A step that outlives its limit is asked for every thread's stack (SIGUSR1, which the benchmark hands to
    faulthandler) before it is killed: the log says where the time went, even on a machine already given back."""
    import gpu_suite

    stuck = tmp_path / "stuck.py"
    stuck.write_text(
        f"import sys, time\nsys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "from throughput_timing import dump_stacks_on_signal, stage\n"
        "def waiting_for_the_gpu():\n    time.sleep(60)\n"
        "dump_stacks_on_signal()\nstage('loaded')\nwaiting_for_the_gpu()\n"
    )
    monkeypatch.setattr(gpu_suite, "BENCHMARK", stuck)
    # The stacks are written as the signal arrives: a second's grace is plenty (the suite's own is longer)
    monkeypatch.setattr(gpu_suite, "STACK_DUMP_S", 1)
    log = gpu_suite.StepLog(tmp_path, reduced=True)
    step = gpu_suite.Step("stuck", (), 3, "a step that never ends")  # it reaches "loaded" in a fraction of that
    status, wall = gpu_suite.run_step(step, (), step.timeout_s, log)
    text = log.log.read_text()
    assert status.startswith("timed out after 3 s; last stage: [") and status.endswith("] loaded") and wall < 30
    assert "] loaded" in text  # the stage line, timestamped
    assert "most recent call first" in text and "waiting_for_the_gpu" in text
    assert text.rstrip().endswith("===== stuck: killed at its 3 s limit (stacks above)")


def test_a_step_ended_by_the_stack_signal_itself_is_reported_timed_out(tmp_path, monkeypatch):
    """A step cut off before it set up its stack dump (still importing) dies of SIGUSR1 during the grace period:
    the suite goes on to its next step (killing a process group already gone raised ProcessLookupError)."""
    import gpu_suite

    stuck = tmp_path / "importing.py"
    stuck.write_text("import time\ntime.sleep(60)\n")  # no handler: SIGUSR1 ends it
    monkeypatch.setattr(gpu_suite, "BENCHMARK", stuck)
    monkeypatch.setattr(gpu_suite, "STACK_DUMP_S", 1)
    log = gpu_suite.StepLog(tmp_path, reduced=True)
    step = gpu_suite.Step("importing", (), 2, "a step cut off before its stack dump is set up")
    status, wall = gpu_suite.run_step(step, (), step.timeout_s, log)
    assert status == "timed out after 2 s; no stage line (it ended or was cut off before its first)" and wall < 30
    assert log.log.read_text().rstrip().endswith("===== importing: killed at its 2 s limit (stacks above)")
