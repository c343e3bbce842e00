"""qint4 weights packed on the CPU leave it without quanto's identity matmul (in_features^2 x out_features
multiply-adds per weight: minutes for T5-XXL on every move to the GPU), with the same values.

A move to the meta device takes the very path of a move to a GPU on the CPU's side (unpack where the weight is,
then pack where it goes), so these tests run on the CPU alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from batch_edit import quanto_moves

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def packed_weights(module) -> list:
    """The module's qint4 weights that quanto keeps packed for the CPU's int4 kernel."""
    return [m.weight for m in module.modules() if type(getattr(m, "weight", None)).__name__.startswith("TinyGemm")]


def refuse_cpu_int4_matmul(monkeypatch) -> None:
    """quanto's own unpacking multiplies through this kernel: from here on it fails the test instead."""

    def refused(*args, **kwargs):
        raise AssertionError("unpacked through the CPU int4 matmul")

    monkeypatch.setattr(torch, "_weight_int4pack_mm_for_cpu", refused)


def test_the_pipeline_quantized_on_the_cpu_moves_its_text_encoders_without_the_int4_matmul(monkeypatch):
    """The tiny pipeline in bfloat16 through the quanto recipe on the CPU: its encoders' 256-wide layers are
    packed for the CPU kernel, as T5-XXL's are, and move off the CPU (as onto a GPU) reading that packing."""
    from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor

    from batch_edit.engine import Engine
    from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig
    from batch_edit.tiny_model import build_tiny_pipeline

    quant = QuantizationConfig(backend="quanto", transformer="qint8", text_encoder="qint4", text_encoder_2="qint4")
    config = PipelineConfig(model="tiny", dtype="bfloat16", device="cpu", quantization=quant, local_files_only=True)
    engine = Engine.from_pipeline(config, build_tiny_pipeline().to(torch.bfloat16))
    encoders = [engine.pipe.text_encoder, engine.pipe.text_encoder_2]
    weights = [weight for encoder in encoders for weight in packed_weights(encoder)]
    assert weights, "the tiny encoders hold CPU-packed qint4 weights (else this test checks nothing)"
    quanto_unpack = getattr(TinyGemmPackedTensor.unpack, "__wrapped__", TinyGemmPackedTensor.unpack)  # quanto's own
    expected = [quanto_unpack(weight._data) for weight in weights]
    refuse_cpu_int4_matmul(monkeypatch)
    assert all(torch.equal(weight._data.unpack(), values) for weight, values in zip(weights, expected))
    for encoder in encoders:
        encoder.to("meta")
    assert all(p.device.type == "meta" for encoder in encoders for p in encoder.parameters())


@pytest.mark.parametrize("shape", [(256, 128), (768, 3072), (128, 256)])
def test_the_read_back_values_are_quantos(shape):
    from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor

    quanto_moves.install()
    values = torch.randint(0, 16, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    packed = TinyGemmPackedTensor.pack(values)
    assert torch.equal(packed.unpack(), values)
    assert torch.equal(packed.unpack(), TinyGemmPackedTensor.unpack.__wrapped__(packed))


def test_rows_outside_the_known_blocks_keep_quantos_unpacking(monkeypatch):
    """96 rows: a short last block, packed otherwise: quanto's own unpacking, still exact."""
    from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor

    quanto_moves.install()
    arrangement = quanto_moves.cpu_arrangement()
    if arrangement is None or 96 % arrangement[0] == 0:
        pytest.skip("this CPU's blocks divide 96 rows")
    values = torch.randint(0, 16, (96, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    calls = []
    kernel = torch._weight_int4pack_mm_for_cpu
    monkeypatch.setattr(torch, "_weight_int4pack_mm_for_cpu", lambda *a: calls.append(1) or kernel(*a))
    assert torch.equal(TinyGemmPackedTensor.pack(values).unpack(), values) and calls


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="torch's x86 vector units")
@pytest.mark.parametrize("unit", ["avx2", "default"])
def test_each_vector_units_arrangement_is_learned(unit):
    """torch packs for the vector unit it runs on (AVX-512: blocks of 64 rows; AVX2: 32; none: 32, rows paired
    otherwise): the probe finds each, and the values read back are the packed ones."""
    script = (
        "import torch\n"
        "from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor\n"
        "from batch_edit import quanto_moves\n"
        "quanto_moves.install()\n"
        "v = torch.randint(0, 16, (512, 256), dtype=torch.uint8)\n"
        "assert quanto_moves.cpu_arrangement() is not None\n"
        "assert torch.equal(TinyGemmPackedTensor.pack(v).unpack(), v)\n"
        "print(quanto_moves.cpu_arrangement())\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": unit, "PYTHONPATH": REPO}
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == {"avx2": "(32, True)", "default": "(32, False)"}[unit]


@pytest.mark.parametrize("bits, shape", [(4, (256, 128)), (4, (3, 7)), (2, (5, 64)), (2, (8, 1))])
def test_the_device_neutral_packing_is_undone_without_quantos_op(monkeypatch, bits, shape):
    """On a GPU quanto's op would build its CUDA extension (nvcc, minutes): the values come from tensor operations
    alone, the ones quanto's own op returns on the CPU."""
    from optimum.quanto.tensor.packed import PackedTensor

    quanto_moves.install()
    values = torch.randint(0, 1 << bits, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    packed = PackedTensor.pack(values, bits=bits)
    expected = PackedTensor.unpack.__wrapped__(packed)  # quanto's own, through its op
    assert torch.equal(expected, values)

    def refused(*args, **kwargs):
        raise AssertionError("unpacked through quanto's op")

    monkeypatch.setattr(torch.ops.quanto, "unpack", refused)
    with pytest.raises(AssertionError):
        PackedTensor.unpack.__wrapped__(packed)  # the refusal reaches quanto's own path (else this checks nothing)
    assert torch.equal(packed.unpack(), values)
