"""Memory a cached prompt encoding holds, with FLUX.1-dev's full-size text encoders (CLIP-L, T5 v1.1 XXL; random
weights, no download), encoded as the engine does it and as it did with autograd on.

    python benchmarks/prompt_memory.py --device cpu --out benchmarks/results/prompt_memory.md

An embedding computed with autograd on keeps its graph: every encoder layer's saved activations stay alive for as
long as the embedding is cached. "held" counts the distinct storages of the embeddings and of the tensors their
graphs saved (on any device); on CUDA the allocator's figures are added. Needs about 10 GiB of memory in bfloat16
(T5-XXL's weights) plus what is held.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's batch_edit, installed or not

from flux_architecture import build_flux_dev_pipeline, build_text_encoders  # noqa: E402
from machine_load import cpu_model  # noqa: E402

PROMPTS = ["a watercolor painting of the scene", "the same scene at night, neon lights"]
GIB = 2**30
FULL_SIZE = "CLIP-L and T5 v1.1 XXL (the encoder, 4.8B parameters) at full size with random weights"


class StorageCounter:
    """Distinct storages a block of code leaves referenced (its results and what autograd saved), split into the
    encoders' own weights and the rest. A graph that saved a weight keeps that storage alive even after the
    encoders are moved off the GPU (`offload_text_encoders`)."""

    def __init__(self, torch, modules):
        self.torch = torch
        self.weights = {self._key(p) for module in modules for p in module.parameters()}
        self.storages: dict[tuple, int] = {}

    @staticmethod
    def _key(tensor) -> tuple:
        return tensor.device.type, tensor.untyped_storage().data_ptr()

    def add(self, tensor) -> None:
        self.storages[self._key(tensor)] = tensor.untyped_storage().nbytes()

    def hooks(self):
        def pack(tensor):
            self.add(tensor)
            return tensor

        return self.torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)

    def gib(self, weights: bool) -> float:
        return sum(size for key, size in self.storages.items() if (key in self.weights) == weights) / GIB


def build_pipeline(device: str, dtype):
    """The img2img pipeline with real text encoders on `device`; the transformer and VAE stay on the meta device:
    they take no part in encoding."""
    pipe = build_flux_dev_pipeline("meta", dtype)
    (pipe.text_encoder, _), (pipe.text_encoder_2, _) = build_text_encoders(device, dtype)
    return pipe


def measure(mode: str, pipe, config, prompts: list[str]) -> dict:
    """Encode `prompts` and keep the results, as the prompt cache does. `engine`: the project's engine;
    `autograd on`: the same diffusers call made with autograd on (how the engine encoded before)."""
    import torch

    from batch_edit.engine import Engine

    device = torch.device(config.device)
    cuda = device.type == "cuda"
    counter = StorageCounter(torch, [pipe.text_encoder, pipe.text_encoder_2])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    with counter.hooks():
        if mode == "engine":
            engine = Engine(config, pipe)
            engine.encode_prompts(prompts)
            kept = [tensor for pair in engine._prompts.values() for tensor in pair]
        else:
            with torch.enable_grad():
                encoded = [
                    pipe.encode_prompt(
                        prompt=[prompt], prompt_2=None, device=device, max_sequence_length=config.max_sequence_length
                    )
                    for prompt in prompts
                ]
            kept = [tensor for embeds, pooled, _ in encoded for tensor in (embeds, pooled)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    for tensor in kept:
        counter.add(tensor)
    row = dict(
        mode=mode,
        prompts=len(prompts),
        held=counter.gib(weights=False),
        weights=counter.gib(weights=True),
        graph=any(t.grad_fn is not None for t in kept),
        seconds=seconds,
    )
    if cuda:
        row.update(
            allocated=(torch.cuda.memory_allocated() - before) / GIB,
            peak=(torch.cuda.max_memory_allocated() - before) / GIB,
        )
    del kept
    return row


def table(rows: list[dict], cuda: bool) -> list[str]:
    head = [
        "encoded by",
        "prompts kept",
        "held GiB (activations, embeddings)",
        "encoder weights referenced GiB",
        "autograd graph kept",
        "encode s",
    ]
    head += ["CUDA allocated GiB (kept)", "CUDA peak GiB (above start)"] if cuda else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row["mode"],
            str(row["prompts"]),
            f"{row['held']:.3f}",
            f"{row['weights']:.3f}",
            "yes" if row["graph"] else "no",
            f"{row['seconds']:.1f}",
        ]
        cells += [f"{row['allocated']:.3f}", f"{row['peak']:.3f}"] if cuda else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / GIB:.1f} GiB)"
    return f"CPU only: {cpu_model()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--out", type=Path, help="write the table here as markdown (printed either way)")
    parser.add_argument(
        "--model",
        type=Path,
        help="a local FLUX.1 model folder instead of the full-size random architecture (the tests use the tiny one)",
    )
    args = parser.parse_args(argv)
    import torch

    from batch_edit.pipeline_config import PipelineConfig

    config = PipelineConfig(device=args.device, dtype=args.dtype, quantization={"backend": "none"})
    if args.model:
        from diffusers import FluxImg2ImgPipeline

        pipe = FluxImg2ImgPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(args.device)
    else:
        pipe = build_pipeline(args.device, getattr(torch, args.dtype))
    prompts = PROMPTS[: args.prompts]
    rows = [measure(mode, pipe, config, prompts) for mode in ("autograd on", "engine")]
    lines = [
        "# Memory a cached prompt encoding holds: FLUX.1-dev's text encoders",
        "",
        f"Device: {machine(args.device)}; torch {torch.__version__}; {args.dtype}; Python {platform.python_version()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"Model: {args.model or FULL_SIZE}; {config.max_sequence_length} T5 tokens, no quantization",
        f"Command: `python benchmarks/prompt_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        *table(rows, args.device.startswith("cuda")),
        "",
        '"autograd on": the diffusers encoding call made with autograd enabled, as the engine made it before it',
        "encoded under `no_grad`. Each such embedding kept its graph while it stayed in the prompt cache: the",
        "activations column, per prompt, and a reference to every encoder weight the graph saved, which moving the",
        'encoders off the GPU (`offload_text_encoders`) could then not free. "engine": `Engine.encode_prompts`.',
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
