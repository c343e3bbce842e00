"""The GPU benchmark's stage lines, as a step cut off at its limit leaves them in the suite's log: the pipeline's
preparation (each component quantized, the move), each text-encoder call, VAE encode and decode, each denoising
step of each call, in the order they happen (the reduced form, on the tiny model)."""

from __future__ import annotations

import logging
import re

from .conftest import REPO
from .test_benchmarks import bench  # loads gpu_throughput.py, which puts benchmarks/ on the path


def stage_lines(err: str) -> list[str]:
    import gpu_suite  # beside gpu_throughput.py: what the suite reads back

    return [re.sub(r"^\[ *\d+\.\d s\] ", "", line) for line in err.splitlines() if gpu_suite.STAGE_LINE.match(line)]


def test_the_reduced_benchmark_says_each_stage_as_it_begins(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # the benchmark sets its own
    config = REPO / "configs" / "flux1-dev-24gb.yaml"
    argv = ["--reduced", "--config", str(config), "--items", "2", "--steps", "3", "--out", str(tmp_path / "m.md")]
    assert bench.main(argv) == 0
    lines = stage_lines(capsys.readouterr().err)
    call = ["VAE encode begins", *(f"transformer step {n} of call {{}} begins" for n in (1, 2)), "VAE decode begins"]
    expected = [
        "quantizing transformer to qint8 with quanto on cpu",
        "quantizing text_encoder to qint4 with quanto on cpu",
        "quantizing text_encoder_2 to qint4 with quanto on cpu",
        "quanto: every component quantized and frozen",
        "moving the pipeline to cpu",
        "text encoder (CLIP) call begins",
        "text encoder 2 (T5) call begins",
        "pipeline call 1 (1 item(s)) begins",
        *(line.format(1) for line in call),
        "pipeline call 2 (1 item(s)) begins",
        *(line.format(2) for line in call),
    ]  # 3 steps at strength 0.9: int(3 x 0.9) = 2 run
    seen = [line for line in lines if line in expected]
    assert [line for line in expected if line in seen] == expected, lines
    assert seen.index("moving the pipeline to cpu") < seen.index("pipeline call 1 (1 item(s)) begins")
    assert seen[seen.index("pipeline call 2 (1 item(s)) begins") :] == expected[-5:], "call 2's stages in order"
    backends = logging.getLogger("batch_edit.backends")
    assert backends.propagate and not backends.handlers, "the product's logger as it was once the benchmark ends"
