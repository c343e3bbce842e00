"""Pipeline-config problems refused early and named: settings that cannot work together at config load (so `plan`
refuses them too), LoRA files by the key that lists them, single files by what they hold, one device warning."""

from __future__ import annotations

import shutil

import pytest

from batch_edit.backends import fuse_loras
from batch_edit.engine import Engine
from batch_edit.errors import PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config

from .conftest import PHOTOS, batch_edit, write_pipeline_config

MANIFEST = f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: a tiger, num_inference_steps: 2}}]\n"


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"compile": "regional"}, "compile: regional does not work with quanto-quantized weights"),
        ({"compile": "true", "quantization": "{backend: quanto}"}, "compile: true does not work with quanto"),
        ({"quantization": "{backend: torchao, torchao_type: float8_dynamic_row}"},
         ("quantization.torchao_type: float8_dynamic_row needs a CUDA GPU of compute capability 8.9 or newer, "
          "not device: cpu")),
    ],
)  # fmt: skip
def test_backend_combinations_are_refused_by_plan_and_run_before_any_weight_loads(
    tmp_path, tiny_model, settings, expected
):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, **settings)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    for command in ("plan", "run"):
        result = batch_edit(command, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
        assert result.returncode == 2 and f"error: {config}: {expected}" in result.stderr, result.stderr
        assert "loading" not in result.stderr and not (tmp_path / "out").exists()


def test_a_missing_lora_is_a_plan_warning_and_run_names_the_config_and_key(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, loras="[{path: style-v2.safetensors}]")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    problem = f"{config}: field 'loras[0].path': LoRA 'style-v2': file not found: {tmp_path / 'style-v2.safetensors'}"
    planned = batch_edit("plan", "m.yaml", "--pipeline", str(config), cwd=tmp_path)
    assert planned.returncode == 0 and f"warning: {problem}: `batch-edit run` would refuse it" in planned.stderr
    ran = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert ran.returncode == 2 and f"error: {problem}\n" in ran.stderr, ran.stderr


def test_a_missing_lora_a_job_lists_names_the_manifest_and_job(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("}]", ", loras: [{path: ./gone.safetensors}]}]"))
    ran = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    where = "m.yaml: jobs[0] ('j'): field 'loras[0].path': LoRA 'gone': file not found"
    assert ran.returncode == 2 and f"error: {where}" in ran.stderr, ran.stderr


def test_a_lora_made_for_another_model_shows_its_keys(tmp_path):
    import torch
    from safetensors.torch import save_file

    from batch_edit.tiny_model import build_tiny_pipeline

    keys = [f"lora_unet_down_blocks_0_attentions_0_proj_in.lora_{part}.weight" for part in ("down", "up")]
    save_file({keys[0]: torch.zeros(4, 32), keys[1]: torch.zeros(32, 4)}, str(tmp_path / "sd15.safetensors"))
    config = PipelineConfig(loras=[{"path": str(tmp_path / "sd15.safetensors")}])
    with pytest.raises(PipelineLoadError) as refused:
        fuse_loras(build_tiny_pipeline(), config.loras, True, config.lora_field)
    message = str(refused.value)
    assert message.startswith("the pipeline config: field 'loras[0]': LoRA 'sd15'")
    assert "its keys do not fit a FLUX.1 transformer (lora_unet_down_blocks_0_attentions_0_proj_in.lora_" in message
    assert "a LoRA for a Stable Diffusion UNet" in message and "\n" not in message


def test_single_files_that_are_not_a_transformer_the_base_fits_say_what_they_hold(
    tmp_path, tiny_model, tiny_task_model
):
    shutil.copy(tiny_model / "vae" / "diffusion_pytorch_model.safetensors", tmp_path / "vae.safetensors")
    fill = tiny_task_model("fill") / "transformer" / "diffusion_pytorch_model.safetensors"
    shutil.copy(fill, tmp_path / "fill.safetensors")

    def refusal(name: str) -> str:
        config = write_pipeline_config(tmp_path / "p.yaml", tmp_path / name, base_model=tiny_model)
        with pytest.raises(PipelineLoadError) as refused:
            Engine.load(load_pipeline_config(config), announce=False)
        return str(refused.value)

    vae = refusal("vae.safetensors")
    assert "field 'model'" in vae and "no FLUX.1 transformer keys found (keys: decoder." in vae
    assert "it looks like a VAE" in vae
    filled = refusal("fill.safetensors")
    assert "its transformer takes 288 input channels where base_model's takes 16" in filled
    assert "set task: fill and base_model to a FLUX.1-Fill pipeline" in filled and "low_cpu_mem" not in filled


def test_plan_says_once_that_a_torchao_cuda_config_has_no_gpu_here(tmp_path, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    config = write_pipeline_config(tmp_path / "gpu.yaml", tiny_model, device="cuda", quantization="{backend: torchao}")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    planned = batch_edit("plan", "m.yaml", "--pipeline", str(config), cwd=tmp_path)
    said = planned.stdout + planned.stderr
    assert planned.returncode == 0 and "note:" not in said and said.count("asks for device 'cuda'") == 1, said
    assert "torchao_type auto stays unresolved" in planned.stderr


def test_an_unknown_key_inside_a_section_is_named_with_its_section(tmp_path):
    from batch_edit.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("device: cpu\nquantization: {backend: quanto, transformr: qint8}\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: unknown key 'quantization.transformr' \(did you mean 'transformer'\?\)"
    ):
        load_pipeline_config(config)
