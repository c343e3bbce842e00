"""Cold and warm torch.compile time of the FLUX transformer: `compile: true` (whole model) against `compile: regional`.

The GPU benchmark measured a 400 s cold compile of the whole FLUX.1-dev transformer (benchmarks/results/
gpu_throughput.md). Compile time grows with the number of blocks traced, not with their width, so this benchmark
keeps FLUX.1-dev's depth (19 double-stream + 38 single-stream blocks) at a tiny width and runs on the CPU: what
it shows is how each mode's compile time scales with depth, not GPU seconds.

Each case is a fresh subprocess: build the transformer (fixed seed), one forward pass (the cold compile, or the
warm start from the on-disk cache the previous case left), then timed passes; outputs are compared with eager.

    . .venv/bin/activate
    python benchmarks/compile_time.py              # writes benchmarks/results/compile_time.md
    python benchmarks/compile_time.py --no-write
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import cpu_model  # beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

# FLUX.1-dev's depth, tiny width (heads x head dim = 32 channels; the rope axes add up to the head dim).
NARROW_FLUX = dict(
    patch_size=1, in_channels=16, num_layers=19, num_single_layers=38, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
)  # fmt: skip
IMAGE_TOKENS, TEXT_TOKENS, BATCH, TIMED_CALLS = 64, 16, 2, 5

CASE = r"""
import json, sys, time
import torch
from diffusers import FluxTransformer2DModel

mode, config = sys.argv[1], json.loads(sys.argv[2])
image_tokens, text_tokens, batch, timed_calls = (int(value) for value in sys.argv[3:7])
torch.manual_seed(0)
model = FluxTransformer2DModel(**config).eval()
inputs = dict(
    hidden_states=torch.randn(batch, image_tokens, config["in_channels"]),
    encoder_hidden_states=torch.randn(batch, text_tokens, config["joint_attention_dim"]),
    pooled_projections=torch.randn(batch, config["pooled_projection_dim"]),
    timestep=torch.full((batch,), 0.5),
    guidance=torch.full((batch,), 3.5),
    img_ids=torch.zeros(image_tokens, 3),
    txt_ids=torch.zeros(text_tokens, 3),
    return_dict=False,
)
if mode == "regional":
    model.compile_repeated_blocks(fullgraph=True, dynamic=False)
elif mode == "full":
    model.compile(fullgraph=True, dynamic=False)
with torch.inference_mode():
    started = time.perf_counter()
    out = model(**inputs)[0]
    first = time.perf_counter() - started
    seconds = []
    for _ in range(timed_calls):
        started = time.perf_counter()
        model(**inputs)
        seconds.append(time.perf_counter() - started)
torch.save(out, sys.argv[7])
print(json.dumps({"first_s": first, "call_s": sorted(seconds)[len(seconds) // 2]}))
"""

# (label, mode, cache): each compiled mode runs twice, cold (empty cache) then warm (the cache the cold run left)
CASES = [
    ("eager (no compile)", "eager", None),
    ("`compile: true`, cold cache", "full", "full"),
    ("`compile: true`, warm cache (a later run)", "full", "full"),
    ("`compile: regional`, cold cache", "regional", "regional"),
    ("`compile: regional`, warm cache (a later run)", "regional", "regional"),
]


def run_case(mode: str, cache: Path, output: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"}
    command = [sys.executable, "-c", CASE, mode, json.dumps(NARROW_FLUX), str(IMAGE_TOKENS), str(TEXT_TOKENS),
               str(BATCH), str(TIMED_CALLS), str(output)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only, leave the results file alone")
    args = parser.parse_args(argv)

    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-time-") as scratch:
        scratch = Path(scratch)
        eager_out = scratch / "eager.pt"
        for index, (label, mode, cache) in enumerate(CASES):
            print(f"[{index + 1}/{len(CASES)}] {label}", file=sys.stderr, flush=True)
            output = scratch / f"{index}.pt"
            result = run_case(mode, scratch / (cache or f"none-{index}"), eager_out if mode == "eager" else output)
            if mode != "eager":
                result["max_diff"] = (torch.load(output) - torch.load(eager_out)).abs().max().item()
            rows.append((label, result))

    blocks = NARROW_FLUX["num_layers"] + NARROW_FLUX["num_single_layers"]
    table = [
        "| case | first call s (compile included) | steady call s (median of 5) | whole process s | max abs diff vs eager |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {r['first_s']:.2f} | {r['call_s']:.4f} | {r['process_s']:.1f} | "
            f"{format(r['max_diff'], '.2e') if 'max_diff' in r else '-'} |"
            for label, r in rows
        ),
    ]
    lines = [
        "# torch.compile time: whole transformer against regional (`python benchmarks/compile_time.py`)",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_model(default=platform.machine())}, "
        f"{os.cpu_count()} cores, no GPU; Python {platform.python_version()}, torch {torch.__version__}.",
        "",
        f"Model: FluxTransformer2DModel with FLUX.1-dev's depth ({NARROW_FLUX['num_layers']} double-stream + "
        f"{NARROW_FLUX['num_single_layers']} single-stream = {blocks} blocks) at a tiny width "
        f"({NARROW_FLUX['num_attention_heads']} heads x {NARROW_FLUX['attention_head_dim']}), float32, random "
        f"weights; batch {BATCH}, {IMAGE_TOKENS} image + {TEXT_TOKENS} text tokens; `fullgraph=True, dynamic=False` "
        "as batch-edit compiles. Each case is a fresh process; a warm case reuses the on-disk inductor cache its "
        "cold case wrote, as a later `batch-edit run` on the same machine does. CPU seconds at a tiny width: "
        "the compile columns show how compile time scales with depth; the steady column is not a GPU speed.",
        "",
        *table,
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "compile_time.md").write_text(report, encoding="utf-8")
        print(f"wrote {RESULTS / 'compile_time.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
