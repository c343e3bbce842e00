"""The resident engine on the tiny real pipeline: the quanto recipe is applied, and batching is invisible."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from batch_edit.engine import Engine, _explain_load_failure
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig, load_pipeline_config
from batch_edit.plan import make_item
from batch_edit.sources import FetchOptions, expand_source, fit_image, load_image

from .conftest import PHOTOS, write_pipeline_config


def items_and_images(prompts_and_seeds, size=64):
    (cat,) = expand_source("cat.jpg", PHOTOS)
    (coffee,) = expand_source("coffee.jpg", PHOTOS)
    items, images = [], []
    for index, (prompt, seed) in enumerate(prompts_and_seeds):
        ref = (cat, coffee)[index % 2]
        params = dict(
            strength=0.6,
            num_inference_steps=4,
            guidance_scale=3.5,
            seed=seed,
            width=size,
            height=size,
            resize="center-crop",
        )
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
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}")
    )
    engine = Engine.load(config)
    (item,), _ = items_and_images([("a tiger", 5)])
    image = Image.new("RGB", (96, 48), "gray")
    (result,) = engine.generate([item], [image])
    assert result.size == (96, 48)


def test_a_gated_model_gets_an_actionable_message():
    httpx = pytest.importorskip("httpx2")  # the HTTP client huggingface_hub raises its errors with
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/api/models/black-forest-labs/FLUX.1-dev"
    gated = GatedRepoError(
        "Access to this model is restricted.", response=httpx.Response(403, request=httpx.Request("GET", url))
    )
    try:
        raise OSError("could not fetch model_index.json") from gated
    except OSError as exc:
        message = _explain_load_failure(PipelineConfig(), exc)
    assert "is gated" in message and "HF_TOKEN" in message and "black-forest-labs/FLUX.1-dev" in message


@pytest.fixture(params=["one thread", "two threads"])
def cpu_threads(request):
    """Some differences show only single-threaded (one thread takes other CPU kernels): run both ways (the suite
    runs with one thread unless OMP_NUM_THREADS says otherwise, see conftest)."""
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(1 if request.param == "one thread" else 2)
    yield
    torch.set_num_threads(default)


def test_cached_prompt_encodings_give_what_the_prompt_gives(tmp_path, tiny_model, cpu_threads):
    """The engine encodes each prompt once and passes embeddings: the image must not change for it."""
    import torch

    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}")
    )
    engine = Engine.load(config)
    (item,), (image,) = items_and_images([("a tiger, photo", 11)])
    engine.encode_prompts([item.prompt, "another prompt"])
    (cached,) = engine.generate([item], [image])
    direct = engine.pipe(
        prompt=item.prompt, image=image, width=64, height=64, strength=item.strength,
        num_inference_steps=item.num_inference_steps, guidance_scale=item.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(item.seed),
    ).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(cached), np.asarray(direct))


def test_cached_prompt_encodings_hold_no_autograd_graph(tmp_path, tiny_model):
    """A cached embedding made with autograd on keeps every encoder layer's saved activations alive for as long as
    it stays in the cache (gigabytes per prompt with T5-XXL)."""
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}")
    )
    engine = Engine.load(config)
    assert any(p.requires_grad for p in engine.pipe.text_encoder_2.parameters())  # else this test shows nothing
    engine.encode_prompts(["a tiger, photo", "another prompt"])
    held = [tensor for pair in engine._prompts.values() for tensor in pair]
    assert len(held) == 4 and not any(t.requires_grad or t.grad_fn is not None for t in held)


def test_each_prompt_is_encoded_alone_so_its_embedding_never_depends_on_the_others(tmp_path, tiny_model):
    """Batched encoding rounds with the batch's size and company: a prompt encoded beside whichever others were
    missing from the cache would make images that a resumed run or `reproduce` (which encode it anew) differ from."""
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}")
    )
    engine = Engine.load(config)
    batches = []
    for encoder in (engine.pipe.text_encoder, engine.pipe.text_encoder_2):
        encoder.register_forward_pre_hook(lambda module, args, kwargs: batches.append(
            (args[0] if args else kwargs["input_ids"]).shape[0]), with_kwargs=True)  # fmt: skip
    engine.encode_prompts(["a tiger", "a lion", "a tiger", "a fox"])
    assert batches == [1] * 6  # three distinct prompts, two encoders each, one prompt per call


def test_torchao_int8_weight_only_on_the_cpu(tmp_path, tiny_model):
    pytest.importorskip("torchao")
    config = load_pipeline_config(
        write_pipeline_config(
            tmp_path / "ao.yaml", tiny_model, quantization="{backend: torchao}", offload_text_encoders="true"
        )
    )
    engine = Engine.load(config)
    assert engine.config.quantization.describe() == "torchao(transformer=int8_weight_only)"  # auto on a CPU
    layer = engine.pipe.transformer.transformer_blocks[0].attn.to_q
    assert "Int8" in type(layer.weight).__name__
    items, images = items_and_images([("a tiger", 1), ("a lion", 2)])
    engine.encode_prompts([item.prompt for item in items])
    assert engine.pipe.text_encoder_2.device.type == "cpu"
    results = engine.generate(items, images)
    assert [result.size for result in results] == [(64, 64)] * 2


def test_lossy_step_caching_is_part_of_the_item_identity(tmp_path, tiny_model):
    plain = PipelineConfig(
        model=str(tiny_model), device="cpu", dtype="float32", quantization=QuantizationConfig(backend="none")
    )
    cached = plain.model_copy(update={"first_block_cache": 1.0})  # the loosest threshold: skips whenever it can
    assert plain.identity() != cached.identity()
    items, images = items_and_images([("a tiger", 1)])
    (exact,) = Engine.load(plain).generate(items, images)
    (approximate,) = Engine.load(cached).generate(items, images)
    assert approximate.size == (64, 64)
    assert not np.array_equal(np.asarray(exact), np.asarray(approximate)), "the cache never skipped a block"


def test_auto_batch_size_per_device():
    config = PipelineConfig()
    assert config.batch_size == "auto"
    assert [config.resolved_batch_size(gb) for gb in (None, 24, 48, 80)] == [8, 1, 2, 4]
    assert config.model_copy(update={"batch_size": 3}).resolved_batch_size(80) == 3


@pytest.mark.parametrize(("value", "whole", "blocks"), [("true", True, False), ("regional", False, True)])
def test_compile_whole_transformer_or_each_repeated_block(tmp_path, tiny_model, value, whole, blocks):
    """torch.compile is lazy: this checks what is wrapped without paying for a compile (the slow test runs one)."""
    config = load_pipeline_config(
        write_pipeline_config(tmp_path / "c.yaml", tiny_model, quantization="{backend: none}", compile=value,
                              compile_cache_dir=str(tmp_path / "inductor"))
    )  # fmt: skip
    transformer = Engine.load(config).pipe.transformer
    compiled = lambda module: module._compiled_call_impl is not None  # noqa: E731
    assert compiled(transformer) is whole
    repeated = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert repeated and all(compiled(block) is blocks for block in repeated)
    assert not compiled(transformer.proj_out)


def test_compile_accepts_only_true_false_or_regional(tmp_path, tiny_model):
    from batch_edit.errors import ConfigError

    path = write_pipeline_config(tmp_path / "c.yaml", tiny_model, compile="blocks")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(path)
    # one line for both branches of the union, naming the file, the field and what is allowed
    assert (
        str(refused.value) == f"{path}: field 'compile': input should be a valid boolean or 'regional' (got 'blocks')"
    )


@pytest.mark.slow
@pytest.mark.parametrize("value", ["true", "regional"])
def test_compiled_transformer_pads_the_last_batch_and_matches_eager(tmp_path, tiny_model, value):
    options = dict(quantization="{backend: none}", batch_size=2, compile_cache_dir=str(tmp_path / "inductor"))
    eager = Engine.load(load_pipeline_config(write_pipeline_config(tmp_path / "e.yaml", tiny_model, **options)))
    config = load_pipeline_config(write_pipeline_config(tmp_path / "c.yaml", tiny_model, compile=value, **options))
    engine = Engine.load(config)
    items, images = items_and_images([("a tiger", 1), ("a lion", 2), ("a cat", 3)])
    pair = engine.generate(items[:2], images[:2])
    single = engine.generate(items[2:], images[2:])  # padded to the compiled batch size, one result back
    assert len(pair) == 2 and len(single) == 1 and single[0].size == (64, 64)
    for got, want in zip(pair + single, eager.generate(items[:2], images[:2]) + eager.generate(items[2:], images[2:])):
        difference = np.abs(np.asarray(got, dtype=int) - np.asarray(want, dtype=int))
        assert difference.max() <= 2, f"compile={value}: up to {difference.max()}/255 from eager"


def test_under_compile_an_out_of_memory_retries_halves_at_their_own_size_not_padded_back(tiny_config):
    """A card that fits two images per call (the out-of-memory simulated on the tiny pipeline): under compile a
    short batch is padded to the batch size, but the halves of a batch that ran out of memory are not, or every
    retry would be as large as the call that failed and every item would fail."""
    import torch

    from batch_edit.worker import Prepared, Task, Worker

    eager = Engine.load(load_pipeline_config(tiny_config))
    engine = Engine(eager.config.model_copy(update={"compile": True, "batch_size": 4}), eager.pipe)
    calls, call = [], engine.pipe.__class__.__call__

    class TwoAtATime(engine.pipe.__class__):
        def __call__(self, *args, generator, **kwargs):
            calls.append(len(generator))
            if len(generator) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return call(self, *args, generator=generator, **kwargs)

    engine.pipe.__class__ = TwoAtATime
    items, images = items_and_images([("a tiger", 1), ("a lion", 2), ("a cat", 3), ("a dog", 4)])
    generated = Worker(engine, {}).generate([Prepared(Task(item), image) for item, image in zip(items, images)])
    assert calls == [4, 2, 2] and [g.failure for g in generated] == [None] * 4
    assert [g.batch_size for g in generated] == [2] * 4  # what each image was really made at
    calls.clear()
    odd = Worker(engine, {}).generate([Prepared(Task(items[0]), images[0])] * 3)  # 3 padded to 4, then 1 and 2
    assert calls == [4, 1, 2] and [g.failure for g in odd] == [None] * 3
    with pytest.raises(Exception, match=r"out of memory on a batch of 3 \(padded to 4 for compile\) at 64x64"):
        engine.generate(items[:3], images[:3])


def test_prompts_that_come_after_the_encoders_left_the_gpu_bring_them_back_then_send_them_away(
    tmp_path, tiny_model, monkeypatch
):
    """A chained job's prompts come in a later round, once the encoders went to the CPU: they are encoded with
    the encoders back on the GPU (not on the CPU, minutes for T5-XXL), which then leave again. The moves are
    recorded here: a CPU has no GPU to move to; the encoding itself is real."""
    import batch_edit.engine as engine_module

    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, offload_text_encoders="true"))
    engine = Engine.load(config)
    moves = []
    monkeypatch.setattr(engine_module, "offload_text_encoders", lambda pipe: moves.append("to the CPU"))
    monkeypatch.setattr(engine_module, "restore_text_encoders", lambda pipe, device: moves.append(f"back to {device}"))
    engine.config = engine.config.model_copy(update={"device": "cuda"})  # as on a GPU, which the encoders leave
    engine.encode_prompts(["a tiger"])
    engine.encode_prompts(["a tiger"])  # all cached: nothing moves
    assert moves == ["to the CPU"]
    engine.encode_prompts(["a tiger", "a lion"])
    assert moves == ["to the CPU", "back to cuda", "to the CPU"]
    assert set(engine._prompts) == {"a tiger", "a lion"}
