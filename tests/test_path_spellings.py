"""The same folder reached by another path (a symbolic link to it, or the working folder's physical path that a
relative manifest path resolves against) holds the same sources: a rerun through either spelling finds the items
done under the ids and seeds first recorded, and `prune` keeps them; folders that only hold links to the same files
stay sources of their own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.manifest import load_manifest
from batch_edit.source_identity import identify_sources, recorded_hashes

from .conftest import PHOTOS, batch_edit

YAML = """jobs:
  - {{name: ds, sources: {sources}, prompts: 'a fox', width: 64, height: 64, num_inference_steps: 2, strength: 0.5}}
"""


def _project(tmp_path, sources: str = "photos") -> None:
    """tmp/real: the manifest and its photos; tmp/link: a link to that folder."""
    rng = np.random.default_rng(0)
    (tmp_path / "real" / "photos").mkdir(parents=True)
    for stem in ("cat", "dog"):
        image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        image.save(tmp_path / "real" / "photos" / f"{stem}.png")
    (tmp_path / "real" / "m.yaml").write_text(YAML.format(sources=sources))
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)


def _run(cwd, config, manifest: str, *args: str, code: int = 0) -> str:
    out = str(cwd.parent / "out") if cwd.name in ("real", "link") else "out"
    result = batch_edit(*args, manifest, "--pipeline", str(config), "--output-root", out, cwd=cwd)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_rerun_through_another_spelling_of_the_manifest_folder_finds_its_items_done(tmp_path, tiny_config):
    _project(tmp_path)
    assert "2 written" in _run(tmp_path, tiny_config, "link/m.yaml", "run")
    listed = pd.read_csv(tmp_path / "out" / "ds" / "metadata.csv", dtype=str)
    assert listed["source"].str.startswith((tmp_path / "link").as_posix()).all()  # the path as given

    planned = _run(tmp_path, tiny_config, "real/m.yaml", "plan")
    assert "2 item(s), 2 already done" in planned and "note:" not in planned, planned
    # in the linked folder, the working folder (and so each relative path) is its physical path: tmp/real
    assert "nothing to do" in _run(tmp_path / "link", tiny_config, "m.yaml", "run")
    assert "would move 0, would reject 0, kept 2" in _run(tmp_path, tiny_config, "real/m.yaml", "prune", "--dry-run")
    again = pd.read_csv(tmp_path / "out" / "ds" / "metadata.csv", dtype=str)
    assert again[["item_id", "seed", "source", "file_name"]].equals(listed[["item_id", "seed", "source", "file_name"]])


def test_a_source_folder_named_through_a_link_is_the_same_folder(tmp_path, tiny_config):
    _project(tmp_path, sources="linked")
    (tmp_path / "real" / "linked").symlink_to(tmp_path / "real" / "photos", target_is_directory=True)
    assert "2 written" in _run(tmp_path / "real", tiny_config, "m.yaml", "run")
    (tmp_path / "real" / "m.yaml").write_text(YAML.format(sources="photos"))
    assert "nothing to do" in _run(tmp_path / "real", tiny_config, "m.yaml", "run")


def test_only_the_folder_spelling_is_matched_not_links_to_the_same_files(tmp_path):
    _project(tmp_path)
    real, links = tmp_path / "real" / "photos", tmp_path / "real" / "links"
    links.mkdir()
    for name in ("cat.png", "dog.png"):
        (links / name).symlink_to(real / name)
    (job,) = load_manifest(tmp_path / "real" / "m.yaml").jobs
    (linked,) = load_manifest(tmp_path / "link" / "m.yaml").jobs
    records = [{"source": ref.key, "source_stat": ref.stat, "source_sha256": "ab" * 32} for ref in job.grids[0].sources]

    def keys(spec_job) -> list[str]:
        return [ref.key for ref in identify_sources([spec_job], recorded_hashes(records))[0].grids[0].sources]

    assert keys(linked) == [(real / name).as_posix() for name in ("cat.png", "dog.png")]  # as the records spell it
    (tmp_path / "real" / "m.yaml").write_text(YAML.format(sources="links"))
    (other,) = load_manifest(tmp_path / "real" / "m.yaml").jobs
    assert keys(other) == [(links / name).as_posix() for name in ("cat.png", "dog.png")]  # another folder
    unrecorded = identify_sources([linked], {})[0].grids[0].sources  # nothing recorded: the path as given
    assert [ref.key for ref in unrecorded] == [
        (tmp_path / "link" / "photos" / name).as_posix() for name in ("cat.png", "dog.png")
    ]


CHAIN = """output_root: out
defaults: {{width: 16, height: 16, num_inference_steps: 2, strength: 0.5}}
jobs:
  - {{name: a, sources: [cat.jpg, coffee.jpg], prompts: a, file_name: '{{stem}}'{a_options}}}
  - {{name: b, sources: {reads}, prompts: 'b {{stem}}'}}
