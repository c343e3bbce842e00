"""Pipeline tasks (img2img, inpaint, fill, kontext) on their tiny real pipelines: each loads its diffusers class,
takes what it takes (masks for inpaint and fill, no strength for fill and kontext), and gives the size asked for."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.engine import Engine
from batch_edit.errors import PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
from batch_edit.plan import make_item
from batch_edit.sources import FetchOptions, expand_source, fit_image, load_image
from batch_edit.tiny_model import write_tiny_lora

from .conftest import PHOTOS, batch_edit, write_pipeline_config

CLASSES = {
    "img2img": "FluxImg2ImgPipeline",
    "inpaint": "FluxInpaintPipeline",
    "fill": "FluxFillPipeline",
    "kontext": "FluxKontextPipeline",
}


def task_items(task: str, prompts_and_seeds, width=64, height=64):
    """Items as the plan makes them for `task` (no strength for fill and kontext) and their fitted sources."""
    (cat,) = expand_source("cat.jpg", PHOTOS)
    source = fit_image(load_image(cat, FetchOptions()), width, height, "center-crop")
    strength = 0.8 if task in ("img2img", "inpaint") else None
    items = [
        make_item("job", cat, prompt, dict(strength=strength, num_inference_steps=3, guidance_scale=3.5, seed=seed,
                                           width=width, height=height, resize="center-crop"), "{}")
        for prompt, seed in prompts_and_seeds
    ]  # fmt: skip
    return items, [source] * len(items)


def box_mask(width: int, height: int) -> Image.Image:
    """White (repainted) in the left half, black (kept) elsewhere."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))
    return mask


@pytest.fixture(scope="module")
def engines(tiny_task_config):
    """task -> its engine on the quanto recipe (every task quantizes the shared transformer and encoders)."""
    loaded = {}

    def engine(task: str) -> Engine:
        if task not in loaded:
            loaded[task] = Engine.load(load_pipeline_config(tiny_task_config(task)))
        return loaded[task]

    return engine


def test_make_tiny_model_writes_each_tasks_pipeline(tiny_task_model):
    for task, name in CLASSES.items():
        index = json.loads((tiny_task_model(task) / "model_index.json").read_text())
        assert index["_class_name"] == name
    # Fill's transformer takes the noisy latents, the masked image's latents and the 8x8-cell mask (4 channels x 2x2
    # each, and 64 x 2x2), and gives back latents only
    fill = json.loads((tiny_task_model("fill") / "transformer" / "config.json").read_text())
    assert (fill["in_channels"], fill["out_channels"]) == (16 + 16 + 256, 16)


@pytest.mark.parametrize("task", list(CLASSES))
def test_each_task_loads_its_class_quantized_and_gives_the_size_asked(engines, task):
    from optimum.quanto import QLinear

    engine = engines(task)
    assert type(engine.pipe).__name__ == CLASSES[task]
    assert any(isinstance(module, QLinear) for module in engine.pipe.transformer.modules())
    items, images = task_items(task, [("a tiger", 1), ("a lion", 2)], width=96, height=48)
    masks = [box_mask(96, 48)] * 2 if task in ("inpaint", "fill") else None
    results = engine.generate(items, images, masks)
    assert [result.size for result in results] == [(96, 48)] * 2
    assert not np.array_equal(np.asarray(results[0]), np.asarray(results[1]))


def test_kontext_keeps_the_requested_size_where_its_preferred_resolutions_would_not(engines):
    """FluxKontextPipeline alone would resize a 160x48 source to its nearest preferred resolution and scale the
    output to about 1024x1024; the result has the size the item asked for."""
    items, images = task_items("kontext", [("make it snowy", 3)], width=160, height=48)
    (result,) = engines("kontext").generate(items, images)
    assert result.size == (160, 48)


@pytest.mark.parametrize("task", ["inpaint", "fill"])
def test_the_mask_decides_what_is_repainted(engines, task):
    items, images = task_items(task, [("a tiger", 4)])
    left = engines(task).generate(items, images, [box_mask(64, 64)])[0]
    right = engines(task).generate(items, images, [box_mask(64, 64).transpose(Image.Transpose.FLIP_LEFT_RIGHT)])[0]
    assert not np.array_equal(np.asarray(left), np.asarray(right))


