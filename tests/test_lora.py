"""LoRAs listed in a pipeline config: fused into the weights before quantization, part of the identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from batch_edit.backends import fuse_loras
from batch_edit.engine import Engine
from batch_edit.errors import ConfigError, PipelineLoadError
from batch_edit.pipeline_config import PipelineConfig, dump_pipeline_config, load_pipeline_config
from batch_edit.tiny_model import build_tiny_pipeline, write_tiny_lora

from .conftest import write_pipeline_config
from .test_engine import items_and_images

TO_Q = "transformer_blocks.0.attn.to_q"  # one of the layers the tiny LoRA adapts


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    return write_tiny_lora(tmp_path_factory.mktemp("loras") / "tiny-style.v1.safetensors")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_model, tiny_lora):
    """Engines by (backend, LoRA scale or None), each loaded once for the module."""
    loaded = {}

    def engine(backend: str, scale: float | None = None) -> Engine:
        if (backend, scale) not in loaded:
            folder = tmp_path_factory.mktemp("configs")
            extra = {"loras": f"[{{path: {tiny_lora}, scale: {scale}}}]"} if scale is not None else {}
            quantization = f"{{backend: {backend}}}"
            config = write_pipeline_config(folder / "p.yaml", tiny_model, quantization=quantization, **extra)
            loaded[backend, scale] = Engine.load(load_pipeline_config(config))
        return loaded[backend, scale]

    return engine


@pytest.fixture(scope="module")
def item_and_image():
    (item,), (image,) = items_and_images([("a tiger", 7)])
    return item, image


def render(engine: Engine, item_and_image) -> np.ndarray:
    item, image = item_and_image
    return np.asarray(engine.generate([item], [image])[0], dtype=int)


def lora_delta(lora_file, layer: str) -> torch.Tensor:
    tensors = load_file(str(lora_file))
    return tensors[f"transformer.{layer}.lora_B.weight"] @ tensors[f"transformer.{layer}.lora_A.weight"]


def original_weight(tiny_model, layer: str) -> torch.Tensor:
    return load_file(str(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors"))[f"{layer}.weight"]


def test_quanto_quantizes_the_fused_weights(engines, tiny_model, tiny_lora, item_and_image):
    from optimum.quanto import QLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain, fused = engines("quanto"), engines("quanto", 1.0)
    for component in (fused.pipe.transformer, fused.pipe.text_encoder):
        assert not [m for m in component.modules() if isinstance(m, BaseTunerLayer)], "PEFT layers were left behind"
    layer = fused.pipe.transformer.get_submodule(TO_Q)
    assert isinstance(layer, QLinear)
    dequantized = layer.qweight.dequantize().float()
    expected = original_weight(tiny_model, TO_Q) + lora_delta(tiny_lora, TO_Q)
    step = expected.abs().amax(dim=1, keepdim=True) / 127  # qint8, one scale per output row
    assert ((dequantized - expected).abs() <= step).all(), "the quantized weights are not W + B @ A"
    unfused = plain.pipe.transformer.get_submodule(TO_Q).qweight.dequantize().float()
    assert (dequantized - unfused).abs().max() > 10 * step.max(), "the LoRA left the quantized weights unchanged"
    encoder_q, plain_q = (e.pipe.text_encoder.encoder.layers[0].self_attn.q_proj for e in (fused, plain))
    assert isinstance(encoder_q, QLinear)  # the CLIP part of the LoRA was fused, then quantized to qint4
    assert not torch.equal(encoder_q.qweight.dequantize(), plain_q.qweight.dequantize())
    assert not np.array_equal(render(fused, item_and_image), render(plain, item_and_image))


def test_quanto_with_scale_zero_gives_the_image_without_the_lora(engines, item_and_image):
    difference = np.abs(render(engines("quanto", 0.0), item_and_image) - render(engines("quanto"), item_and_image))
    assert difference.max() <= 1, f"scale 0 changed the image by {difference.max()}/255"


def test_backend_none_fuses_at_the_lora_scale(engines, item_and_image):
    plain, full, half = (render(engines("none", scale), item_and_image) for scale in (None, 1.0, 0.5))
    assert not np.array_equal(full, plain), "the LoRA did not change the image"
    assert not np.array_equal(half, full), "the scale did not change the image"
    assert not np.array_equal(half, plain)


def test_several_loras_add_up_at_their_scales(tmp_path, tiny_model, tiny_lora):
    second = write_tiny_lora(tmp_path / "second.safetensors", seed=2)
    config = PipelineConfig(
        model=str(tiny_model), device="cpu", dtype="float32", quantization={"backend": "none"},
        loras=[{"path": str(tiny_lora)}, {"path": str(tmp_path), "weight_name": second.name, "scale": -0.5}],
    )  # fmt: skip
    engine = Engine.load(config)
    weight = engine.pipe.transformer.get_submodule(TO_Q).weight.detach()
    expected = original_weight(tiny_model, TO_Q) + lora_delta(tiny_lora, TO_Q) - 0.5 * lora_delta(second, TO_Q)
    torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5)
    assert config.lora_tags() == "<lora:tiny-style_v1:1> <lora:second:-0.5>"


def test_torchao_quantizes_the_fused_weights(tmp_path, tiny_model, tiny_lora):
    pytest.importorskip("torchao")
    config = write_pipeline_config(
        tmp_path / "ao.yaml", tiny_model, quantization="{backend: torchao}", loras=f"[{{path: {tiny_lora}}}]"
    )
    layer = Engine.load(load_pipeline_config(config)).pipe.transformer.get_submodule(TO_Q)
    assert "Int8" in type(layer.weight).__name__
    expected = original_weight(tiny_model, TO_Q) + lora_delta(tiny_lora, TO_Q)
    step = expected.abs().amax(dim=1, keepdim=True) / 127
    assert ((layer.weight.dequantize().float() - expected).abs() <= step).all()


def test_identity_without_loras_is_unchanged_and_loras_are_part_of_it(tmp_path, tiny_lora):
    plain = PipelineConfig()
    assert plain.identity() == {
        "model": "black-forest-labs/FLUX.1-dev",
        "revision": "main",
        "dtype": "bfloat16",
        "quantization": "quanto(transformer=qint8,text_encoder=qint4,text_encoder_2=qint4)",
    }
    assert plain.lora_tags() == ""
    with_lora = PipelineConfig(loras=[{"path": str(tiny_lora), "scale": 0.8}])
    rescaled = PipelineConfig(loras=[{"path": str(tiny_lora), "scale": 0.9}])
    renamed = PipelineConfig(loras=[{"path": str(tiny_lora), "scale": 0.8, "name": "other"}])
    stamp = f"{tiny_lora.stat().st_size}-{tiny_lora.stat().st_mtime_ns}"  # a local file: its size and mtime too
    expected = {**plain.identity(), "loras": [{"path": str(tiny_lora), "scale": 0.8, "lora_file": stamp}]}
    assert with_lora.identity() == expected
    assert rescaled.identity() != with_lora.identity()
    assert renamed.identity() == with_lora.identity()  # the name only labels the adapter
    assert with_lora.lora_tags() == "<lora:tiny-style_v1:0.8>"


def test_config_file_paths_resolve_and_survive_the_recorded_copy(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "p.yaml").write_text(
        "model: ./tiny\nloras:\n  - path: loras/ink.safetensors\n    scale: 1\n"
        "  - {path: someone/flux-lora, weight_name: style.safetensors, scale: -0.25, name: hub-style}\n"
    )
    config = load_pipeline_config(folder / "p.yaml")
    local, hub = config.loras
    assert (local.path, local.name, local.scale) == ((folder / "loras" / "ink.safetensors").as_posix(), "ink", 1.0)
    assert (hub.path, hub.name, hub.weight_name) == ("someone/flux-lora", "hub-style", "style.safetensors")
    assert config.lora_tags() == "<lora:ink:1> <lora:hub-style:-0.25>"
    (tmp_path / "recorded.yaml").write_text(dump_pipeline_config(config))
    assert load_pipeline_config(tmp_path / "recorded.yaml").identity() == config.identity()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{path: a.safetensors, sclae: 0.5}", "unknown key 'loras[0].sclae' (did you mean 'scale'?)"),
        ("{path: a.safetensors, scale: 5}", "field 'loras[0].scale'"),
        ("{path: a.ckpt}", ".safetensors files only"),
        ("{path: a.safetensors, name: 'a:b'}", "field 'loras[0].name'"),
        ("{path: a/x.safetensors}, {path: b/x.safetensors}", "LoRA names must be unique (x used twice)"),
    ],
)
def test_bad_lora_entries_refuse_the_config(tmp_path, entry, expected):
    config = tmp_path / "p.yaml"
    config.write_text(f"device: cpu\nloras: [{entry}]\n")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    assert expected in str(refused.value)


def test_a_missing_lora_file_is_refused_before_loading(tmp_path, tiny_model):
    missing = tmp_path / "gone.safetensors"
    config_file = write_pipeline_config(tmp_path / "p.yaml", tiny_model, loras=f"[{{path: {missing}}}]")
    config = load_pipeline_config(config_file)
    with pytest.raises(PipelineLoadError, match=r"LoRA 'gone'.*file not found: .*gone\.safetensors"):
        Engine.check(config)


@pytest.fixture(scope="module")
def bare_pipeline():
    return build_tiny_pipeline()


def test_unusable_loras_name_themselves(tmp_path, bare_pipeline):
    from safetensors.torch import save_file

    def refusal(**lora) -> str:
        with pytest.raises(PipelineLoadError) as refused:
            fuse_loras(bare_pipeline, PipelineConfig(loras=[lora]).loras, local_files_only=True)
        return str(refused.value)

    assert "LoRA 'gone' " in refusal(path=str(tmp_path / "gone.safetensors"))
    not_cached = refusal(path="someone/no-such-lora", weight_name="x.safetensors")
    assert "LoRA 'x' (someone/no-such-lora)" in not_cached and "local cache" in not_cached
    save_file({"unrelated.weight": torch.zeros(2)}, str(tmp_path / "junk.safetensors"))
    assert "LoRA 'junk'" in refusal(path=str(tmp_path / "junk.safetensors"))
    alien = {f"transformer.nowhere.lora_{part}.weight": torch.zeros(2, 2) for part in "AB"}
    save_file(alien, str(tmp_path / "alien.safetensors"))
    assert "LoRA 'alien'" in refusal(path=str(tmp_path / "alien.safetensors"))
    assert "folder's .safetensors files (alien.safetensors, junk.safetensors)" in refusal(path=str(tmp_path))


def test_a_job_may_list_loras_and_they_are_recorded(tmp_path, tiny_config, tiny_lora):
    """Job-level LoRAs join the run's one pipeline: recorded in metadata.csv and in each image's parameters."""
    import pandas as pd
    from PIL import Image

    from .conftest import PHOTOS, batch_edit

    job = (
        f"{{name: %s, sources: {PHOTOS / 'cat.jpg'}, prompts: 'a, tiger', num_inference_steps: 4, width: 64, height: 64,"
        f" loras: [{{path: {tiny_lora}, name: ink, scale: 0.5}}]}}"
    )
    (tmp_path / "m.yaml").write_text(f"jobs: [{job % 'one'}, {job % 'two'}]\n")
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = pd.read_csv(tmp_path / "out" / "one" / "metadata.csv").iloc[0]
    assert row["loras"] == "<lora:ink:0.5>"
    with Image.open(tmp_path / "out" / "one" / row["file_name"]) as image:
        assert image.text["parameters"].splitlines()[0] == "a, tiger <lora:ink:0.5>"
    more = job.replace("'a, tiger'", "['a, tiger', 'a lion']") % "one"
    (tmp_path / "more.yaml").write_text(f"jobs: [{more}]\n")
    plan = batch_edit("plan", "more.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert "2 item(s), 1 already done" in plan.stdout, plan.stdout + plan.stderr
    assert "for 1 item(s) at" in plan.stdout  # the LoRA run's timings are found for the estimate

    (tmp_path / "mixed.yaml").write_text(
        f"jobs: [{job % 'three'}, {{name: four, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}]\n"
    )
    refused = batch_edit("plan", "mixed.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert refused.returncode == 2
    assert "the jobs list different LoRAs" in refused.stderr and "four: none" in refused.stderr
