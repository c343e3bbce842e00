"""A source archived (or renamed) together with its caption file keeps the caption its finished items were made
with (taken from their records' prompts), so those items keep their ids: done, not planned again with an empty
caption that fails as a file not found at every run."""

from __future__ import annotations

import numpy as np
from PIL import Image

from batch_edit.manifest import load_manifest
from batch_edit.plan import plan_jobs
from batch_edit.source_identity import identify_sources

YAML = """jobs:
  - {name: j, sources: photos/, prompts: ['{caption}, watercolor', '{caption}', '{stem}: {caption}']}
"""


def _ids(tmp_path, records) -> list[str]:
    (job,) = load_manifest(tmp_path / "m.yaml").jobs
    (plan,) = plan_jobs(identify_sources([job], {}, {"j": records}), {"model": "m"})
    return [(item.item_id, item.prompt) for item in plan.items]


def test_a_source_gone_with_its_caption_keeps_the_prompts_its_items_were_made_with(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for stem, caption in (("a", "a cat, watercolor"), ("b", "a dog")):  # a caption that looks like a prompt
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photos / f"{stem}.png")
        (photos / f"{stem}.txt").write_text(caption)
    (tmp_path / "m.yaml").write_text(YAML)
    planned = _ids(tmp_path, [])
    (job,) = identify_sources(load_manifest(tmp_path / "m.yaml").jobs, {})
    (plan,) = plan_jobs([job], {"model": "m"})
    records = [
        {
            "item_id": item.item_id,
            "source": item.source.key,
            "source_stat": item.source.stat,
            "source_sha256": item.source.fingerprint,
            "prompt": item.prompt,
            "status": "ok",
            "file_name": f"{item.item_id}.png",
        }
        for item in plan.items
    ]
    assert _ids(tmp_path, records) == planned
    (photos / "a.png").unlink()  # archived with its caption
    (photos / "a.txt").unlink()
    assert _ids(tmp_path, records) == planned  # the same items, the same prompts: all done
    assert "a: a cat, watercolor" in [prompt for _, prompt in planned]
