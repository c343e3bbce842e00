"""End to end through the installed `batch-edit` command, with the tiny real FLUX pipeline on the CPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from .conftest import PHOTOS, batch_edit, batch_edit_process, write_pipeline_config

GRID_YAML = """
    jobs:
      - name: grid
        sources: [photos/cat.jpg, photos/coffee.jpg]
        prompts: ["a tiger, photo", "{stem}, watercolor"]
        strength: [0.5, 0.75]  # with 4 steps, above 0.75 starts from pure noise
        num_inference_steps: 4
        seed: 7
        width: 64
        height: 64
"""
ROWS_CSV = """\
    source,prompt,strength,num_inference_steps,seed,width,height,resize
    photos/rocket.jpg,"a rocket, at night",0.7,4,1,96,64,pad
    photos/astronaut.jpg,an astronaut: oil painting,0.7,4,,64,128,stretch
    photos/coffee.jpg,a cup of tea,0.6,4,3,64,64,fit
"""


@pytest.fixture
def workspace(tmp_path):
    shutil.copytree(PHOTOS, tmp_path / "photos")
    (tmp_path / "grid.yaml").write_text(textwrap.dedent(GRID_YAML))
    (tmp_path / "rows.csv").write_text(textwrap.dedent(ROWS_CSV))
    return tmp_path


def read_images(folder) -> dict[str, np.ndarray]:
    return {path.name: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def test_plan_then_run_yaml_grid_and_csv_rows_together(workspace, tiny_config):
    manifests = ["grid.yaml", "rows.csv"]
    plan = batch_edit("plan", *manifests, "--pipeline", str(tiny_config), cwd=workspace)
    assert plan.returncode == 0, plan.stderr
    assert "job grid: 8 item(s)" in plan.stdout and "job rows: 3 item(s)" in plan.stdout
    assert not (workspace / "outputs").exists(), "plan must not write anything"

    first = batch_edit("run", *manifests, "--pipeline", str(tiny_config), "--output-root", "out1", cwd=workspace)
    assert first.returncode == 0, first.stderr
    assert "job grid: 8 written" in first.stdout and "job rows: 3 written" in first.stdout
    assert "batch-edit: 11/11 items, 0 failed" in first.stderr  # the plain progress line of a non-terminal
    noise = [line for line in first.stderr.splitlines() if line.strip() and not line.startswith("batch-edit: ")]
    assert not noise, "a clean run prints only its progress; library chatter waits for --verbose"

    for job, count in (("grid", 8), ("rows", 3)):
        folder = workspace / "out1" / job
        metadata = pd.read_csv(folder / "metadata.csv")
        assert list(metadata.columns[:2]) == ["file_name", "item_id"]
        assert len(metadata) == count and metadata["item_id"].is_unique
        assert metadata["model"].str.endswith("/tiny-flux").all() and (metadata["device"] == "cpu").all()
        assert (metadata["quantization"] == "quanto(transformer=qint8,text_encoder=qint4,text_encoder_2=qint4)").all()
        assert (metadata["seconds"] > 0).all()
        for row in metadata.itertuples():
            with Image.open(folder / row.file_name) as image:
                assert image.format == "PNG" and image.mode == "RGB"
                assert image.size == (row.width, row.height), row.file_name
        assert pd.read_csv(folder / "failures.csv").empty

    rows = pd.read_csv(workspace / "out1" / "rows" / "metadata.csv").set_index("prompt")
    assert (rows.loc["a rocket, at night", ["width", "height", "seed"]] == [96, 64, 1]).all()
    assert rows.loc["an astronaut: oil painting", "seed_derived"] and rows.loc["a cup of tea", "seed"] == 3
    # fit keeps the 3:2 photo's aspect ratio at about 64x64 of area, in multiples of 16
    assert tuple(rows.loc["a cup of tea", ["width", "height"]]) == (80, 48)
    sheets = sorted(path.name for path in (workspace / "out1" / "grid").glob("contact-sheet*.png"))
    assert sheets == ["contact-sheet-cat.png", "contact-sheet-coffee.png"]
    grid = pd.read_csv(workspace / "out1" / "grid" / "metadata.csv")
    assert sorted(set(grid["prompt"])) == ["a tiger, photo", "cat, watercolor", "coffee, watercolor"]
    assert set(grid["strength"]) == {0.5, 0.75} and set(grid["seed"]) == {7}

    # The same manifests again, into a fresh folder: pixel-identical images under the same names.
    second = batch_edit("run", *manifests, "--pipeline", str(tiny_config), "--output-root", "out2", cwd=workspace)
    assert second.returncode == 0, second.stderr
    for job in ("grid", "rows"):
        one, two = read_images(workspace / "out1" / job), read_images(workspace / "out2" / job)
        assert one.keys() == two.keys() and len(one) > 0
        for name in one:
            assert np.array_equal(one[name], two[name]), name
        assert len({array.tobytes() for array in one.values()}) == len(one), "every item should differ"

    # Re-running a finished run skips everything without loading the model.
    again = batch_edit("run", *manifests, "--pipeline", str(tiny_config), "--output-root", "out1", cwd=workspace)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "8 already done" in again.stdout


def test_broken_sources_become_failure_rows_and_exit_1(workspace, tiny_config):
    (workspace / "photos" / "notes.jpg").write_text("this is text, not a JPEG")
    (workspace / "mixed.csv").write_text(
        "source,prompt,num_inference_steps,width,height\n"
        "photos/cat.jpg,a tiger,4,64,64\n"
        "photos/gone.jpg,a ghost,4,64,64\n"
        "photos/notes.jpg,a note,4,64,64\n"
    )
    result = batch_edit("run", "mixed.csv", "--pipeline", str(tiny_config), "--output-root", "out", cwd=workspace)
    assert result.returncode == 1, result.stderr
    assert "1 written" in result.stdout and "2 failed" in result.stdout
    assert "batch-edit: 3/3 items, 2 failed" in result.stderr
    folder = workspace / "out" / "mixed"
    assert len(pd.read_csv(folder / "metadata.csv")) == 1
    failures = pd.read_csv(folder / "failures.csv").set_index("prompt")
    assert failures.loc["a ghost", "error"].startswith("file not found")
    assert failures.loc["a note", "error"] == "not an image"
    assert set(failures["stage"]) == {"load"} and (failures["num_inference_steps"] == 4).all()


BAD_MANIFESTS = {
    "unknown-key": ("jobs: [{name: a, sources: photos/cat.jpg, prompts: x, sed: 1}]", "unknown key 'sed'"),
    "out-of-range": ("jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strength: 1.2}]", "field 'strength'"),
    "code-tag": ("jobs: !!python/object/apply:os.system ['echo pwned > pwned.txt']", "not valid YAML"),
    "dotdot-name": ("jobs: [{name: '..', sources: photos/cat.jpg, prompts: x}]", "'..' is not allowed"),
    "empty-glob": ("jobs: [{name: a, sources: 'photos/*.webp', prompts: x}]", "matches no image"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifests_exit_2_and_write_nothing(workspace, tiny_config, case):
    body, expected = BAD_MANIFESTS[case]
    (workspace / "bad.yaml").write_text(body + "\n")
    before = sorted(path.name for path in workspace.iterdir())
    for command in ("plan", "run"):
        result = batch_edit(command, "bad.yaml", "grid.yaml", "--pipeline", str(tiny_config), cwd=workspace)
        assert result.returncode == 2, result.stdout + result.stderr
        assert expected in result.stderr and "bad.yaml" in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(path.name for path in workspace.iterdir()) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_missing_gpu_is_a_clear_refusal(workspace, tiny_model):
    config = write_pipeline_config(workspace / "gpu.yaml", tiny_model, device="cuda")
    result = batch_edit("run", "grid.yaml", "--pipeline", str(config), "--output-root", "out", cwd=workspace)
    assert result.returncode == 2
    assert "no CUDA GPU is visible" in result.stderr and "Traceback" not in result.stderr
    assert not (workspace / "out").exists()


def test_missing_model_and_bad_config_are_clear_refusals(workspace, tmp_path):
    missing = write_pipeline_config(workspace / "missing.yaml", tmp_path / "no-such-model")
    result = batch_edit("run", "grid.yaml", "--pipeline", str(missing), "--output-root", "out", cwd=workspace)
    assert result.returncode == 2 and "missing.yaml: field 'model': folder not found" in result.stderr
    (workspace / "hub.yaml").write_text("model: black-forest-labs/FLUX.1-dev\ndevice: cpu\ndtype: float32\n")
    result = batch_edit("run", "grid.yaml", "--pipeline", "hub.yaml", "--output-root", "out", cwd=workspace)
    assert result.returncode == 2 and "not in the local cache and could not be downloaded" in result.stderr
    (workspace / "typo.yaml").write_text("model: ./m\nquantisation: {backend: none}\n")
    result = batch_edit("plan", "grid.yaml", "--pipeline", "typo.yaml", cwd=workspace)
    assert result.returncode == 2 and "unknown key 'quantisation'" in result.stderr and "quantization" in result.stderr
    assert not (workspace / "out").exists()


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "batch_edit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "make-tiny-model" in result.stdout


def test_a_reader_that_leaves_early_gets_no_traceback(workspace):
    """`batch-edit plan ... | head -1`: the pipe closes before the output is written."""
    process = batch_edit_process("plan", "grid.yaml", "--output-root", "out", cwd=workspace)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
