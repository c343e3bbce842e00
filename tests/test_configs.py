"""Pipeline configs and manifests refused or warned about before anything loads: quantization keys the chosen
backend would ignore, a local model that is not there (`plan` warns, `run` refuses naming the config and key),
manifest problems of every job reported at once (the task's checks included); and Ctrl-C while Ray workers
load the pipeline leaves no job folder behind, as in a plain run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from PIL import Image

from batch_edit.errors import ConfigError
from batch_edit.pipeline_config import PipelineConfig, dump_pipeline_config, load_pipeline_config

from .conftest import PHOTOS, REPO, batch_edit, batch_edit_process, write_pipeline_config
from .test_ray import descendants, ray_workers, wait_for, wait_for_exit

SMALL = "width: 32, height: 32, num_inference_steps: 2"


def manifest(folder: Path, text: str = f"jobs: [{{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, {SMALL}}}]\n"):
    (folder / "m.yaml").write_text(text)
    return folder / "m.yaml"


# --- quantization keys the backend would ignore --------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantization", "refused"),
    [
        ("{backend: none, transformer: qint8}", [("transformer", "none", "quanto")]),
        ("{backend: torchao, text_encoder: qint4, exclude: []}",
         [("text_encoder", "torchao", "quanto"), ("exclude", "torchao", "quanto")]),
        ("{backend: quanto, torchao_type: float8_dynamic_row}", [("torchao_type", "quanto", "torchao")]),
    ],
)  # fmt: skip
def test_a_quantization_key_the_backend_ignores_is_refused_by_plan_naming_file_key_and_backend(
    tmp_path, tiny_model, quantization, refused
):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization=quantization)
    result = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.removeprefix("error: ").strip().splitlines()
    assert len(lines) == len(refused)
    for line, (key, backend, user) in zip(lines, refused):
        assert line.startswith(f"{config}: field 'quantization.{key}': backend {backend} does not use it"), line
        assert line.endswith(f"remove it, or set backend: {user}"), line


@pytest.mark.parametrize("shipped", sorted((REPO / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_the_shipped_configs_still_load(shipped):
    load_pipeline_config(shipped)


@pytest.mark.parametrize("quantization", ["{backend: none}", "{backend: torchao}", "{backend: quanto, transformer: null}",
                                          "{backend: torchao, torchao_type: int8_weight_only}", None])  # fmt: skip
def test_keys_the_backend_reads_and_the_defaults_every_config_carries_load(tmp_path, quantization):
    settings = {"quantization": quantization} if quantization else {}
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tmp_path, **settings))
    assert config.quantization.unused_keys() == []


def test_a_recorded_config_reads_back_and_one_an_earlier_version_wrote_still_reproduces(tmp_path):
    config = PipelineConfig(model="someone/flux", device="cpu", quantization={"backend": "none"})
    (tmp_path / "new.yaml").write_text(dump_pipeline_config(config))
    assert yaml.safe_load((tmp_path / "new.yaml").read_text())["quantization"] == {"backend": "none"}
    assert load_pipeline_config(tmp_path / "new.yaml").identity() == config.identity()
    # earlier versions recorded every key, at its default where the backend ignored it
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with pytest.raises(ConfigError, match="field 'quantization.transformer': backend none does not use it"):
        load_pipeline_config(tmp_path / "old.yaml")
    assert load_pipeline_config(tmp_path / "old.yaml", recorded=True).identity() == config.identity()
    # given by hand (`run --pipeline` or `reproduce --pipeline`) from where a run kept it, it is still the run's
    kept = tmp_path / "job" / ".batch-edit" / "pipelines" / "0123456789abcdef.yaml"
    kept.parent.mkdir(parents=True)
    kept.write_bytes((tmp_path / "old.yaml").read_bytes())
    assert load_pipeline_config(kept).identity() == config.identity()


# --- a local model that is not there -------------------------------------------------------------------------


def test_plan_warns_of_a_missing_model_folder_and_run_refuses_naming_the_config_and_key(tmp_path):
    config = write_pipeline_config(tmp_path / "p.yaml", tmp_path / "nope")
    planned = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config))
    assert planned.returncode == 0, planned.stderr
    assert f"warning: {config}: field 'model': folder not found: {tmp_path / 'nope'}" in planned.stderr
    assert "`batch-edit run` would refuse it here" in planned.stderr
    calm = manifest(tmp_path, f"jobs: [{{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, strength: 0.5, {SMALL}}}]")
    ran = batch_edit("run", str(calm), "--pipeline", str(config), "--output-root", str(tmp_path / "o"))
    assert ran.returncode == 2
    assert ran.stderr.strip() == f"error: {config}: field 'model': folder not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "o").exists()


def test_plan_warns_of_a_missing_single_file_and_base_folder(tmp_path):
    config = write_pipeline_config(tmp_path / "p.yaml", tmp_path / "flux.gguf", base_model=tmp_path / "base",
                                   quantization="{backend: none}")  # fmt: skip
    planned = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config))
    assert planned.returncode == 0, planned.stderr
    assert f"{config}: field 'model': file not found: {tmp_path / 'flux.gguf'}" in planned.stderr
    assert f"{config}: field 'base_model': folder not found: {tmp_path / 'base'}" in planned.stderr


def test_plan_does_not_look_for_a_hub_model_nor_an_existing_folder(tmp_path, tiny_model):
    hub = tmp_path / "hub.yaml"
    hub.write_text("model: black-forest-labs/FLUX.1-dev\ndevice: cpu\ndtype: float32\n")
    for config in (hub, write_pipeline_config(tmp_path / "local.yaml", tiny_model)):
        planned = batch_edit("plan", str(manifest(tmp_path)), "--pipeline", str(config))
        assert planned.returncode == 0 and "not found" not in planned.stderr, planned.stderr


# --- manifest problems reported together ---------------------------------------------------------------------


@pytest.fixture
def masks(tmp_path) -> Path:
    (tmp_path / "masks").mkdir()
    Image.new("L", (32, 32), 255).save(tmp_path / "masks" / "cat.png")
    return tmp_path / "masks"


def refusal(tmp_path, task: str, text: str, name: str = "m.yaml") -> list[str]:
    config = write_pipeline_config(tmp_path / f"{task}.yaml", tmp_path, task=task)
    (tmp_path / name).write_text(text)
    result = batch_edit("plan", name, "--pipeline", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    return result.stderr.removeprefix("error: ").strip().splitlines()


def test_masks_under_kontext_are_reported_with_other_jobs_field_errors(tmp_path, masks):
    cat = PHOTOS / "cat.jpg"
    assert refusal(
        tmp_path,
        "kontext",
        f"""defaults: {{{SMALL}}}
