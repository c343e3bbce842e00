"""Finishing a job folder in one pass over its finished items (missing caption files, missing kept copies, the
CSVs), the kept-copy repair cheap on a rerun and its warning said once, and `prune` doing the same repair and
moving the kept copies no item staying names along with the results it moves."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from batch_edit import kept_sources

from .conftest import batch_edit

MANIFEST = """output_root: out
defaults: {{width: 64, height: 64, num_inference_steps: 2, seed: 3}}
jobs:
  - name: job
    sources: "{sources}"
    masks: "masks/{{stem}}.png"
    prompts: a tiger
    strength: {strengths}
{options}"""
BOTH = "    captions: true\n    keep_sources: true\n"


def _sources(folder: Path, stems: str = "ab") -> None:
    rng = np.random.default_rng(0)
    (folder / "src").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "src" / f"{stem}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def _command(folder: Path, config, *args: str, options=BOTH, sources="src/[ab].png", strengths="[0.5, 0.7]"):
    (folder / "m.yaml").write_text(MANIFEST.format(sources=sources, strengths=strengths, options=options))
    return batch_edit(*args, "m.yaml", "--pipeline", str(config), cwd=folder)


def _ran(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a job folder but its records and state, by relative name."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".batch-edit" not in path.relative_to(folder).parts
    }


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


def _copies_named(folder: Path) -> set[str]:
    rows = pd.read_csv(folder / "metadata.csv")
    return {*rows.source_image_file_name, *rows.mask_file_name}


def _file_calls(monkeypatch, folder: Path) -> Counter:
    """(call, path relative to `folder`) -> how often os.lstat, os.stat or os.open is called on it from now on."""
    calls: Counter = Counter()

    def spying(name: str):
        real = getattr(os, name)

        def call(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(f"{folder}{os.sep}"):
                calls[name, os.path.relpath(path, folder)] += 1
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, call)

    for name in ("lstat", "stat", "open"):
        spying(name)
    return calls


def _first_run(tmp_path: Path, tiny_task_config) -> tuple[Path, Path]:
    """The inpaint job run once (captions, kept copies): its pipeline config and its folder."""
    _sources(tmp_path)
    config = tiny_task_config("inpaint")
    _ran(_command(tmp_path, config, "run"))
    return config, tmp_path / "out" / "job"


# ---------------------------------------------------------------- one pass, the same files


def test_finishing_writes_the_captions_copies_and_csvs_a_run_writes(tmp_path, tiny_task_config):
    config, folder = _first_run(tmp_path, tiny_task_config)
    made = _files(folder)
    assert sum(name.endswith(".txt") for name in made) == 4 and sum(n.startswith("sources/") for n in made) == 4
    records = _records(folder)
    for name in made:  # every caption and kept copy gone: the finishing pass of a rerun writes them again
        if name.endswith(".txt") or name.startswith("sources/"):
            (folder / name).unlink()
    _ran(_command(tmp_path, config, "run"))
    assert _files(folder) == made  # byte for byte, metadata.csv and the contact sheets too
    assert _records(folder) == records  # the records named these copies already: nothing appended


def test_a_finished_rerun_reads_the_records_once_to_finish_and_checks_no_kept_copy(
    tmp_path, tiny_task_config, monkeypatch
):
    config, folder = _first_run(tmp_path, tiny_task_config)
    results = list(pd.read_csv(folder / "metadata.csv").file_name)
    calls = _file_calls(monkeypatch, folder)
    _ran(_command(tmp_path, config, "run"))  # nothing to do: only the finishing of what is there
    # planning reads the records twice (sources' recorded hashes, what is done), the finishing pass once
    assert calls["open", ".batch-edit/records.jsonl"] == 3, calls
    for name in results:  # one check to skip it, one to finish: not one per caption, copy and CSV walk
        assert calls["lstat", name] == 2 and calls["lstat", name.replace(".png", ".txt")] == 1, calls
    assert not [key for key in calls if key[1].startswith("sources/")], calls  # one listing of sources/


# ---------------------------------------------------------------- items that cannot get copies: said once


def _change_keeping_stat(path: Path) -> bytes:
    """New content under the same size and mtime: planning keeps the recorded hash, so the item stays finished,
    but its fitted copy would not be the run's. Returns the original bytes."""
    seen, original = os.stat(path), path.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF
    path.write_bytes(bytes(changed))
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    return original