@pytest.mark.parametrize("task", ["inpaint", "fill"])
def test_a_masked_task_needs_a_fitted_mask_per_image(engines, task):
    items, images = task_items(task, [("a tiger", 1), ("a lion", 2)])
    with pytest.raises(ValueError, match=f"the {task} task needs one mask per image"):
        engines(task).generate(items, images)
    with pytest.raises(ValueError, match=f"the {task} task needs one mask per image"):
        engines(task).generate(items, images, [box_mask(64, 64)])
    with pytest.raises(ValueError, match="an 'L' image of its image's size"):
        engines(task).generate(items, images, [box_mask(64, 64).convert("RGB")] * 2)
    with pytest.raises(ValueError, match="an 'L' image of its image's size"):
        engines(task).generate(items, images, [box_mask(32, 64)] * 2)


@pytest.mark.parametrize("task", ["img2img", "kontext"])
def test_an_unmasked_task_refuses_masks(engines, task):
    items, images = task_items(task, [("a tiger", 1)])
    with pytest.raises(ValueError, match=f"the {task} task takes no mask"):
        engines(task).generate(items, images, [box_mask(64, 64)])


def test_weights_of_the_wrong_kind_for_the_task_are_refused_at_load(tmp_path, tiny_task_model):
    on_fill = write_pipeline_config(tmp_path / "a.yaml", tiny_task_model("fill"), task="kontext")
    with pytest.raises(PipelineLoadError, match="takes 288 input channels where the kontext task needs 16"):
        Engine.load(load_pipeline_config(on_fill))
    on_dev = write_pipeline_config(tmp_path / "b.yaml", tiny_task_model("img2img"), task="fill")
    with pytest.raises(PipelineLoadError, match="the fill task needs 288: use FLUX.1-Fill weights"):
        Engine.load(load_pipeline_config(on_dev))


@pytest.mark.parametrize("task", ["fill", "kontext"])
def test_a_lora_is_fused_into_a_task_pipeline(tmp_path, tiny_task_config, engines, task):
    lora = write_tiny_lora(tmp_path / "style.safetensors")
    fused = Engine.load(load_pipeline_config(tiny_task_config(task, loras=f"[{{path: {lora}}}]")))
    items, images = task_items(task, [("a tiger", 1)])
    masks = [box_mask(64, 64)] if task == "fill" else None
    with_lora = fused.generate(items, images, masks)[0]
    without = engines(task).generate(items, images, masks)[0]
    assert not np.array_equal(np.asarray(with_lora), np.asarray(without))


def test_the_task_names_its_weights_and_enters_the_identity_only_when_not_img2img():
    assert PipelineConfig().identity() == PipelineConfig(task="img2img").identity()
    assert "task" not in PipelineConfig().identity()
    assert PipelineConfig(task="fill").model == "black-forest-labs/FLUX.1-Fill-dev"
    assert PipelineConfig(task="kontext").model == "black-forest-labs/FLUX.1-Kontext-dev"
    assert PipelineConfig(task="inpaint").model == "black-forest-labs/FLUX.1-dev"
    assert PipelineConfig(task="kontext", model="./mine").model == "./mine"
    assert PipelineConfig(task="inpaint").identity() == {**PipelineConfig().identity(), "task": "inpaint"}


# --- tasks through the command line --------------------------------------------------------------------------------


def write_manifest(folder, text: str):
    path = folder / "m.yaml"
    path.write_text(text)
    return path


def run_grid(tmp_path, config, job: str = "", command: str = "run"):
    """A 2-prompt x 2-guidance grid over one photo at 96x48, unless `job` says otherwise."""
    write_manifest(tmp_path, f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [make it snowy, make it "
                             f"night], num_inference_steps: 2, width: 96, height: 48{job}}}]\n")  # fmt: skip
    return batch_edit(command, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)


@pytest.mark.parametrize("task", ["img2img", "kontext"])
def test_a_grid_runs_end_to_end_and_records_its_task(tmp_path, tiny_task_config, task):
    result = run_grid(tmp_path, tiny_task_config(task), ", guidance_scale: [2.0, 4.0]")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv", keep_default_na=False)
    assert len(rows) == 4 and rows["item_id"].is_unique
    for row in rows.to_dict("records"):
        with Image.open(tmp_path / "out" / "j" / row["file_name"]) as image:
            assert image.size == (96, 48)  # kontext too: the size asked, not its preferred resolution
            settings = image.text["parameters"].splitlines()[-1]
            record = json.loads(image.text["batch-edit"])
        if task == "img2img":  # as before tasks: no task column, label or record field
            assert "task" not in rows.columns and "Task:" not in settings and "task" not in record
            assert row["strength"] == 0.9 and "Denoising strength: 0.9" in settings
        else:
            assert row["task"] == "kontext" and ", Task: kontext, " in settings and record["task"] == "kontext"
            assert row["strength"] == "" and "Denoising strength" not in settings and record["strength"] is None


def test_each_tasks_defaults_reach_the_items_and_records(tmp_path, tiny_task_config):
    from batch_edit.manifest import load_manifest
    from batch_edit.plan import plan_jobs

    manifest = write_manifest(tmp_path, f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: a}}]\n")
    expected = {"img2img": (0.9, 28, 3.5), "inpaint": (0.9, 28, 3.5), "fill": (None, 50, 30.0),
                "kontext": (None, 28, 2.5)}  # fmt: skip
    for task, values in expected.items():
        (job,) = load_manifest(manifest, task=task).jobs  # one file: the masks inpaint needs are checked per run
        (plan,) = plan_jobs([job], PipelineConfig(task=task).identity())
        (item,) = plan.items
        assert (item.strength, item.num_inference_steps, item.guidance_scale) == values, task
    # and in a run's records, where the defaults are not overridden
    write_manifest(tmp_path, f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: a, width: 32, height: 32}}]\n")
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_task_config("kontext")), "--output-root", "out",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv", keep_default_na=False).to_dict("records")
    assert (row["strength"], row["num_inference_steps"], row["guidance_scale"]) == ("", 28, 2.5)


