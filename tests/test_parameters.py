"""Each item parameter is declared once (batch_edit.parameters) and every stage reads the declaration: ids and
seeds stay what they were, and a parameter added to the declarations reaches every stage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from batch_edit.manifest import load_manifest
from batch_edit.plan import make_item, plan_jobs
from batch_edit.sources import SourceRef

REPO = Path(__file__).resolve().parent.parent
PIPELINE = {"model": "black-forest-labs/FLUX.1-dev", "revision": "main", "dtype": "bfloat16", "quantization": "none"}
GRID_YAML = """\
jobs:
  - name: derived
    sources: ["https://example.com/a/cat.png", "https://example.com/b/dog.jpg"]
    prompts: ["a {stem} as a tiger", "watercolor"]
    strength: [0.5, 0.75]
    variations: 2
  - name: explicit
    sources: https://example.com/a/cat.png
    prompts: snowy
    seed: [7, 123456789]
    num_inference_steps: 20
    guidance_scale: 4.5
    width: 512
    height: 768
    resize: pad
    variations: 3
"""
ROWS_CSV = (
    "source,prompt,strength,seed,variations,width\n"
    "https://example.com/a/cat.png,night,0.6,,,\n"
    "https://example.com/b/dog.jpg,day,0.8,42,2,640\n"
)
# Computed before the parameters were declared in one place: any drift in ids or seeds fails here.
PINNED = {
    "derived": [
        ("bfdf221c55d780e0", 2291097630), ("55135babc5826278", 2285979552), ("6fb3a23344ac6638", 2291097630),
        ("df3bdc3e79f7aaa2", 2285979552), ("75970823a8d9ca48", 3946475340), ("1356124613a6e862", 1724673411),
        ("af1621f3c381c1e8", 3946475340), ("c75c97e8093003e5", 1724673411), ("6ad557223bdf1551", 1706016149),
        ("679f306222faa7aa", 2403175739), ("1421f26216a206e1", 1706016149), ("8d0a2de827cbb3a2", 2403175739),
        ("bf032baf4025b586", 3179424492), ("4e382b75c8d7f782", 1508868761), ("9577c04424e10946", 3179424492),
        ("29b84ca2b6c37ed4", 1508868761),
    ],
    "explicit": [
        ("23477ab1e1b6c7cc", 7), ("781f0ca42b1f54f8", 8), ("6a1b774c59454683", 9),
        ("339ef44d4ba96dfa", 123456789), ("78ec117b945f1673", 123456790), ("c40d01e4acd9af7b", 123456791),
    ],
    "rows": [("dfe3d35dae22d644", 1583418252), ("a81609e7bc663cc3", 42), ("c76bc2041e85deee", 43)],
}  # fmt: skip


def test_ids_and_seeds_are_those_planned_before(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID_YAML)
    (tmp_path / "rows.csv").write_text(ROWS_CSV)
    planned = {}
    for name in ("grid.yaml", "rows.csv"):
        for plan in plan_jobs(list(load_manifest(tmp_path / name).jobs), PIPELINE):
            planned[plan.name] = [(item.item_id, item.seed) for item in plan.items]
    assert planned == PINNED


def test_make_item_ids_and_seeds_are_those_made_before():
    ref = SourceRef(key="/data/cat.jpg", is_url=False, stem="cat", fingerprint="ab" * 32, caption=None)
    params = dict(strength=0.9, num_inference_steps=28, guidance_scale=3.5, seed=None, width=1024, height=1024,
                  resize="center-crop")  # fmt: skip
    key = json.dumps({"model": "m"}, sort_keys=True)
    made = [make_item("job", ref, "a cat", params, key, variation) for variation in (0, 3)]
    made.append(make_item("job", ref, "a cat", {**params, "seed": 5}, key, 1))
    assert [(item.item_id, item.seed) for item in made] == [
        ("726ebe83c9208fd4", 2827726160), ("5e1bdb796c2805ff", 3387674742), ("26a03ba6e93f7c6e", 6),
    ]  # fmt: skip
