"""Under compile a short batch is padded to the batch size; a lone item whose padded call runs out of memory is
tried once more unpadded (as the halves of a larger batch are) before it is recorded as out of memory.
The out-of-memory is simulated (a fake around the engine's real pipeline call); the pipeline is the tiny real one."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from batch_edit.engine import Engine
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig
from batch_edit.worker import Prepared, Task, Worker

from .test_engine import items_and_images


def engine_with_memory_for(tiny_model, monkeypatch, fits: int, calls: list) -> Engine:
    """A compile config (batch 4) on the tiny pipeline, not compiled: the padding is the config's; a call of more
    than `fits` images (padding included) runs out of memory."""
    plain = PipelineConfig(model=str(tiny_model), device="cpu", dtype="float32", batch_size=4,
                           quantization=QuantizationConfig(backend="none"))  # fmt: skip
    pipe = Engine.load(plain, announce=False).pipe
    engine = Engine(plain.model_copy(update={"compile": True}), pipe)
    real = Engine._call

    def call(self, items, images, masks, width, height, padding):
        calls.append(len(items) + padding)
        if len(items) + padding > fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, items, images, masks, width, height, padding)

    monkeypatch.setattr(Engine, "_call", call)
    return engine


def test_a_lone_padded_item_out_of_memory_is_retried_unpadded_and_made(tiny_model, monkeypatch):
    calls = []
    engine = engine_with_memory_for(tiny_model, monkeypatch, fits=1, calls=calls)
    (item,), (image,) = items_and_images([("a tiger", 1)])
    (generated,) = Worker(engine, {}).generate([Prepared(Task(item), image=image)])
    assert calls == [4, 1], calls
    assert generated.failure is None and isinstance(generated.image, Image.Image)
    assert generated.image.size == (64, 64) and generated.batch_size == 1
    (alone,) = engine.generate([item], [image], pad=False)  # what the retry made: the item unpadded
    assert np.array_equal(np.asarray(generated.image), np.asarray(alone))


def test_a_lone_item_out_of_memory_even_unpadded_is_recorded_so(tiny_model, monkeypatch):
    calls = []
    engine = engine_with_memory_for(tiny_model, monkeypatch, fits=0, calls=calls)
    (item,), (image,) = items_and_images([("a tiger", 1)])
    (generated,) = Worker(engine, {}).generate([Prepared(Task(item), image=image)])
    assert calls == [4, 1], calls
    assert generated.image is None
    assert generated.failure.error == "out of memory on a batch of 1 at 64x64 (also padded to 4 for compile)"