"""


def _chain(tmp_path, reads: str = "out/a", a_options: str = "") -> None:
    """tmp/real: a manifest whose job b edits job a's results; tmp/link: a link to that folder."""
    (tmp_path / "real").mkdir(exist_ok=True)
    for name in ("cat.jpg", "coffee.jpg"):
        (tmp_path / "real" / name).write_bytes((PHOTOS / name).read_bytes())
    (tmp_path / "real" / "m.yaml").write_text(CHAIN.format(reads=reads, a_options=a_options))
    if not (tmp_path / "link").exists():
        (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)


def _chain_run(cwd, config, manifest: str, *args: str) -> str:
    result = batch_edit("run", manifest, "--pipeline", str(config), *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("reads", ["out/a", "out/a/*.png"])
def test_a_chain_run_through_a_link_makes_the_readers_items_from_the_producers_results(tmp_path, tiny_config, reads):
    _chain(tmp_path, reads)  # job folders are where they really are (tmp/real/out), the sources spelled via tmp/link
    ran = _chain_run(tmp_path, tiny_config, "link/m.yaml")
    assert "job a: 2 written" in ran and "job b: 2 written, 0 already done, 0 failed" in ran, ran
    assert "results of job a in this run, not made yet" in ran or "holds no results yet" in ran, ran
    assert "job b: 0 written, 2 already done" in _chain_run(tmp_path, tiny_config, "link/m.yaml")


def test_overwrite_through_another_spelling_remakes_the_reader_after_the_producer(tmp_path, tiny_config):
    _chain(tmp_path)
    batch_edit("run", "link/m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)  # (tested above)
    _chain_run(tmp_path, tiny_config, "link/m.yaml")  # the reader's sources recorded as tmp/link/out/a/...
    _chain(tmp_path, a_options=", strength: 0.8")  # job a's results remade with new bytes, under the same names
    # in the linked folder the working folder is tmp/real: the reader's sources keep the recorded spelling
    ran = _chain_run(tmp_path / "link", tiny_config, "m.yaml", "--overwrite")
    assert "job b's items from them run after job a's" in ran, ran
    assert "job b: moved 2 earlier result(s) to .batch-edit/pruned/" in ran, ran
    folder = tmp_path / "real" / "out"
    made = {name: hashlib.sha256((folder / "a" / name).read_bytes()).hexdigest() for name in ("cat.png", "coffee.png")}
    listed = set(pd.read_csv(folder / "b" / "metadata.csv", dtype=str)["file_name"])
    records = [json.loads(line) for line in (folder / "b" / ".batch-edit" / "records.jsonl").read_text().splitlines()]
    made_from = {Path(r["source"]).name: r["source_sha256"] for r in records if r.get("file_name") in listed}
    assert made_from == made and len(listed) == 2  # b's results are edits of job a's new results
    assert len(list((folder / "b" / ".batch-edit" / "pruned").glob("*.png"))) == 2
