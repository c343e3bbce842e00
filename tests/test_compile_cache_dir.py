"""`compile_cache_dir` is where inductor keeps compiled graphs: an explicit setting wins over a
TORCHINDUCTOR_CACHE_DIR already in the environment, and each engine of a process uses its own config's; without
the setting, the environment's folder, else ~/.cache/batch-edit/inductor."""

from __future__ import annotations

import os

import pytest

from batch_edit.engine import Engine
from batch_edit.pipeline_config import load_pipeline_config

from .conftest import write_pipeline_config
from .test_engine import items_and_images


def compiled_engine(tmp_path, tiny_model, name, **settings) -> Engine:
    config = write_pipeline_config(tmp_path / f"{name}.yaml", tiny_model, quantization="{backend: none}",
                                   compile="regional", batch_size=1, **settings)  # fmt: skip
    return Engine.load(load_pipeline_config(config), announce=False)  # torch.compile is lazy: nothing compiles yet


def test_the_configured_folder_wins_over_the_environment_and_each_engine_uses_its_own(tmp_path, tiny_model,
                                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "from-environment"))
    compiled_engine(tmp_path, tiny_model, "first", compile_cache_dir=str(tmp_path / "first"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "first")
    compiled_engine(tmp_path, tiny_model, "second", compile_cache_dir=str(tmp_path / "second"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "second")
    compiled_engine(tmp_path, tiny_model, "unset")  # the environment's, not the folder an engine set before
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "from-environment")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    compiled_engine(tmp_path, tiny_model, "default")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "home" / ".cache" / "batch-edit" / "inductor")


@pytest.mark.slow
def test_a_compiled_call_writes_its_graphs_to_the_configured_folder(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "from-environment"))
    engine = compiled_engine(tmp_path, tiny_model, "c", compile_cache_dir=str(tmp_path / "configured"))
    items, images = items_and_images([("a tiger", 1)], size=32)
    engine.generate(items, images)
    assert any(path.is_file() for path in (tmp_path / "configured").rglob("*"))
    assert not (tmp_path / "from-environment").exists()
