"""Step caching (`first_block_cache`) decides from a whole batch whether a step's remaining blocks are skipped:
items run one per pipeline call, so an item's image is its own, whatever its batch, and `reproduce` gives it back."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batch_edit.engine import Engine
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig, load_pipeline_config
from batch_edit.plan import plan_jobs
from batch_edit.sources import FetchOptions
from batch_edit.worker import ErrorLog, Task, prepare

from .conftest import PHOTOS, batch_edit, write_pipeline_config

SOURCES = ", ".join(str(PHOTOS / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"))
MANIFEST = f"""jobs:
  - name: j
    sources: [{SOURCES}]
    prompts: ['a tiger', 'a watercolor painting']
    seed: [1, 2]
    num_inference_steps: 12
    strength: 1.0
    width: 64
    height: 64
"""
THRESHOLD = 0.4  # on the tiny model, loose enough that a batch's company changes which steps are skipped


def test_an_items_image_does_not_depend_on_its_batch_under_step_caching(tmp_path, tiny_model):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    (loaded,) = load_manifests([tmp_path / "m.yaml"])
    (plan,) = plan_jobs(list(loaded.jobs), {"model": "tiny"})
    prepared = list(prepare([Task(item) for item in plan.items], FetchOptions(), ErrorLog()))
    config = PipelineConfig(model=str(tiny_model), device="cpu", dtype="float32", batch_size=16,
                            first_block_cache=THRESHOLD, quantization=QuantizationConfig(backend="none"))  # fmt: skip
    engine = Engine.load(config, announce=False)
    assert engine.batch_size == 1  # the worker hands it one item at a time; a caller giving more is served alike
    items, images = [p.task.item for p in prepared], [p.image for p in prepared]
    together = engine.generate(items, images)
    alone = [engine.generate([item], [image])[0] for item, image in zip(items, images)]
    differences = [int(np.abs(np.asarray(a, int) - np.asarray(b, int)).max()) for a, b in zip(together, alone)]
    assert differences == [0] * len(items), differences


def test_an_explicit_batch_size_with_step_caching_is_refused_naming_both(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}", batch_size=8,
                                   first_block_cache=THRESHOLD)  # fmt: skip
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("plan", "m.yaml", "--pipeline", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{config}: field 'batch_size': 8 cannot be combined with first_block_cache" in result.stderr
    assert "set batch_size: 1 or auto" in result.stderr
    for size in ("1", "auto"):
        path = write_pipeline_config(tmp_path / f"p{size}.yaml", tiny_model, batch_size=size, first_block_cache=0.1)
        assert load_pipeline_config(path).resolved_batch_size(80) == 1


def test_reproduce_gives_back_every_item_made_with_step_caching(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}",
                                   first_block_cache=THRESHOLD)  # fmt: skip
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("seed: [1, 2]", "seed: 1"))
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")
    assert list(rows["batch_size"]) == [1] * 8
    for item_id in rows["item_id"][:3]:
        again = batch_edit("reproduce", "out/j/metadata.csv", "--item", item_id, cwd=tmp_path)
        assert again.returncode == 0 and again.stdout.startswith("identical:"), again.stdout + again.stderr


def test_reproduce_of_an_item_recorded_in_a_larger_batch_re_renders_it_alone(tmp_path, tiny_model):
    """Records of versions that cached steps for a whole batch name a batch size over 1: their company cannot be
    given back, so the item is re-rendered alone (not with copies of itself, which would be company of another
    kind), once."""
    import csv

    from batch_edit.reproduce import reproduce

    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, quantization="{backend: none}",
                                   first_block_cache=THRESHOLD)  # fmt: skip
    (tmp_path / "m.yaml").write_text(
        MANIFEST.replace("seed: [1, 2]", "seed: 1").replace(SOURCES, str(PHOTOS / "cat.jpg"))
    )
    assert batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path).returncode == 0
    listing = tmp_path / "out" / "j" / "metadata.csv"
    with open(listing, newline="") as file:
        rows = list(csv.DictReader(file))
    rows[0]["batch_size"] = "4"
    with open(listing, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    calls = []

    def load_engine(loaded):
        engine = Engine.load(loaded, announce=False)
        generate = engine.generate
        engine.generate = lambda items, *args, **kwargs: calls.append(len(items)) or generate(items, *args, **kwargs)
        return engine

    result = reproduce(listing, rows[0]["item_id"], None, load_engine)
    assert calls == [1] and result.identical
