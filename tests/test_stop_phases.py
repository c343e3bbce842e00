"""A stop in the phases between the model's load and the batches: while the prompts are encoded up front (part of
the load: at once, no folder left) and while the driver waits for sources (no new batch starts). The engine is a
fake only to time the signal; the driver, worker and prefetch are the real ones."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from PIL import Image

from batch_edit import worker as worker_module
from batch_edit.manifest import load_manifests
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.plan import plan_jobs
from batch_edit.runner import RunOptions, run
from batch_edit.signals import LoadInterrupted

from .conftest import image_file


class TimedEngine:
    """Encodes prompts one at a time (SIGINT after the first when `stop_encoding`) and generates plain images."""

    def __init__(self, config: PipelineConfig, stop_encoding: bool = False):
        self.config, self.batch_size = config, config.batch_size
        self.stop_encoding, self.encoded, self.calls = stop_encoding, [], []

    def encode_prompts(self, prompts):
        for prompt in prompts:
            self.encoded.append(prompt)
            if self.stop_encoding:
                signal.raise_signal(signal.SIGINT)

    def generate(self, items, images, masks=None, pad=True):
        self.calls.append(len(items))
        return [Image.new("RGB", image.size, (item.seed % 256, 0, 0)) for item, image in zip(items, images)]


def plans(tmp_path, sources: int, prompts: int):
    for index in range(sources):
        image_file(tmp_path / f"s{index}.png", color=20 * index)
    names = ", ".join(f"s{index}.png" for index in range(sources))
    manifest = tmp_path / "m.yaml"
    prompt_list = ", ".join(f"p{index}" for index in range(prompts))
    manifest.write_text(f"jobs: [{{name: a, sources: [{names}], prompts: [{prompt_list}], width: 32, height: 32}}]\n")
    (loaded,) = load_manifests([manifest])
    return plan_jobs(list(loaded.jobs), {"model": "fake"})


def test_a_stop_while_prompts_are_encoded_up_front_stops_at_once_and_leaves_no_folder(tmp_path):
    config = PipelineConfig(model="fake", device="cpu", batch_size=2)
    engine = TimedEngine(config, stop_encoding=True)
    with pytest.raises(LoadInterrupted):
        run(plans(tmp_path, 1, 6), config, tmp_path / "out", lambda _: engine, RunOptions())
    assert engine.encoded == ["p0"] and engine.calls == []
    assert not (tmp_path / "out").exists()


def test_a_stop_while_the_driver_waits_for_sources_starts_no_new_batch(tmp_path, monkeypatch):
    read = worker_module.source_bytes

    def slow_from_the_third(ref, fetch):  # the driver waits for these; SIGINT while the fourth loads
        index = int(ref.stem[1:])
        if index >= 2:
            time.sleep(0.3)
        if index == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return read(ref, fetch)

    monkeypatch.setattr(worker_module, "source_bytes", slow_from_the_third)
    config = PipelineConfig(model="fake", device="cpu", batch_size=2)
    engine = TimedEngine(config)
    assert threading.current_thread() is threading.main_thread()  # where the signal is handled
    result = run(plans(tmp_path, 6, 1), config, tmp_path / "out", lambda _: engine, RunOptions())
    assert result.interrupted_by == signal.SIGINT
    assert engine.calls == [2], "a batch started after the stop"
    assert (result.jobs[0].done, result.jobs[0].not_run) == (2, 4)
