"""What a pipeline config contributes to item ids, and where its local paths point: settings that change images
(max_sequence_length, quantization.exclude, a local model folder's weights) make new items, those left at their
defaults keep the ids they had; a bare `model:` path is the folder beside the config, never one in the working
directory; a revision a local folder cannot have, and an exclude pattern matching no module, are refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from batch_edit.backends import check_exclude
from batch_edit.errors import ConfigError, PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig, load_pipeline_config
from batch_edit.records import config_hash

from .conftest import PHOTOS, REPO, batch_edit, write_pipeline_config
from .test_repro2 import reproduced
from .test_repro_masks import kept_job, run_kept

# The shipped hub configs' hashes: none changes with the keys added to the identity here, except flux1-schnell's,
# which sets max_sequence_length: 256 (its images always differed from 512's; its items run once more).
SHIPPED = {
    "flux1-dev-12gb.yaml": "801aa215449d387d", "flux1-dev-16gb.yaml": "4cccf805ab46cf31",
    "flux1-dev-24gb.yaml": "4cccf805ab46cf31", "flux1-dev-80gb-bf16.yaml": "5579280e083fc314",
    "flux1-dev-hopper-fast.yaml": "af06543ad7172655", "flux1-dev-inpaint-24gb.yaml": "290a28ab3f7641e4",
    "flux1-fill-dev-24gb.yaml": "bba71fe44575062d", "flux1-kontext-dev-24gb.yaml": "a49d459c79506179",
    "flux1-schnell.yaml": "15a8831473233623",
}  # fmt: skip
SMALL = "width: 32, height: 32, num_inference_steps: 2"


def manifest(folder: Path) -> Path:
    (folder / "m.yaml").write_text(f"jobs: [{{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, {SMALL}}}]\n")
    return folder / "m.yaml"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_hub_configs_keep_their_hashes(name):
    assert config_hash(load_pipeline_config(REPO / "configs" / name).identity()) == SHIPPED[name]


# --- max_sequence_length ----------------------------------------------------------------------------------------


def test_max_sequence_length_is_in_the_identity_only_off_its_default():
    default = PipelineConfig(model="someone/flux")
    assert "max_sequence_length" not in default.identity()
    assert PipelineConfig(model="someone/flux", max_sequence_length=512).identity() == default.identity()
    shorter = PipelineConfig(model="someone/flux", max_sequence_length=8).identity()
    assert shorter == {**default.identity(), "max_sequence_length": 8}


# --- quantization.exclude -----------------------------------------------------------------------------------------


def test_exclude_is_in_the_identity_only_where_it_is_not_the_default():
    default = QuantizationConfig()
    assert default.describe() == "quanto(transformer=qint8,text_encoder=qint4,text_encoder_2=qint4)"
    assert QuantizationConfig(exclude=["proj_out"]).describe() == default.describe()
    assert QuantizationConfig(exclude=[]).describe() == (
        "quanto(transformer=qint8,text_encoder=qint4,text_encoder_2=qint4,exclude=[])"
    )
    both = QuantizationConfig(exclude=["proj_out", "norm_out*"]).describe()
    assert both.endswith(",exclude=[proj_out,norm_out*])")
    assert QuantizationConfig(backend="none").describe() == "none"


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model):
    import diffusers

    return diffusers.FluxImg2ImgPipeline.from_pretrained(tiny_model, local_files_only=True)


@pytest.mark.parametrize(
    "quantization",
    [{"exclude": ["proj_out", "transformer_blocks.0.*"]}, {"exclude": []}, {"transformer": None},
     {"exclude": ["*.DenseReluDense.wo"], "transformer": None}],
)  # fmt: skip
def test_exclude_patterns_matching_modules_and_the_default_pass_the_check(tiny_pipe, quantization):
    check_exclude(tiny_pipe, QuantizationConfig(**quantization), "p.yaml")


def test_an_exclude_pattern_matching_no_module_is_refused_naming_the_key_and_real_names(tiny_pipe):
    with pytest.raises(PipelineLoadError) as refused:
        check_exclude(tiny_pipe, QuantizationConfig(exclude=["proj_out", "proj_outt"]), "p.yaml")
    message = str(refused.value)
    assert message.startswith("p.yaml: field 'quantization.exclude': 'proj_outt' matches no module of the "
                              "transformer or text_encoder or text_encoder_2")  # fmt: skip
    assert "top-level modules: " in message and "proj_out" in message and "transformer_blocks" in message


def test_run_refuses_an_exclude_typo_before_writing_anything(tmp_path, tiny_model):
    config = write_pipeline_config(
        tmp_path / "p.yaml", tiny_model, quantization="{backend: quanto, transformer: qint8, exclude: [proj_outt]}"
    )
    ran = batch_edit("run", str(manifest(tmp_path)), "--pipeline", str(config), "--output-root", str(tmp_path / "o"))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"{config}: field 'quantization.exclude': 'proj_outt' matches no module" in ran.stderr
    assert not (tmp_path / "o").exists()


# --- a bare model path ------------------------------------------------------------------------------------------


def test_a_bare_model_path_beside_the_config_is_that_folder_wherever_the_run_starts(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "configs" / "models").mkdir(parents=True)
    shutil.copytree(tiny_model, tmp_path / "configs" / "models" / "tiny")
    config = write_pipeline_config(tmp_path / "configs" / "p.yaml", Path("models/tiny"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    loaded = load_pipeline_config(config)
    assert loaded.model == (tmp_path / "configs" / "models" / "tiny").resolve().as_posix()
    assert loaded.identity()["model"] == loaded.model


def test_a_bare_model_path_found_only_in_the_working_directory_is_refused(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "project" / "models").mkdir(parents=True)
    shutil.copytree(tiny_model, tmp_path / "project" / "models" / "tiny")
    (tmp_path / "configs").mkdir()
    config = write_pipeline_config(tmp_path / "configs" / "p.yaml", Path("models/tiny"))
    planned = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config), cwd=tmp_path / "project")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert planned.stderr.strip() == (
        f"error: {config}: field 'model': models/tiny is not beside this config but in the working directory "
        f"({tmp_path / 'project'}): write it relative to the config file (./...) or as an absolute path"
    )
    base = write_pipeline_config(tmp_path / "configs" / "s.yaml", tmp_path / "f.safetensors", base_model="models/tiny")
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(ConfigError, match="field 'base_model': models/tiny is not beside this config"):
        load_pipeline_config(base)


def test_a_hub_id_that_is_nowhere_local_stays_a_hub_id(tmp_path):
    config = write_pipeline_config(tmp_path / "p.yaml", Path("someone/flux-finetune"))
    assert load_pipeline_config(config).model == "someone/flux-finetune"


# --- a local folder's weights -------------------------------------------------------------------------------------


def weights_folder(folder: Path) -> Path:
    for part in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        (folder / part).parent.mkdir(parents=True, exist_ok=True)
        (folder / part).write_bytes(b"weights")
    (folder / "model_index.json").write_text("{}")
    return folder


def test_a_model_folder_s_weights_replaced_in_place_change_its_identity(tmp_path):
    folder = weights_folder(tmp_path / "ft")
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", Path("./ft")))
    before = config.identity()
    assert before["model_files"] == config.identity()["model_files"]  # stable while nothing changes
    (folder / "model_index.json").write_text('{"edited": true}')  # not a weight file
    assert config.identity() == before
    os.utime(folder / "transformer" / "diffusion_pytorch_model.safetensors", ns=(10**18, 10**18))
    assert config.identity()["model_files"] != before["model_files"]
    assert {key: value for key, value in config.identity().items() if key != "model_files"} == {
        key: value for key, value in before.items() if key != "model_files"
    }


def test_a_model_folder_assembled_from_linked_folders_is_stamped_through_them(tmp_path):
    parts = weights_folder(tmp_path / "parts")
    assembled = tmp_path / "assembled"
    assembled.mkdir()
    for part in parts.iterdir():
        (assembled / part.name).symlink_to(part)
    (assembled / "loop").symlink_to(assembled)  # entered once, not forever
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", Path("./assembled")))
    before = config.identity()["model_files"]
    os.utime(parts / "transformer" / "diffusion_pytorch_model.safetensors", ns=(10**18, 10**18))
    assert config.identity()["model_files"] != before


def test_a_local_base_folder_of_a_single_file_is_stamped_too(tmp_path):
    folder = weights_folder(tmp_path / "base")
    save_file({"weight": torch.zeros(2)}, tmp_path / "flux.safetensors")  # a whole file: its header is checked
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", Path("flux.safetensors"),
                                                        base_model="./base"))  # fmt: skip
    before = config.identity()["base_files"]
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"other weights")
    assert config.identity()["base_files"] != before


def planned(folder: Path, config: Path) -> str:
    result = batch_edit("plan", "job.yaml", "--pipeline", str(config), "--output-root", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_model_folder_retrained_in_place_makes_new_items_and_reproduce_names_it(tmp_path, tiny_model):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    shutil.copytree(tiny_model, tmp_path / "ft")
    config = write_pipeline_config(tmp_path / "p.yaml", Path("./ft"))
    metadata, rows = run_kept(tmp_path, config, kept_job("photo.jpg", keep=False))
    assert "job kept: 1 item(s), 1 already done" in planned(tmp_path, config)
    weights = tmp_path / "ft" / "transformer" / "diffusion_pytorch_model.safetensors"
    save_file({key: (value * 1.5).contiguous() for key, value in load_file(weights).items()}, weights)
    os.utime(weights, ns=(10**18, 10**18))  # another modification time, whatever the clock's resolution
    assert "job kept: 1 item(s), 0 already done" in planned(tmp_path, config)
    changed = reproduced(metadata, rows.item_id[0])
    assert changed.returncode == 1 and changed.stdout.startswith("different"), changed.stdout + changed.stderr
    assert (f"a LoRA or model file was replaced or touched since the run (its size or modification time is not "
            f"the one the run's pipeline_config {rows.pipeline_config[0]} hashed): {(tmp_path / 'ft').resolve()}"
            in changed.stdout)  # fmt: skip


# --- revision with a local folder ----------------------------------------------------------------------------------


def test_a_revision_with_a_local_model_folder_is_refused_naming_file_and_key(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, revision="v2")
    planned = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config))
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert planned.stderr.strip() == (
        f"error: {config}: field 'revision': {tiny_model.resolve().as_posix()} is a local folder, which has no "
        "revisions (revision 'v2' would be ignored): remove it, or name a hub id"
    )
    single = write_pipeline_config(tmp_path / "s.yaml", tmp_path / "f.gguf", base_model=tiny_model, revision="v2",
                                   quantization="{backend: none}")  # fmt: skip
    with pytest.raises(ConfigError, match="field 'revision': .* is a local folder"):
        load_pipeline_config(single)


def test_a_revision_with_a_hub_model_or_the_default_with_a_local_folder_loads(tmp_path, tiny_model):
    assert load_pipeline_config(write_pipeline_config(tmp_path / "h.yaml", Path("someone/flux"), revision="v2"))
    hub_base = write_pipeline_config(tmp_path / "s.yaml", tmp_path / "f.gguf", base_model="someone/flux",
                                     revision="v2", quantization="{backend: none}")  # fmt: skip
    assert load_pipeline_config(hub_base).revision == "v2"
    assert load_pipeline_config(write_pipeline_config(tmp_path / "m.yaml", tiny_model, revision="main"))