jobs:
  - {{name: a, sources: {cat}, prompts: x, strength: 0.5}}
  - {{name: b, sources: {cat}, prompts: x, masks: {masks}}}
  - {{name: c, sources: {cat}, prompts: x, mask_blur: 8}}
""",
    ) == [
        "m.yaml: jobs[0] ('a'): field 'strength': the kontext task takes no strength",
        "m.yaml: jobs[2] ('c'): field 'mask_blur': applies only to masked items (give the job 'masks:', or the row "
        "a 'mask')",
        "m.yaml: jobs[1] ('b'): masks are given but the pipeline task 'kontext' takes none (masks go with task "
        "inpaint or fill)",
    ]


def test_fill_task_problems_are_reported_with_other_jobs_field_errors(tmp_path, masks):
    cat = PHOTOS / "cat.jpg"
    problems = refusal(
        tmp_path,
        "fill",
        f"""defaults: {{{SMALL}}}
jobs:
  - {{name: a, sources: {cat}, prompts: x, masks: {masks}, mask_padding: 8}}
  - {{name: b, sources: {cat}, prompts: x, masks: {masks}, strength: [0.5]}}
  - {{name: c, sources: {cat}, prompts: x}}
""",
    )
    assert [line.split(": ")[1:3] for line in problems] == [
        ["jobs[1] ('b')", "field 'strength'"],
        ["jobs[0] ('a')", "field 'mask_padding'"],
        ["jobs[2] ('c')", "the pipeline task 'fill' repaints through a mask, but it has no 'masks:'"],
    ]


def test_a_job_whose_own_fields_are_invalid_waits_for_its_task_problems(tmp_path):
    problems = refusal(
        tmp_path, "inpaint", f"jobs: [{{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, width: 33}}]\n"
    )
    assert len(problems) == 1 and "field 'width'" in problems[0]


def test_a_csv_mask_under_img2img_is_reported_with_other_rows_field_errors(tmp_path, masks):
    problems = refusal(tmp_path, "img2img", f"source,mask,prompt,strength\n{PHOTOS / 'cat.jpg'},{masks / 'cat.png'},x,\n"
                       f"{PHOTOS / 'coffee.jpg'},,y,7\n", name="rows.csv")  # fmt: skip
    assert problems[0].startswith("rows.csv: row 2 (line 3): field 'strength'")
    assert problems[1:] == [
        "rows.csv: job 'rows': masks are given but the pipeline task 'img2img' takes none (masks go with task "
        "inpaint or fill)"
    ]


# --- Ctrl-C while Ray workers load ---------------------------------------------------------------------------


@pytest.mark.slow  # Ray starting and stopping: over 30 s on 2 cores (`pytest -m slow`)
def test_sigint_while_ray_workers_load_leaves_no_folder_and_no_ray_traceback(tmp_path, tiny_config):
    text = f"jobs: [{{name: r, sources: {PHOTOS}, prompts: [a, b], seed: [1, 2, 3, 4], {SMALL}}}]\n"
    command = [
        "run",
        str(manifest(tmp_path, text)),
        "--pipeline",
        str(tiny_config),
        "--output-root",
        str(tmp_path / "o"),
    ]
    process = batch_edit_process(*command, "--ray", "--workers", "2")
    wait_for(lambda: ray_workers(process.pid), process)  # the workers exist: they are starting, then loading
    assert not (tmp_path / "o" / "r" / ".batch-edit" / "records.jsonl").exists()  # nothing came back yet
    started = descendants(process.pid)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert stderr.strip().endswith("stopped by SIGINT while loading the pipeline; nothing was generated"), stderr
    assert "Traceback" not in stderr and "RaySystemError" not in stderr, stderr
    assert not (tmp_path / "o").exists()  # no job folder, no .batch-edit/lock or owner: as a plain run's stop
    wait_for_exit(started, timeout=10)  # the local Ray instance does not outlive its run
