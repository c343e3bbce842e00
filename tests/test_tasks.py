"""Pipeline tasks (img2img, inpaint, fill, kontext) on their tiny real pipelines: each loads its diffusers class,
takes what it takes (masks for inpaint and fill, no strength for fill and kontext), and gives the size asked for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from batch_edit.engine import Engine
from batch_edit.errors import PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
from batch_edit.plan import make_item
from batch_edit.sources import FetchOptions, expand_source, fit_image, load_image
from batch_edit.tiny_model import write_tiny_lora

from .conftest import PHOTOS, write_pipeline_config

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
