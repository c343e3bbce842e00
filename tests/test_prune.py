"""`batch-edit prune`: job folders that match the manifests' current plan, without deleting anything."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock

from batch_edit.outputs import JobOutput

from .conftest import batch_edit, sweep_manifest, write_pipeline_config


FOUR = "[0.5, 0.6, 0.7, 0.8]"


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model) -> Path:
    """The output root of the four-strength sweep, run once for the tests below: each edits its own copy."""
    folder = tmp_path_factory.mktemp("swept")
    config = write_pipeline_config(folder / "tiny.yaml", tiny_model)
    (folder / "m.yaml").write_text(sweep_manifest(strengths=FOUR))
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "out"


@pytest.fixture
def job(tmp_path, tiny_config, swept):
    """A job of four strengths, run (a copy of `swept`, its files' times kept as the run left them);
    `job(command, strengths, format)` rewrites the manifest and runs a command."""

    def command(name: str, strengths: str = FOUR, format: str = "png", *flags: str):
        (tmp_path / "m.yaml").write_text(sweep_manifest(strengths=strengths, format=format))
        return batch_edit(name, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", *flags, cwd=tmp_path)

    shutil.copytree(swept, tmp_path / "out")  # copy2: contents and modification times
    assert "job sweep: 4 item(s), 4 already done" in command("plan").stdout  # the copy is as the run left it
    return command


def folder_of(tmp_path):
    return tmp_path / "out" / "sweep"


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def metadata(folder) -> pd.DataFrame:
    return pd.read_csv(folder / "metadata.csv")


def test_shrunk_sweep_moves_dropped_results_and_captions_and_rebuilds_metadata(tmp_path, job):
    folder = folder_of(tmp_path)
    before = metadata(folder)
    dropped = before[before["strength"] > 0.6]["file_name"].tolist()
    result = job("prune", "[0.5, 0.6]")
    assert result.returncode == 0, result.stderr
    assert f"job sweep: moved 2, rejected 0, kept 2 -> {folder}" in result.stdout
    after = metadata(folder)
    assert sorted(after["strength"]) == [0.5, 0.6]
    for name in dropped:  # moved, not deleted: the image and its caption file
        assert not (folder / name).exists() and not (folder / name).with_suffix(".txt").exists()
        assert (folder / ".batch-edit/pruned" / name).is_file()
        assert (folder / ".batch-edit/pruned" / name).with_suffix(".txt").is_file()
    records = JobOutput(tmp_path / "out", "sweep").read_records()
    pruned = [r for r in records.values() if r["status"] == "pruned"]
    assert sorted(r["file_name"] for r in pruned) == sorted(dropped)
    assert job("plan", "[0.5, 0.6]").stdout.count("2 already done") == 1


def test_dry_run_lists_what_would_move_and_changes_nothing(tmp_path, job):
    folder = folder_of(tmp_path)
    before = snapshot(folder)
    result = job("prune", "[0.5]", "png", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.count("  would move cat-") == 3
        and "job sweep: would move 3, would reject 0, kept 1" in result.stdout
    )
    assert snapshot(folder) == before


def test_rejected_images_are_not_made_again_unless_overwriting(tmp_path, job):
    folder = folder_of(tmp_path)
    unwanted = metadata(folder)["file_name"][0]
    (folder / unwanted).unlink()  # deleted on purpose while curating
    result = job("prune", "[0.5, 0.6, 0.7, 0.8]", "png", "--rejected")
    assert "moved 0, rejected 1, kept 3" in result.stdout
    assert len(metadata(folder)) == 3
    assert "3 already done, 1 rejected" in job("plan").stdout
    again = job("run")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert not (folder / unwanted).exists()
    assert "4 written" in job("run", "[0.5, 0.6, 0.7, 0.8]", "png", "--overwrite").stdout
    assert (folder / unwanted).is_file()


def test_an_item_back_in_the_plan_after_pruning_is_made_again(tmp_path, job):
    folder = folder_of(tmp_path)
    job("prune", "[0.5]")
    back = job("run", "[0.5, 0.6]")
    assert back.returncode == 0 and "1 written, 1 already done" in back.stdout
    assert sorted(metadata(folder)["strength"]) == [0.5, 0.6]
    # pruned again later: the earlier copy is kept beside the new one
    assert "moved 1" in job("prune", "[0.5]").stdout
    assert len(list((folder / ".batch-edit/pruned").glob("*.png"))) == 4
    assert len(list((folder / ".batch-edit/pruned").glob("*~2.png"))) == 1


def test_results_of_an_earlier_format_move_out(tmp_path, job):
    folder = folder_of(tmp_path)
    assert job("run", "[0.5, 0.6, 0.7, 0.8]", "webp").returncode == 0
    result = job("prune", "[0.5, 0.6, 0.7, 0.8]", "webp")
    assert "moved 4, rejected 0, kept 4" in result.stdout
    assert not list(folder.glob("cat-*.png")) and len(list(folder.glob("cat-*.webp"))) == 4
    assert len(list((folder / ".batch-edit/pruned").glob("*.png"))) == 4


def test_failures_of_dropped_items_leave_failures_csv(tmp_path, job):
    output = JobOutput(tmp_path / "out", "sweep")
    line = {"status": "failed", "item_id": "0123456789abcdef", "job": "sweep", "source": "gone.jpg", "prompt": "x"}
    with output.records_path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    output.rebuild_csvs()
    assert len(pd.read_csv(output.folder / "failures.csv")) == 1
    assert job("prune").returncode == 0
    assert len(pd.read_csv(output.folder / "failures.csv")) == 0


def test_prune_refuses_while_a_run_holds_the_folder(tmp_path, job):
    folder = folder_of(tmp_path)
    lock = FileLock(folder / ".batch-edit" / "lock")
    (folder / ".batch-edit" / "owner").write_text(str(os.getpid()))
    with lock.acquire(timeout=0):
        before = snapshot(folder)
        result = job("prune", "[0.5]")
    assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr
    assert snapshot(folder) == before


def test_a_job_never_run_has_nothing_to_prune(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(sweep_manifest(strengths=0.5, format="png"))
    result = batch_edit("prune", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0 and "moved 0, rejected 0, kept 0" in result.stdout
    assert not (tmp_path / "out").exists()
