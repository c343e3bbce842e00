"""quanto's 4-bit weights leaving the CPU in time linear in their size.

quanto keeps a qint4 weight of bfloat16 scales (the text encoders of the quanto configs) packed for torch's
tinygemm kernel of the device it is on, and repacks it on every move to another device type: first it unpacks
it where it is, by multiplying an in_features x in_features identity matrix through the int4 kernel. On a CUDA
GPU that is quick; on the CPU it costs in_features^2 x out_features multiply-adds per weight: on the order of
10^13 for T5-XXL's encoder (about 600 CPU seconds measured on a 2-core machine), paid whenever the encoder moves
from the CPU to the GPU: once at load (quantized on the CPU, then moved), and under `offload: model` at each
visit of the GPU.

The CPU packing is a fixed arrangement of nibbles (rows in blocks; per block and input column, one byte holds two
rows' values), which `install` reads back directly instead. The arrangement depends on the CPU's vector unit
(torch picks the kernel at run time), so it is learned once per process from a probe that torch packs, among
the arrangements torch is known to use; a weight whose arrangement is not known (or a probe that matches none)
keeps quanto's own unpacking. The values are the same either way (`unpack` returns the same uint8 matrix).

On the way, quanto holds the weight in its device-neutral packing (two values per byte) and unpacks it again on
arrival. On a CUDA GPU quanto does that through its CUDA extension, which torch builds from source with nvcc the
first time it is asked (minutes; an error where the CUDA toolkit is missing; a build killed half-way leaves a
lock that makes every later one wait forever). `install` splits those bytes with two tensor operations instead,
on whatever device they are, as quanto's own CPU implementation does.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

BLOCKS = (16, 32, 64, 128)  # rows per packed block: 64 with AVX-512, 32 with AVX2 and without vector unit
PROBE_ROWS, PROBE_COLUMNS = 256, 64  # a few blocks of each size, columns a multiple of the kernel's k-tiles


def unpack_cpu(data, rows: int, columns: int, arrangement: tuple[int, bool]):
    """The (rows, columns) uint8 values 0..15 that torch._convert_weight_to_int4pack_for_cpu packed into `data`
    under `arrangement` (rows per block, and whether a byte pairs rows j and j + block/2, else 2j and 2j + 1)."""
    import torch

    block, halves = arrangement
    packed = data.reshape(rows // block, columns, block // 2)
    low, high = packed & 0xF, packed >> 4
    if halves:
        rows_first = torch.cat((low, high), dim=-1)  # block rows 0..block/2-1, then block/2..block-1
    else:
        rows_first = torch.stack((low, high), dim=-1).reshape(rows // block, columns, block)  # 0, 1, 2, ...
    return rows_first.permute(0, 2, 1).reshape(rows, columns).contiguous()


@functools.cache
def cpu_arrangement() -> tuple[int, bool] | None:
    """The arrangement this process's torch packs int4 weights in on the CPU, from a packed probe; None if it is
    none of the known ones (quanto's own unpacking is kept then)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 16, (PROBE_ROWS, PROBE_COLUMNS), dtype=torch.int32, generator=generator)
    try:
        packed = torch._convert_weight_to_int4pack_for_cpu(probe, innerKTiles=2)
    except (AttributeError, RuntimeError) as exc:  # a torch without the CPU int4 kernel: quanto packs no such weight
        log.debug("no CPU int4 packing to read back: %s", exc)
        return None
    for arrangement in ((block, halves) for block in BLOCKS for halves in (True, False)):
        if packed.numel() * 2 == probe.numel() and torch.equal(
            unpack_cpu(packed, PROBE_ROWS, PROBE_COLUMNS, arrangement), probe.to(torch.uint8)
        ):
            return arrangement
    log.warning("torch packs int4 weights on this CPU in an unknown arrangement: quanto unpacks them (slowly)")
    return None


def split_bytes(data, bits: int):
    """quanto's device-neutral packing undone: each byte's `8 // bits` values, the lowest bits first, one block of
    rows after another (what quanto's `unpack` op returns on any device, without its CUDA extension)."""
    import torch

    mask = (1 << bits) - 1
    return torch.cat([(data >> (bits * i)) & mask for i in range(8 // bits)]).to(torch.uint8)


def install() -> None:
    """Make quanto unpack CPU-packed int4 weights by reading their arrangement, and its device-neutral packing
    without its CUDA extension (once per process; idempotent)."""
    from optimum.quanto.tensor.packed import PackedTensor
    from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor

    original = TinyGemmPackedTensor.unpack
    if getattr(original, "_reads_cpu_arrangement", False):
        return

    @functools.wraps(PackedTensor.unpack)
    def unpack_anywhere(self):
        return split_bytes(self._data, self._bits)[: self.shape[0]]

    PackedTensor.unpack = unpack_anywhere

    @functools.wraps(original)
    def unpack(self):
        data = self._data
        if data.device.type == "cpu":
            rows, columns = self.size()
            arrangement = cpu_arrangement()
            if arrangement is not None and rows % arrangement[0] == 0 and data.numel() * 2 == rows * columns:
                return unpack_cpu(data, rows, columns, arrangement)
        return original(self)

    unpack._reads_cpu_arrangement = True
    TinyGemmPackedTensor.unpack = unpack


def uninstall() -> None:
    """quanto's own unpacking back (what `install` replaced; nothing if it did not)."""
    from optimum.quanto.tensor.packed import PackedTensor
    from optimum.quanto.tensor.weights.tinygemm.packed import TinyGemmPackedTensor

    if getattr(TinyGemmPackedTensor.unpack, "_reads_cpu_arrangement", False):
        TinyGemmPackedTensor.unpack = TinyGemmPackedTensor.unpack.__wrapped__
        PackedTensor.unpack = PackedTensor.unpack.__wrapped__