def test_a_kontext_job_given_strength_is_refused_naming_the_task(tmp_path, tiny_task_config):
    config = tiny_task_config("kontext")
    for command in ("run", "plan"):
        result = run_grid(tmp_path, config, ", strength: 0.5", command=command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "m.yaml: jobs[0] ('j'): field 'strength': the kontext task takes no strength" in result.stderr
    assert not (tmp_path / "out").exists()
    # in the manifest's defaults (named once, there), in a CSV row, and as a file-name placeholder
    write_manifest(tmp_path, f"defaults: {{strength: 0.5}}\njobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, "
                             "prompts: a, file_name: '{stem}-{strength}'}]\n")  # fmt: skip
    result = batch_edit("plan", "m.yaml", "--pipeline", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("the kontext task takes no strength") == 2, result.stderr
    assert "m.yaml: defaults: field 'strength': the kontext task takes no strength" in result.stderr
    assert "field 'file_name': the kontext task takes no strength, so {strength} names nothing" in result.stderr
    (tmp_path / "rows.csv").write_text(f"source,prompt,strength\n{PHOTOS / 'cat.jpg'},a,\n{PHOTOS / 'cat.jpg'},b,0.5\n")
    result = batch_edit("plan", "rows.csv", "--pipeline", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "rows.csv: row 2 (line 3): field 'strength': the kontext task takes no strength" in result.stderr
    assert "row 1" not in result.stderr  # a blank cell gives nothing


def test_a_task_named_in_the_manifests_pipeline_decides_its_validation(tmp_path, tiny_task_config):
    """`pipeline:` in the manifest is read before its jobs are validated: their defaults are that task's."""
    config = tiny_task_config("kontext")
    write_manifest(tmp_path, f"pipeline: {config}\njobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: a, "
                             "strength: 0.5}]\n")  # fmt: skip
    result = batch_edit("plan", "m.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "the kontext task takes no strength" in result.stderr


def test_a_misspelt_task_is_refused_naming_the_key(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, task="kontxt")
    result = run_grid(tmp_path, config, command="plan")
    assert result.returncode == 2
    assert f"{config}: field 'task'" in result.stderr and "'kontext'" in result.stderr and "kontxt" in result.stderr


def test_a_tasks_items_have_ids_of_their_own_and_plan_names_the_task(tmp_path, tiny_task_config):
    from batch_edit.manifest import load_manifest
    from batch_edit.plan import plan_jobs

    ids = {}
    write_manifest(tmp_path, f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a, b]}}]\n")
    for task in ("img2img", "inpaint"):  # the same parameters (strength included), another pipeline
        (job,) = load_manifest(tmp_path / "m.yaml", task=task).jobs  # one file: masks are checked per run
        config = load_pipeline_config(tiny_task_config(task))
        ids[task] = {item.item_id for item in plan_jobs([job], config.identity())[0].items}
    assert len(ids["inpaint"]) == 2 and not ids["img2img"] & ids["inpaint"]
    planned = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_task_config("kontext")), cwd=tmp_path)
    assert planned.returncode == 0 and ", task kontext)" in planned.stdout.splitlines()[0]


