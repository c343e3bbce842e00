"""A chain remade: the reader's results made from what its producer replaced in the run move to
`.batch-edit/pruned/` once the new ones are written, recorded as `prune` records them; nothing the run did not
replace moves (a producer's result replaced by hand, a reader's redo that failed)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from batch_edit import worker as worker_module
from batch_edit.source_decoding import SourceError

from .conftest import PHOTOS, batch_edit

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"
MOVED = "moved 2 earlier result(s) to .batch-edit/pruned/: made from results of job {} that this run replaced"


def chain(tmp_path: Path, a_options: str = "", third: bool = False) -> Path:
    """Job a edits two photos, job b (with captions and kept copies) edits a's results, and (`third`) job c
    edits b's."""
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / name)
    jobs = [
        f"  - {{name: a, sources: [cat.jpg, coffee.jpg], prompts: a{a_options}}}\n",
        "  - {name: b, sources: out/a, prompts: 'b {stem}', captions: true, keep_sources: true}\n",
        "  - {name: c, sources: out/b, prompts: 'c {stem}'}\n" if third else "",
    ]
    manifest = tmp_path / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + "".join(jobs))
    return manifest


def run(manifest: Path, config: Path, *extra: str) -> str:
    result = batch_edit("run", str(manifest), "--pipeline", str(config), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def results(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png") if not p.name.startswith("contact-sheet")}


def pruned(folder: Path, under: str = "") -> set[str]:
    return {p.name for p in (folder / ".batch-edit" / "pruned" / under).glob("*") if p.is_file()}


def copies(folder: Path) -> set[str]:
    return {p.name for p in (folder / "sources").glob("*")}


def listed(folder: Path) -> set[str]:
    return set(pd.read_csv(folder / "metadata.csv")["file_name"])


def latest_records(folder: Path) -> dict[str, dict]:
    latest = {}
    for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        latest[record["item_id"]] = record
    return latest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def settled(manifest: Path, config: Path, out: Path, jobs: str = "ab") -> None:
    """A plain run redoes nothing, and `prune` finds nothing to move."""
    assert "nothing to do: every item is already done" in run(manifest, config)
    dry = batch_edit("prune", str(manifest), "--pipeline", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for job in jobs:
        assert f"job {job}: would move 0, would reject 0, kept 2 -> {out / job}" in dry.stdout, dry.stdout


@pytest.mark.parametrize("flags", [("--overwrite",), ()], ids=["overwrite", "plain"])
def test_a_producer_remade_under_the_same_names_leaves_the_reader_its_current_results_only(
    tmp_path, tiny_config, flags
):
    """Job a's strength changed (its results keep their names, `{stem}`): its results get new bytes, so job b's
    items from them are new items with new names. b's earlier results and their captions move to pruned/ with
    "pruned" records; b's folder and metadata.csv hold the new ones, made from a's new results."""
    out = tmp_path / "out"
    run(chain(tmp_path, ", file_name: '{stem}'"), tiny_config)
    earlier, earlier_copies = results(out / "b"), copies(out / "b")
    earlier_ids = {r["item_id"] for r in latest_records(out / "b").values()}
    manifest = chain(tmp_path, ", file_name: '{stem}', strength: 0.8")
    remade = run(manifest, tiny_config, *flags)
    assert "job a: 2 written" in remade and "job b: 2 written" in remade, remade
    assert f"job b: {MOVED.format('a')}" in remade, remade
    now = results(out / "b")
    assert len(now) == 2 and not now & earlier
    assert listed(out / "b") == now
    assert {p.name for p in (out / "b").glob("*.txt")} == {Path(name).stem + ".txt" for name in now}
    assert pruned(out / "b") == earlier | {Path(name).stem + ".txt" for name in earlier}  # captions went along
    named = {Path(name).name for name in pd.read_csv(out / "b" / "metadata.csv")["source_image_file_name"]}
    assert copies(out / "b") == named and pruned(out / "b", "sources") == earlier_copies  # the copies they named
    records = latest_records(out / "b")
    assert {records[item_id]["status"] for item_id in earlier_ids} == {"pruned"}
    assert {Path(records[item_id]["pruned_to"]).name for item_id in earlier_ids} == earlier
    made_from = {Path(r["source"]).name: r["source_sha256"] for r in records.values() if r["status"] == "ok"}
    assert made_from == {name: sha256(out / "a" / name) for name in ("cat.png", "coffee.png")}
    settled(manifest, tiny_config, out)


def test_an_overwritten_chain_of_three_leaves_each_reader_its_current_results_only(tmp_path, tiny_config):
    """The same settings: `--overwrite` still gives job a's results new bytes (each records when it was made), so
    b's results are new items under new names; b's earlier ones move out, and c's made from them move too (c
    edits b's new results only, not the ones moved out)."""
    out = tmp_path / "out"
    manifest = chain(tmp_path, third=True)
    run(manifest, tiny_config)
    a_before = {name: sha256(out / "a" / name) for name in results(out / "a")}
    earlier = {job: results(out / job) for job in "bc"}
    time.sleep(1.1)  # the records results embed say when they were made, to the second: a later second, new bytes
    remade = run(manifest, tiny_config, "--overwrite")
    assert {name: sha256(out / "a" / name) for name in results(out / "a")}.items().isdisjoint(a_before.items())
    assert f"job b: {MOVED.format('a')}" in remade and f"job c: {MOVED.format('b')}" in remade, remade
    assert "total: 6 written, 0 failed" in remade, remade
    for job in "bc":
        now = results(out / job)
        assert len(now) == 2 and not now & earlier[job] and listed(out / job) == now
        assert earlier[job] <= pruned(out / job)
    c_sources = {Path(source).name for source in pd.read_csv(out / "c" / "metadata.csv")["source"]}
    assert c_sources == results(out / "b")
    settled(manifest, tiny_config, out, "abc")


def test_a_reader_keeps_what_was_made_from_a_result_replaced_by_hand(tmp_path, tiny_config):
    """A producer's result replaced by hand: not content the run replaced (the run puts the hand-made file aside
    and makes a's result again, or takes it as it is): b's result from the original stays beside the new one, as
    a result of any source changed by hand does, until `prune` moves it."""
    out = tmp_path / "out"
    manifest = chain(tmp_path)
    run(manifest, tiny_config)
    earlier = results(out / "b")
    cat = next((out / "a").glob("cat-*.png"))
    Image.new("RGB", (24, 24), "red").save(cat)
    again = run(manifest, tiny_config)
    assert "job b: 1 written, 1 already done" in again and "earlier result" not in again, again
    assert earlier < results(out / "b") and not pruned(out / "b")
    assert len(listed(out / "b")) == 2  # the new result stands for cat's row
    dry = batch_edit("prune", str(manifest), "--pipeline", str(tiny_config), "--dry-run")
    old_cat = next(name for name in earlier if name.startswith("cat-"))
    assert f"would move {old_cat} and its caption" in dry.stdout, dry.stdout


def test_a_readers_earlier_results_stay_where_their_redo_failed(tmp_path, tiny_config, monkeypatch):
    """b's items from a's remade results fail: a failure takes no result away, so b's earlier results stay in
    place and listed (failures.csv lists the failures); nothing moves."""
    out = tmp_path / "out"
    manifest = chain(tmp_path)
    run(manifest, tiny_config)
    earlier = results(out / "b")
    read = worker_module.source_bytes

    def a_unreadable(ref, fetch):
        if Path(ref.key).parent.name == "a":
            raise SourceError("not an image (simulated)")
        return read(ref, fetch)

    monkeypatch.setattr(worker_module, "source_bytes", a_unreadable)
    failed = batch_edit("run", str(manifest), "--pipeline", str(tiny_config), "--overwrite")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "job a: 2 written" in failed.stdout and "job b: 0 written, 0 already done, 2 failed" in failed.stdout
    assert "earlier result" not in failed.stdout
    assert results(out / "b") == earlier == listed(out / "b") and not pruned(out / "b")
    assert len(pd.read_csv(out / "b" / "failures.csv")) == 2
