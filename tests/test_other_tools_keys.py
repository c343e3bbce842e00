"""Key names of other tools (AUTOMATIC1111/Forge, ComfyUI, diffusers) in a YAML job or a CSV header: refused
saying what to write here, not with a spelling guess."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import PHOTOS, refusal

# another tool's name, a value it takes there, and what the message says to write
NAMES = [
    ("steps", "20", "write 'num_inference_steps'"),
    ("cfg", "7", "write 'guidance_scale'"),
    ("cfg_scale", "7", "write 'guidance_scale'"),
    ("guidance", "3.5", "write 'guidance_scale'"),
    ("denoise", "0.6", "write 'strength'"),
    ("denoising_strength", "0.6", "write 'strength'"),
    ("seeds", "5", "write 'seed'"),
    ("n_iter", "4", "write 'variations'"),
    ("batch_count", "4", "write 'variations'"),
    ("size", "512", "write 'width' and 'height'"),
    ("batch_size", "2", "images per pipeline call are the pipeline config's 'batch_size'"),
]


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photos" / "cat.jpg")
    return tmp_path


@pytest.mark.parametrize("name, value, expected", NAMES)
def test_a_yaml_job_with_another_tools_key_says_what_to_write(folder, name, value, expected):
    path = folder / "job.yaml"
    path.write_text(f"jobs: [{{name: a, sources: photos/cat.jpg, prompts: x, {name}: {value}}}]\n")
    message = refusal(path)
    assert f"jobs[0] ('a'): unknown key '{name}': {expected}" in message, message
    assert "did you mean" not in message


@pytest.mark.parametrize("name, value, expected", NAMES)
def test_a_csv_column_with_another_tools_name_says_what_to_write(folder, name, value, expected):
    path = folder / "rows.csv"
    path.write_text(f"source,prompt,{name}\nphotos/cat.jpg,x,{value}\n")
    message = refusal(path)
    assert f"unknown column '{name}': {expected}" in message, message
    assert "did you mean" not in message


def test_the_names_as_a1111_labels_them_and_in_defaults_too(folder):
    path = folder / "job.yaml"
    path.write_text("defaults: {CFG Scale: 7}\njobs: [{name: a, sources: photos/cat.jpg, prompts: x, Steps: 20}]\n")
    message = refusal(path)
    assert "defaults: unknown key 'CFG Scale': write 'guidance_scale'" in message, message
    assert "unknown key 'Steps': write 'num_inference_steps';" in message, message
    rows = folder / "rows.csv"
    rows.write_text("source,prompt,Denoising Strength\nphotos/cat.jpg,x,0.5\n")
    assert "unknown column 'denoising strength': write 'strength'" in refusal(rows)


def test_where_no_parameter_goes_the_name_gets_no_hint(folder):
    """At a manifest's top level a parameter is as wrong as the other tool's name: the spelling guess as before."""
    path = folder / "job.yaml"
    path.write_text("steps: 20\njobs: [{name: a, sources: photos/cat.jpg, prompts: x}]\n")
    message = refusal(path)
    assert "unknown key 'steps'" in message and "num_inference_steps" not in message, message
