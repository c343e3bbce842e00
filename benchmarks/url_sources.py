"""URL sources: how long a sweep over slow servers takes, and how many downloads it makes.

Serves generated images from a loopback server that answers each request after a delay (a slow server: a
far-away host, a throttled CDN), then runs a strength sweep over them through the real runner and the tiny
FLUX pipeline on the CPU (`batch-edit run`, `--allow-private-urls`). Writes benchmarks/results/url_sources.md.

    python benchmarks/url_sources.py                        # 24 sources x 3 strengths, 0.5 s per request
    python benchmarks/url_sources.py --sources 48 --delay 1
    PYTHONPATH=/path/to/an/older/checkout python benchmarks/url_sources.py --append --label "commit abc123"

`--append` adds a row to the table already there (the same settings are assumed), to compare versions.
"""

from __future__ import annotations

import argparse
import http.server
import io
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


class _Slow(http.server.BaseHTTPRequestHandler):
    image = b""
    delay = 0.0
    hits = 0
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - http.server's name
        with _Slow.lock:
            _Slow.hits += 1
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.image)))
        self.end_headers()
        self.wfile.write(self.image)

    def log_message(self, *args):
        pass


def _photo() -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--strengths", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the server waits before each answer")
    parser.add_argument("--out", type=Path, default=RESULTS / "url_sources.md")
    parser.add_argument("--label", default="this checkout", help="what the row measured (a commit, a change)")
    parser.add_argument("--append", action="store_true", help="add a row to the table in --out")
    args = parser.parse_args(argv)

    _Slow.image, _Slow.delay = _photo(), args.delay
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    strengths = [round(0.5 + 0.4 * n / max(1, args.strengths - 1), 2) for n in range(args.strengths)]
    with tempfile.TemporaryDirectory(prefix="url-sources-") as scratch:
        folder = Path(scratch)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([sys.executable, "-m", "batch_edit", "make-tiny-model", str(folder / "tiny")], check=True,
                       capture_output=True, env=env)  # fmt: skip
        (folder / "tiny.yaml").write_text(
            f"model: {folder / 'tiny'}\ndtype: float32\ndevice: cpu\nlocal_files_only: true\n"
        )
        urls = ", ".join(f"'http://127.0.0.1:{port}/photo-{n}.jpg'" for n in range(args.sources))
        (folder / "m.yaml").write_text(
            f"jobs:\n  - {{name: urls, sources: [{urls}], prompts: p, strength: {strengths}, seed: 1, "
            "width: 64, height: 64, num_inference_steps: 4}\n"
        )
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "batch_edit", "run", "m.yaml", "--pipeline", "tiny.yaml", "--output-root", "out",
             "--allow-private-urls"], cwd=folder, capture_output=True, text=True, env=env,
        )  # fmt: skip
        seconds = time.monotonic() - started
    server.shutdown()
    if run.returncode != 0:
        print(run.stdout + run.stderr, file=sys.stderr)
        return 1
    job = next(line for line in run.stdout.splitlines() if line.startswith("job urls:")).split(" -> ")[0]
    items = args.sources * args.strengths
    import batch_edit

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    )
    print(f"measured the batch_edit of {Path(batch_edit.__file__).parent}", file=sys.stderr)
    row = f"| {args.label} | {_Slow.hits} | {seconds:.1f} | {job} |\n"
    if args.append and args.out.exists():
        table = args.out.read_text() + row
    else:
        table = (
            "# URL sources over a slow server\n\n"
            f"`python benchmarks/{Path(__file__).name} --sources {args.sources} --strengths {args.strengths} "
            f"--delay {args.delay}`: {args.sources} URL sources x {args.strengths} strengths ({items} items), each "
            f"request answered after {args.delay} s, tiny FLUX pipeline on the CPU, 64x64, 4 steps. Machine: "
            f"{machine}.\n\n| code | requests | whole command (s) | the run's own line |\n|---|---|---|---|\n" + row
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
