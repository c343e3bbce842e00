"""The resident engine on the tiny real pipeline: the quanto recipe is applied, and batching is invisible."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from batch_edit.engine import Engine, _explain_load_failure
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config
from batch_edit.plan import make_item
from batch_edit.sources import FetchOptions, expand_source, fit_image, load_image

from .conftest import PHOTOS, write_pipeline_config


def items_and_images(prompts_and_seeds, size=64):
    (cat,) = expand_source("cat.jpg", PHOTOS)
    (coffee,) = expand_source("coffee.jpg", PHOTOS)
    items, images = [], []
    for index, (prompt, seed) in enumerate(prompts_and_seeds):
        ref = (cat, coffee)[index % 2]
        params = dict(strength=0.6, num_inference_steps=4, guidance_scale=3.5, seed=seed,
                      width=size, height=size, resize="center-crop")
        items.append(make_item("job", ref, prompt, params, "{}"))
        images.append(fit_image(load_image(ref, FetchOptions()), size, size, "center-crop"))
    return items, images


def test_quanto_reference_recipe_is_applied(tiny_config):
    from optimum.quanto import QLinear, qint4, qint8

    engine = Engine.load(load_pipeline_config(tiny_config))
    transformer = engine.pipe.transformer
    quantized = {name for name, module in transformer.named_modules() if isinstance(module, QLinear)}
    # exclude matches the final projection by its exact name; the blocks' own proj_out layers are quantized
    assert "proj_out" not in quantized and "single_transformer_blocks.0.proj_out" in quantized
    assert all(transformer.get_submodule(name).weight_qtype is qint8 for name in quantized)
    for encoder in (engine.pipe.text_encoder, engine.pipe.text_encoder_2):
        layers = [m for m in encoder.modules() if isinstance(m, QLinear)]
        assert layers and all(m.weight_qtype is qint4 for m in layers)


def test_a_batch_gives_what_one_by_one_gives(tmp_path, tiny_model):
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "plain.yaml", tiny_model, quantization="{backend: none}", batch_size=3)
    )
    engine = Engine.load(config)
    items, images = items_and_images([("a tiger", 1), ("a lion", 2), ("a tiger", 3)])
    batched = engine.generate(items, images)
    single = [engine.generate([item], [image])[0] for item, image in zip(items, images)]
    assert [image.size for image in batched] == [(64, 64)] * 3
    for one, other in zip(batched, single):
        difference = np.abs(np.asarray(one, dtype=int) - np.asarray(other, dtype=int)).max()
        assert difference <= 1, f"batched and one-by-one differ by {difference}/255"
    # and the items really are different images (per-item generators, not one shared noise)
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[2]))


def test_output_has_exactly_the_items_size(tmp_path, tiny_model):
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}"))
    engine = Engine.load(config)
    (item,), _ = items_and_images([("a tiger", 5)])
    image = Image.new("RGB", (96, 48), "gray")
    (result,) = engine.generate([item], [image])
    assert result.size == (96, 48)


def test_a_gated_model_gets_an_actionable_message():
    httpx = pytest.importorskip("httpx2")  # the HTTP client huggingface_hub raises its errors with
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/api/models/black-forest-labs/FLUX.1-dev"
    gated = GatedRepoError("Access to this model is restricted.", response=httpx.Response(403, request=httpx.Request("GET", url)))
    try:
        raise OSError("could not fetch model_index.json") from gated
    except OSError as exc:
        message = _explain_load_failure(PipelineConfig(), exc)
    assert "is gated" in message and "HF_TOKEN" in message and "black-forest-labs/FLUX.1-dev" in message