def test_a_kontext_item_reproduces_from_its_blank_strength_row(tmp_path, tiny_task_config):
    assert run_grid(tmp_path, tiny_task_config("kontext")).returncode == 0
    metadata = tmp_path / "out" / "j" / "metadata.csv"
    item = pd.read_csv(metadata)["item_id"][0]
    result = batch_edit("reproduce", str(metadata), "--item", item)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"identical: item {item}")
    # the same row under an img2img config: its blank strength does not fit, and says so
    img2img = tiny_task_config("img2img")
    result = batch_edit("reproduce", str(metadata), "--item", item, "--pipeline", str(img2img))
    assert result.returncode == 2 and "column(s) strength do not fit the img2img task" in result.stderr


def test_a_single_file_transformer_loads_into_its_tasks_pipeline(tmp_path, tiny_task_model):
    """checkpoints.py builds the task's class around the file: a Fill transformer file with a Fill base."""
    from safetensors.torch import load_file, save_file

    base = tiny_task_model("fill")
    model = tmp_path / "fill-transformer.safetensors"
    save_file(load_file(str(base / "transformer" / "diffusion_pytorch_model.safetensors")), str(model))
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=base, task="fill",
                                   quantization="{backend: none}")  # fmt: skip
    engine = Engine.load(load_pipeline_config(config))
    assert type(engine.pipe).__name__ == "FluxFillPipeline"
    items, images = task_items("fill", [("a tiger", 1)])
    assert engine.generate(items, images, [box_mask(64, 64)])[0].size == (64, 64)


def test_the_task_configs_ship_the_24gb_recipe_and_the_benchmark_runs_their_task(tmp_path):
    from .conftest import REPO
    from .test_benchmarks import bench
    from .test_memory_options import bench_args

    reference = load_pipeline_config(REPO / "configs" / "flux1-dev-24gb.yaml")
    for name, task in [("flux1-dev-inpaint-24gb.yaml", "inpaint"), ("flux1-fill-dev-24gb.yaml", "fill"),
                       ("flux1-kontext-dev-24gb.yaml", "kontext")]:  # fmt: skip
        config = load_pipeline_config(REPO / "configs" / name)
        assert config.task == task and config.model == PipelineConfig(task=task).model
        assert config.model_dump(exclude={"task", "model"}) == reference.model_dump(exclude={"task", "model"})
        args = bench_args(bench)
        args.config, args.strength, args.guidance = REPO / "configs" / name, None, None
        assert bench.settings_from(args).task == task  # its own pipeline and items (tests/test_benchmark_tasks.py)


def test_kontext_output_is_the_fitted_size_under_resize_fit(tmp_path, tiny_task_config):
    """`resize: fit` keeps the source's aspect within width x height (96x48): the result has that fitted size too."""
    result = run_grid(tmp_path, tiny_task_config("kontext"), ", resize: fit")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")
    for row in rows.to_dict("records"):
        with Image.open(tmp_path / "out" / "j" / row["file_name"]) as image:
            assert image.size == (row["width"], row["height"]) != (96, 48)
            assert row["width"] % 16 == 0 and row["height"] % 16 == 0


def test_a_padded_compiled_batch_pads_the_masks_too(engines):
    """A compiled transformer keeps one batch shape: a short batch is padded with copies, masks included."""
    engine = engines("inpaint")
    items, images = task_items("inpaint", [("a tiger", 1), ("a lion", 2)])
    masks = [box_mask(64, 64), box_mask(64, 64).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    unpadded = engine.generate(items, images, masks)
    padded = Engine(engine.config.model_copy(update={"compile": True}), engine.pipe)  # the padding, not a compile
    padded.batch_size = 3
    results = padded.generate(items, images, masks)
    assert len(results) == 2
    for one, other in zip(results, unpadded):
        assert np.abs(np.asarray(one, dtype=int) - np.asarray(other, dtype=int)).max() <= 1


@pytest.mark.parametrize("task", ["fill", "kontext"])
def test_the_speed_options_apply_to_a_task_pipeline_and_keep_its_images(tiny_task_config, engines, task):
    options = dict(fuse_qkv="true", attention_backend="_native_math", vae_channels_last="true")
    tuned = Engine.load(load_pipeline_config(tiny_task_config(task, **options)))
    assert type(tuned.pipe.transformer.transformer_blocks[0].attn.to_qkv).__name__ == "QLinear"  # fused, quantized
    items, images = task_items(task, [("a tiger", 1)])
    masks = [box_mask(64, 64)] if task == "fill" else None
    (fast,) = tuned.generate(items, images, masks)
    (plain,) = engines(task).generate(items, images, masks)
    assert np.abs(np.asarray(fast, dtype=int) - np.asarray(plain, dtype=int)).max() <= 2
