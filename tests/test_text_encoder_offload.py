"""`offload_text_encoders: true` is honoured whether or not the run's distinct prompts fit `prompt_cache`: all
encoded up front then offloaded where they fit; else each batch's new prompts encoded, then the encoders offloaded
(brought back for the next batch's). On the CPU the encoders never move: a spy counts the offload calls."""

from __future__ import annotations

import pytest

import batch_edit.engine as engine_module
from batch_edit.engine import Engine
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import load_pipeline_config
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run

from .conftest import PHOTOS, write_pipeline_config


@pytest.mark.parametrize(("cache", "offloads"), [(256, 1), (2, 2)])
def test_text_encoders_are_offloaded_also_with_more_prompts_than_the_cache(tmp_path, tiny_model, monkeypatch, cache,
                                                                           offloads):  # fmt: skip
    options = dict(quantization="{backend: none}", batch_size=2, offload_text_encoders="true", prompt_cache=cache)
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, **options))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a, b, c], seed: 1, "
                        "num_inference_steps: 2, width: 32, height: 32}]\n")  # fmt: skip
    (loaded,) = load_manifests([manifest])
    plans = plan_jobs(list(loaded.jobs), config.identity())
    events = []
    offload, encode = engine_module.offload_text_encoders, Engine._embeddings
    monkeypatch.setattr(engine_module, "offload_text_encoders", lambda pipe: (events.append("offload"), offload(pipe)))

    def embeddings(self, prompts):
        events.append(f"encode {len([p for p in dict.fromkeys(prompts) if p not in self._prompts])}")
        return encode(self, prompts)

    monkeypatch.setattr(Engine, "_embeddings", embeddings)
    result = run(plans, config, tmp_path / "out", lambda c: Engine.load(c, announce=False), RunOptions())
    assert result.jobs[0].done == 3
    # every encoding of new prompts is followed by an offload before anything else
    assert events.count("offload") == offloads, events
    for index, event in enumerate(events):
        if event.startswith("encode") and event != "encode 0":
            assert events[index + 1] == "offload", events