def test_items_that_cannot_get_copies_are_said_once_and_not_loaded_again(tmp_path, tiny_task_config, monkeypatch):
    _sources(tmp_path)
    config = tiny_task_config("inpaint")
    _ran(_command(tmp_path, config, "run", options=""))
    originals = {stem: _change_keeping_stat(tmp_path / "src" / f"{stem}.png") for stem in "ab"}
    stderr = _ran(_command(tmp_path, config, "run"))  # keep_sources turned on: none of the 4 items can get copies
    warnings = [line for line in stderr.splitlines() if "no fitted copy under sources/" in line]
    assert len(warnings) == 1 and "job 'job': 4 finished item(s)" in warnings[0], stderr
    assert "4 in all, listed in .batch-edit/uncopied.json; not said again" in warnings[0]

    loaded = Counter()
    source_bytes = kept_sources.source_bytes
    monkeypatch.setattr(kept_sources, "source_bytes", lambda ref, *a: loaded.update([ref.key]) or source_bytes(ref, *a))
    stderr = _ran(_command(tmp_path, config, "run"))
    assert "WARNING" not in stderr and not loaded, stderr  # nothing said again, no source loaded again

    folder = tmp_path / "out" / "job"
    (tmp_path / "src" / "a.png").write_bytes(originals["a"])  # put back (a new mtime): its items get their copies
    stderr = _ran(_command(tmp_path, config, "run"))
    assert "WARNING" not in stderr and set(loaded) == {(tmp_path / "src" / "a.png").as_posix()}, stderr
    rows = pd.read_csv(folder / "metadata.csv")
    kept = rows.source_image_file_name.notna()
    assert list(rows.source[kept]) == [(tmp_path / "src" / "a.png").as_posix()] * 2
    assert sorted(path.name.rsplit("-", 1)[0] for path in (folder / "sources").iterdir()) == ["a", "a-mask"]
    uncopied = json.loads((folder / ".batch-edit" / "uncopied.json").read_text())
    assert sorted(entry["source"] for entry in uncopied.values()) == [(tmp_path / "src" / "b.png").as_posix()] * 2

    (tmp_path / "src" / "b.png").write_bytes(originals["b"])
    _ran(_command(tmp_path, config, "run"))
    assert not (folder / ".batch-edit" / "uncopied.json").exists()  # every item has its copies: nothing to list
    assert pd.read_csv(folder / "metadata.csv").source_image_file_name.notna().all()


def test_an_item_newly_without_copies_is_said_with_the_count_of_all(tmp_path, tiny_task_config):
    _sources(tmp_path)
    config = tiny_task_config("inpaint")
    _ran(_command(tmp_path, config, "run", options="", strengths="0.5"))
    _change_keeping_stat(tmp_path / "src" / "a.png")
    assert "job 'job': 1 finished item(s)" in _ran(_command(tmp_path, config, "run", strengths="0.5"))
    _change_keeping_stat(tmp_path / "src" / "b.png")
    folder = tmp_path / "out" / "job"
    for path in (folder / "sources").glob("b-*"):
        path.unlink()  # b's copies deleted, and its source changed: b cannot get them again
    stderr = _ran(_command(tmp_path, config, "run", strengths="0.5"))
    assert "job 'job': 1 finished item(s)" in stderr and "b.png" in stderr and "(2 in all" in stderr, stderr


# ---------------------------------------------------------------- prune


def test_prune_writes_a_deleted_kept_copy_and_caption_again(tmp_path, tiny_task_config):
    config, folder = _first_run(tmp_path, tiny_task_config)
    made = _files(folder)
    copy = sorted(_copies_named(folder))[0]
    caption = next(name for name in made if name.endswith(".txt"))
    (folder / copy).unlink()
    (folder / caption).unlink()
    _ran(_command(tmp_path, config, "prune"))
    assert _files(folder) == made


def test_prune_moves_the_kept_copies_no_item_staying_names(tmp_path, tiny_task_config):
    config, folder = _first_run(tmp_path, tiny_task_config)
    before = _files(folder)
    copies = {name for name in before if name.startswith("sources/")}
    leaving = {name for name in copies if name.startswith("sources/b-")}  # b's source and mask copies
    assert len(leaving) == 2
    # b leaves the plan, and a's strength 0.7: a's copies stay, named by its 0.5 result
    dry = _ran_out(_command(tmp_path, config, "prune", "--dry-run", sources="src/a.png", strengths="0.5"))
    for name in leaving:
        assert f"would move the kept copy {name} (no result staying names it)" in dry, dry
    assert "would move the kept copy sources/a-" not in dry and "would move 5," in dry, dry
    assert _files(folder) == before  # a dry run moves nothing

    printed = _ran_out(_command(tmp_path, config, "prune", sources="src/a.png", strengths="0.5"))
    assert "moved 5," in printed, printed
    pruned = folder / ".batch-edit" / "pruned"
    for name in leaving:
        assert (pruned / name).read_bytes() == before[name] and not (folder / name).exists()
    assert {n for n in _files(folder) if n.startswith("sources/")} == copies - leaving == _copies_named(folder)


def _ran_out(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
