"""What a refused LoRA list says: where it was listed (manifest file and job, or the pipeline config), and why."""

from __future__ import annotations

import pytest

from batch_edit.backends import fuse_loras
from batch_edit.errors import PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.tiny_model import build_tiny_pipeline

from .conftest import PHOTOS, batch_edit, write_pipeline_config

JOB = f"{{name: styled, sources: {PHOTOS / 'cat.jpg'}, prompts: x, loras: [%s]}}"


def test_a_lora_name_used_twice_in_a_job_names_the_manifest_and_job(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % '{path: a/ink.safetensors}, {path: b/ink.safetensors}'}]\n")
    refused = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert refused.returncode == 2
    assert "m.yaml: jobs[0] ('styled'): field 'loras': the LoRA name ink is used twice" in refused.stderr
    assert "give one a `name:`" in refused.stderr and "job LoRAs" not in refused.stderr


def test_a_job_lora_named_as_one_of_the_configs_names_both(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, loras="[{path: c/ink.safetensors}]")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % '{path: j/ink.safetensors}'}]\n")
    refused = batch_edit("plan", "m.yaml", "--pipeline", str(config), cwd=tmp_path)
    assert refused.returncode == 2
    assert "m.yaml: jobs[0] ('styled'): field 'loras': LoRA name(s) ink also used by a LoRA of" in refused.stderr
    assert f"{config} (field 'loras')" in refused.stderr and "job LoRAs" not in refused.stderr


def test_a_lora_folder_without_a_safetensors_file_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("trained on ink drawings\n")
    with pytest.raises(PipelineLoadError) as refused:
        fuse_loras(build_tiny_pipeline(), PipelineConfig(loras=[{"path": str(tmp_path)}]).loras)
    assert "the folder holds no .safetensors file" in str(refused.value)
    assert "(none)" not in str(refused.value)
