"""`compile_mode`: torch.compile's mode for the compiled transformer. It changes kernel choices only (float
rounding), so like the other speed options it stays out of the item ids; the config each record names keeps it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from batch_edit.backends import _begin_cuda_graph_step
from batch_edit.engine import Engine
from batch_edit.pipeline_config import PipelineConfig, load_pipeline_config

from .conftest import PHOTOS, batch_edit, write_pipeline_config

MANIFEST = f"""
jobs:
  - name: sweep
    sources: {PHOTOS / "cat.jpg"}
    prompts: 'a tiger, photo'
    strength: [0.5, 0.7]
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
"""


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"compile_mode": "max-autotune-no-cudagraphs"}, "compile_mode needs compile: true or regional"),
        ({"compile": "regional", "compile_mode": "reduce-overhead"},
         ("compile_mode reduce-overhead uses CUDA graphs, which need device: cuda: with device cpu use "
          "max-autotune-no-cudagraphs or leave it unset")),
        ({"compile": "true", "compile_mode": "max-autotune"}, "compile_mode max-autotune uses CUDA graphs"),
        ({"device": "cuda", "compile": "true", "compile_mode": "reduce-overhead", "first_block_cache": 0.1},
         "compile_mode reduce-overhead (CUDA graphs) cannot be combined with first_block_cache"),
        ({"compile": "true", "compile_mode": "fast"}, "field 'compile_mode'"),
    ],
)  # fmt: skip
def test_modes_that_cannot_work_are_refused_by_key_before_anything_runs(tmp_path, tiny_model, settings, expected):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}", **settings)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert str(config) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_unknown_mode_message_lists_the_modes(tmp_path, tiny_model):
    from batch_edit.errors import ConfigError

    path = write_pipeline_config(tmp_path / "p.yaml", tiny_model, compile="true", compile_mode="fast")
    with pytest.raises(ConfigError, match="'max-autotune-no-cudagraphs', 'reduce-overhead' or 'max-autotune'"):
        load_pipeline_config(path)


def test_the_mode_leaves_the_ids_alone():
    compiled = PipelineConfig(compile="regional", quantization={"backend": "none"})
    tuned = compiled.model_copy(update={"compile_mode": "max-autotune"})
    assert tuned.identity() == compiled.identity()


@pytest.fixture
def compile_calls(monkeypatch):
    """What torch.compile was asked for (the call itself goes through: compiling is lazy)."""
    calls, real = [], torch.compile

    def recording(model=None, **options):
        calls.append(options)
        return real(model, **options)

    monkeypatch.setattr(torch, "compile", recording)
    return calls


@pytest.mark.parametrize("compile, hooked", [("regional", True), (True, False)])
def test_the_mode_reaches_torch_compile_and_regional_cuda_graphs_mark_each_transformer_call(
    tmp_path, tiny_model, compile_calls, compile, hooked
):
    """CUDA graphs need a GPU, so this checks the wiring lazily: with regional compile, each transformer call
    marks a new CUDA-graph step (its blocks' graphs one path); a whole compiled transformer needs no mark."""
    config = PipelineConfig(model=str(tiny_model), dtype="float32", device="cpu", local_files_only=True,
                            quantization={"backend": "none"}, compile_cache_dir=str(tmp_path / "inductor"))  # fmt: skip
    config = config.model_copy(update={"compile": compile, "compile_mode": "reduce-overhead"})  # as on CUDA
    transformer = Engine.load(config).pipe.transformer
    blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    assert len(compile_calls) == (blocks if compile == "regional" else 1)
    assert all(options["mode"] == "reduce-overhead" and options["fullgraph"] for options in compile_calls)
    assert (_begin_cuda_graph_step in transformer._forward_pre_hooks.values()) is hooked


def run_sweep(tmp_path, tiny_model, name: str, **settings) -> pd.DataFrame:
    config = write_pipeline_config(tmp_path / f"{name}.yaml", tiny_model, quantization="{backend: none}",
                                   batch_size=1, compile_cache_dir=str(tmp_path / "inductor"), **settings)  # fmt: skip
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(tmp_path / name / "sweep" / "metadata.csv").set_index("item_id")


@pytest.mark.slow  # 15 to 30 s on 2 cores, mostly inductor's CPU max-autotune compile
def test_regional_compile_with_autotuned_kernels_gives_the_uncompiled_images(tmp_path, tiny_model):
    """One real compile on the CPU, through the CLI: the same items, the same images to within 1/255, and the
    kept pipeline config names the mode."""
    plain = run_sweep(tmp_path, tiny_model, "plain")
    tuned = run_sweep(tmp_path, tiny_model, "tuned", compile="regional", compile_mode="max-autotune-no-cudagraphs")
    assert sorted(tuned.index) == sorted(plain.index) and len(plain) == 2
    for item in plain.index:
        want = np.asarray(Image.open(tmp_path / "plain" / "sweep" / plain.loc[item, "file_name"]), dtype=int)
        got = np.asarray(Image.open(tmp_path / "tuned" / "sweep" / tuned.loc[item, "file_name"]), dtype=int)
        assert np.abs(got - want).max() <= 1
    (kept,) = (tmp_path / "tuned" / "sweep" / ".batch-edit" / "pipelines").glob("*.yaml")
    assert yaml.safe_load(kept.read_text())["compile_mode"] == "max-autotune-no-cudagraphs"


def test_the_gpu_suite_measures_each_mode_on_tuned_regional_and_its_reduced_form_drops_the_mode(tmp_path):
    import importlib.util
    import sys

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_suite", suite)  # dataclasses look their module up while it loads
    spec.loader.exec_module(suite)
    steps = {step.name: step.args for step in suite.steps(tmp_path, tmp_path)}
    for name, mode in [("tuned-regional-max-autotune", "max-autotune-no-cudagraphs"),
                       ("tuned-regional-cudagraphs", "reduce-overhead")]:  # fmt: skip
        assert steps[name] == (*steps["tuned-regional"][:-6], "--set", f"compile_mode={mode}",
                               *steps["tuned-regional"][-6:])  # fmt: skip
        assert suite.reduced_args(steps[name]) == suite.reduced_args(steps["tuned-regional"])
