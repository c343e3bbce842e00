"""What moving quanto's qint4 text encoder between the CPU and the GPU costs, layer by layer, at T5-XXL's full
size (bfloat16, random weights): the move a quanto config pays at load (quantized on the CPU, then moved) and,
under `offload: model`, at each of the encoders' visits to the GPU. Most layers move with batch_edit.quanto_moves
(the packing read back), then the rest with quanto's own unpacking (an identity matmul on the CPU; on a GPU also
the build of quanto's CUDA extension, minutes, where it was not built before); then every layer moves back to
the CPU (unpacked on the GPU, packed for the CPU). Each row is written as soon as it is measured. Also quanto's
qint8 quantization of one FLUX.1-dev double-stream and one single-stream block on the CPU, as a real load does it.

    python benchmarks/quanto_move_time.py                      # CUDA: all 24 layers, one (moved last) the quanto way
    python benchmarks/quanto_move_time.py --reduced --out /tmp/q.md   # CPU, small layers moved to `meta` instead

Each row is a measurement (wall seconds, and the CPU seconds of this process), per layer where it says so; the
table names the machine. The reduced form (the plumbing, in seconds) has layers and blocks of a small width and
moves to the meta device, which takes the same path on the CPU's side (unpack where the weight is, then pack
where it goes); it writes to --out only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from flux_architecture import FLUX_DEV_TRANSFORMER, T5_V1_1_XXL, default_dtype  # beside this script
from machine_load import cpu_model

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's batch_edit, installed or not


class Rows(list):
    """The measurements so far, written out after each (a run cut off at its limit keeps what it measured)."""

    def __init__(self, write=lambda rows: None):
        super().__init__()
        self.write = write

    def append(self, row) -> None:
        super().append(row)
        self.write(self)


def timed(rows: list, what: str, action, per: int = 1) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows.append((what, f"{wall / per:.3f}", f"{cpu / per:.2f}"))
    print(f"{what}: {wall / per:.3f} s wall, {cpu / per:.2f} CPU s", file=sys.stderr, flush=True)


REDUCED_T5 = dict(T5_V1_1_XXL, d_model=512, d_ff=1024, num_heads=8)  # widths the int4 packing still takes
REDUCED_FLUX = dict(FLUX_DEV_TRANSFORMER, num_attention_heads=2)  # 256 wide


def measure(device: str, layers: int, quanto_layers: int, reduced: bool = False, rows: list | None = None) -> list:
    import torch
    from optimum import quanto
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5Block

    from batch_edit import quanto_moves

    rows = Rows() if rows is None else rows
    config = T5Config(**(REDUCED_T5 if reduced else T5_V1_1_XXL))
    t5 = "T5 layer (reduced: 512 wide)" if reduced else "T5-XXL layer"
    with default_dtype(torch.bfloat16, torch):
        blocks = torch.nn.ModuleList(T5Block(config) for _ in range(layers)).eval()
    timed(rows, f"{t5}: quantize + freeze qint4 on the CPU (per layer)",
          lambda: (quanto.quantize(blocks, weights=quanto.qint4), quanto.freeze(blocks)), layers)  # fmt: skip
    target = device if device.startswith("cuda") else "meta"
    sync = (lambda: torch.cuda.synchronize(device)) if target != "meta" else (lambda: None)
    quanto_moves.install()
    new = blocks[quanto_layers:]
    timed(rows, f"{t5}: CPU -> {target}, batch_edit.quanto_moves (per layer, {len(new)} layers)",
          lambda: (new.to(target), sync()), len(new))  # fmt: skip
    quanto_moves.uninstall()  # last: on a GPU, quanto's way first builds its CUDA extension (minutes) if not built
    old = blocks[:quanto_layers]
    timed(rows, f"{t5}: CPU -> {target}, quanto's unpacking, its CUDA extension built if it was not "
          f"(per layer, {quanto_layers} layers)", lambda: (old.to(target), sync()), quanto_layers)  # fmt: skip
    if target != "meta":
        timed(rows, f"{t5}: {target} -> CPU (per layer, {layers} layers)",
              lambda: (blocks.to("cpu"), sync()), layers)  # fmt: skip
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    flux = REDUCED_FLUX if reduced else FLUX_DEV_TRANSFORMER
    heads, head_dim = flux["num_attention_heads"], flux["attention_head_dim"]
    name = "FLUX (reduced: 256 wide)" if reduced else "FLUX.1-dev"
    for block_class, count in ((FluxTransformerBlock, 19), (FluxSingleTransformerBlock, 38)):
        with default_dtype(torch.bfloat16, torch):
            block = block_class(dim=heads * head_dim, num_attention_heads=heads, attention_head_dim=head_dim).eval()
        timed(rows, f"{name} {block_class.__name__} (x{count}): quantize + freeze qint8 on the CPU",
              lambda block=block: (quanto.quantize(block, weights=quanto.qint8), quanto.freeze(block)))  # fmt: skip
    return rows


def render(rows: list, machine: str, reduced: bool) -> str:
    title = "REDUCED CPU FORM (moves to meta): NOT GPU figures" if reduced else "quanto qint4 moves, measured"
    lines = [f"# quanto moves: {title}", "", f"Machine: {machine}", "", "Written by `python benchmarks/quanto_move_time.py`.",
             "", "| what | wall s | CPU s (this process) |",
             "|---|---|---|", *(f"| {what} | {wall} | {cpu} |" for what, wall, cpu in rows), ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="CPU only, 2 layers moved to meta (plumbing)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    parser.add_argument("--layers", type=int, help="T5-XXL layers built (default 24: the whole encoder)")
    parser.add_argument("--quanto-layers", type=int, default=1, help="of those, moved with quanto's unpacking")
    parser.add_argument("--out", type=Path, help="markdown file (default benchmarks/results/gpu_quanto_moves.md)")
    args = parser.parse_args(argv)
    if args.reduced and not args.out:
        parser.error("--reduced needs --out: its figures never go to benchmarks/results")
    layers = args.layers or (2 if args.reduced else 24)
    if not 0 < args.quanto_layers < layers:
        parser.error(f"--quanto-layers must be at least 1 and fewer than the {layers} layers")
    import torch

    if not args.reduced and not torch.cuda.is_available():
        print("no CUDA GPU is visible: `--reduced --out FILE` runs the CPU form", file=sys.stderr)
        return 2
    device = "cpu" if args.reduced else args.device
    gpu = "" if args.reduced else f", {torch.cuda.get_device_name(device)}"
    kernels = torch.backends.cpu.get_cpu_capability()
    machine = f"{cpu_model()} ({torch.get_num_threads()} torch threads, CPU kernels {kernels}){gpu}"
    out = args.out or REPO / "benchmarks" / "results" / "gpu_quanto_moves.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    measure(
        device,
        layers,
        args.quanto_layers,
        args.reduced,
        Rows(lambda rows: out.write_text(render(rows, machine, args.reduced))),
    )
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
