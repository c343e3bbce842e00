"""Which LoRA an item was made with: a local file is named by its size and modification time as well as its path,
and a bare relative path is local where it exists beside the config or manifest, wherever the run starts."""

from __future__ import annotations

import os

import pytest

from batch_edit.backends import fuse_loras
from batch_edit.errors import PipelineLoadError
from batch_edit.manifest import load_manifest
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
from batch_edit.tiny_model import write_tiny_lora

from .conftest import PHOTOS, batch_edit
from .test_lora import bare_pipeline  # noqa: F401 (a fixture)


def stamped(path, seconds: int):
    """Give a file a known modification time, so a test never depends on the clock's resolution."""
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))
    return path


def lora_identity(**lora) -> dict:
    (identity,) = PipelineConfig(loras=[lora]).identity()["loras"]
    return identity


def test_a_local_lora_is_named_by_its_size_and_modification_time(tmp_path):
    lora = stamped(write_tiny_lora(tmp_path / "ink.safetensors"), 1_000)
    before = lora_identity(path=str(lora), scale=0.8)
    size = lora.stat().st_size
    assert before == {"path": str(lora), "scale": 0.8, "lora_file": f"{size}-{1_000 * 10**9}"}
    stamped(write_tiny_lora(lora, rank=8, seed=2), 1_000)  # retrained: another size
    assert lora_identity(path=str(lora), scale=0.8) != before
    stamped(write_tiny_lora(lora, seed=2), 2_000)  # the first size again, another time
    assert lora_identity(path=str(lora), scale=0.8)["lora_file"] == f"{size}-{2_000 * 10**9}"
    lora.unlink()
    assert lora_identity(path=str(lora), scale=0.8)["lora_file"] == "missing"


def test_a_folder_lora_is_named_by_the_file_it_loads(tmp_path):
    chosen = stamped(write_tiny_lora(tmp_path / "loras" / "a.safetensors"), 1_000)
    other = stamped(write_tiny_lora(tmp_path / "loras" / "b.safetensors", rank=2), 1_000)
    folder = chosen.parent.as_posix()
    before = lora_identity(path=folder, weight_name="a.safetensors")
    assert before["lora_file"] == f"{chosen.stat().st_size}-{1_000 * 10**9}"
    stamped(other, 2_000)
    assert lora_identity(path=folder, weight_name="a.safetensors") == before
    stamped(chosen, 2_000)
    assert lora_identity(path=folder, weight_name="a.safetensors") != before
    other.unlink()  # a folder holding one file loads it without a weight_name
    assert lora_identity(path=folder)["lora_file"] == f"{chosen.stat().st_size}-{2_000 * 10**9}"


def test_a_hub_lora_keeps_its_identity():
    assert lora_identity(path="someone/flux-lora", weight_name="style.safetensors", scale=0.5) == {
        "path": "someone/flux-lora",
        "scale": 0.5,
        "weight_name": "style.safetensors",
    }


def test_a_lora_replaced_in_place_makes_new_items(tmp_path, tiny_config):
    lora = write_tiny_lora(tmp_path / "lora" / "ink.safetensors")
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: zebra, num_inference_steps: 2, strength: 0.5, "
        "width: 64, height: 64, loras: [{path: lora/ink.safetensors, scale: 0.8}]}]\n"
    )
    args = ("m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit("run", *args, cwd=tmp_path).returncode == 0
    assert "1 item(s), 1 already done" in batch_edit("plan", *args, cwd=tmp_path).stdout
    write_tiny_lora(lora, rank=8, seed=2)  # retrained at the same path: other weights, other size
    plan = batch_edit("plan", *args, cwd=tmp_path)
    assert "1 item(s), 0 already done" in plan.stdout, plan.stdout + plan.stderr


@pytest.fixture
def lora_folder_beside_config(tmp_path, monkeypatch):
    """configs/p.yaml naming `path: lora3`, a folder beside it holding two LoRA files; the run starts elsewhere."""
    configs = tmp_path / "configs"
    write_tiny_lora(configs / "lora3" / "a_strong.safetensors", magnitude=1.5)
    write_tiny_lora(configs / "lora3" / "b_zero.safetensors", magnitude=0)
    (configs / "p.yaml").write_text("device: cpu\nloras:\n  - path: lora3\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return configs


def test_a_bare_folder_name_beside_the_config_is_local(lora_folder_beside_config, bare_pipeline):  # noqa: F811
    (lora,) = load_pipeline_config(lora_folder_beside_config / "p.yaml").loras
    assert lora.is_local and lora.path == (lora_folder_beside_config / "lora3").resolve().as_posix()
    with pytest.raises(PipelineLoadError) as refused:
        fuse_loras(bare_pipeline, [lora], local_files_only=True)
    assert "set weight_name to one of the folder's .safetensors files (a_strong.safetensors, b_zero" in str(
        refused.value
    )


def test_a_bare_folder_name_in_a_job_resolves_against_the_manifest(lora_folder_beside_config):
    manifest = lora_folder_beside_config / "m.yaml"
    manifest.write_text(
        f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: x, "
        "loras: [{path: lora3, weight_name: b_zero.safetensors}, {path: someone/flux-lora}]}]\n"
    )
    (job,) = load_manifest(manifest).jobs
    local, hub = job.loras
    assert local.path == (lora_folder_beside_config / "lora3").resolve().as_posix()
    chosen = (lora_folder_beside_config / "lora3" / "b_zero.safetensors").stat()
    assert local.identity()["lora_file"] == f"{chosen.st_size}-{chosen.st_mtime_ns}"
    assert (hub.path, hub.is_local) == ("someone/flux-lora", False)


def test_a_bare_name_that_is_no_path_beside_the_config_stays_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "p.yaml").write_text("device: cpu\nloras: [{path: lora3}, {path: someone/flux-lora}]\n")
    write_tiny_lora(tmp_path / "lora3" / "a.safetensors")  # beside the current directory, not beside the config
    monkeypatch.chdir(tmp_path)
    loaded = load_pipeline_config(tmp_path / "configs" / "p.yaml").loras
    assert [(lora.path, lora.is_local) for lora in loaded] == [("lora3", False), ("someone/flux-lora", False)]
