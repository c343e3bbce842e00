"""Each job's plan depends on its own records: another job of the same run never adds a file it made results from
as a source gone from this job's folder, nor changes the content this job last saw at a path (its archived
results stay its own); what a file holds (its stat -> sha256) is shared."""

from __future__ import annotations

import numpy as np
from PIL import Image

from batch_edit.manifest import load_manifest
from batch_edit.source_identity import file_identity, identify_sources

YAML = """jobs:
  - {name: A, sources: [photos/old.png], prompts: p}
  - {name: B, sources: photos/, prompts: q}
  - {name: C, sources: [photos/cat.png], prompts: p}
"""


def _image(path, seed: int) -> None:
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)


def test_a_job_never_gets_another_jobs_history(tmp_path):
    _image(tmp_path / "photos" / "new.png", 0)
    _image(tmp_path / "photos" / "cat.png", 1)
    (tmp_path / "m.yaml").write_text(YAML)
    a, b, c = load_manifest(tmp_path / "m.yaml").jobs
    old, cat = (tmp_path / "photos" / "old.png").as_posix(), (tmp_path / "photos" / "cat.png").as_posix()
    cat_stat, cat_sha = file_identity(cat)
    records = {
        "A": [{"source": old, "source_stat": "5-1", "source_sha256": "a" * 64, "status": "ok"}],  # old.png: gone
        "B": [],
        "C": [{"source": cat, "source_stat": cat_stat, "source_sha256": cat_sha, "status": "ok"}],
    }
    # B saw other content at old.png later (an item that failed: it made nothing of it)
    later = {"source": old, "source_stat": "5-9", "source_sha256": "b" * 64, "status": "failed", "error": "x"}
    by_job = {**records, "B": [later]}
    jobs = identify_sources([a, b, c], {}, by_job)
    # B lists photos/: old.png was never one of its files, so it is not planned as gone there
    assert [ref.key for ref in jobs[1].grids[0].sources] == [
        (tmp_path / "photos" / k).as_posix() for k in ("cat.png", "new.png")
    ]
    # A's gone old.png keeps the content A last saw there, not B's later one
    assert jobs[0].grids[0].sources[0].fingerprint == "a" * 64
    # what a file holds is shared: B's cat.png takes C's recorded sha256 for the same stat
    assert jobs[1].grids[0].sources[0].fingerprint == cat_sha
    # alone, each job plans the same
    assert identify_sources([b], {}, {"B": by_job["B"]})[0] == jobs[1]
    assert identify_sources([a], {}, {"A": by_job["A"]})[0] == jobs[0]
