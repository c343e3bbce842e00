"""`prune` and the CSVs rebuilt from the records when a source's content changes, a caption file is shared by a
result that stays, a run holds a folder it has not recorded anything in yet, and what prune prints."""

from __future__ import annotations

import os
import shutil

import pandas as pd
from filelock import FileLock

from batch_edit.outputs import JobOutput

from .conftest import PHOTOS, batch_edit


def _manifest(extra: str = "", name: str = "job", source: str = "a.jpg") -> str:
    return f"""
  - name: {name}
    sources: {source}
    prompts: 'a tiger, photo'
    width: 64
    height: 64
    num_inference_steps: 2
    strength: 0.5
    seed: 1
{extra}"""


def _command(tmp_path, tiny_config, *args: str, jobs: str | None = None):
    (tmp_path / "m.yaml").write_text("jobs:" + (jobs or _manifest()))
    return batch_edit(*args, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)


def _source(tmp_path, photo: str) -> None:
    shutil.copyfile(PHOTOS / photo, tmp_path / "a.jpg")  # same path, new bytes: a new item


def _listed(tmp_path) -> list[str]:
    return pd.read_csv(tmp_path / "out" / "job" / "metadata.csv")["item_id"].tolist()


def _ran(result) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def _item_ids(tmp_path) -> list[str]:
    """Item ids in the order their first records were written."""
    return list(JobOutput(tmp_path / "out", "job").read_records())


def _run_then_change_the_source(tmp_path, config) -> list[str]:
    """Run with one content of the source, then with another: the two items' ids, oldest first."""
    for photo in ("cat.jpg", "rocket.jpg"):
        _source(tmp_path, photo)
        _ran(_command(tmp_path, config, "run"))
    return _item_ids(tmp_path)


def test_pruning_the_result_of_a_sources_old_content_keeps_the_current_row(tmp_path, tiny_config):
    _, current = _run_then_change_the_source(tmp_path, tiny_config)
    assert _listed(tmp_path) == [current]
    result = _command(tmp_path, tiny_config, "prune")
    _ran(result)
    assert "moved 1, rejected 0, kept 1" in result.stdout
    # the old item's "pruned" record is the latest line of the key, but a pruned result is out of the folder
    assert _listed(tmp_path) == [current]
    assert (tmp_path / "out" / "job" / "contact-sheet-a.png").is_file()
    again = _command(tmp_path, tiny_config, "run")
    assert "nothing to do" in again.stdout and _listed(tmp_path) == [current]


def test_a_source_back_to_earlier_content_lists_the_planned_items_row(tmp_path, tiny_config):
    first, _ = _run_then_change_the_source(tmp_path, tiny_config)
    _source(tmp_path, "cat.jpg")  # the first content again: its item is done, its image intact
    again = _command(tmp_path, tiny_config, "run")
    assert "nothing to do" in again.stdout
    assert _listed(tmp_path) == [first]  # the planned item's row, although the other one was recorded later
    _ran(_command(tmp_path, tiny_config, "prune"))
    assert _listed(tmp_path) == [first]
    JobOutput(tmp_path / "out", "job").rebuild_csvs()  # no plan: the later item is pruned, so never listed
    assert _listed(tmp_path) == [first]


def test_a_run_with_nothing_to_do_rewrites_no_csv_or_sheet_that_has_not_changed(tmp_path, tiny_config):
    _source(tmp_path, "cat.jpg")
    _ran(_command(tmp_path, tiny_config, "run"))
    folder = tmp_path / "out" / "job"
    files = [folder / "metadata.csv", folder / "failures.csv", folder / "contact-sheet-a.png"]
    before = [path.stat().st_mtime_ns for path in files]
    assert "nothing to do" in _command(tmp_path, tiny_config, "run").stdout
    assert [path.stat().st_mtime_ns for path in files] == before


def test_without_a_plan_the_latest_record_of_a_key_is_listed(tmp_path, tiny_config):
    _source(tmp_path, "cat.jpg")
    _ran(_command(tmp_path, tiny_config, "run"))
    _source(tmp_path, "rocket.jpg")
    _ran(_command(tmp_path, tiny_config, "run"))
    _, second = _item_ids(tmp_path)
    JobOutput(tmp_path / "out", "job").rebuild_csvs()
    assert _listed(tmp_path) == [second]


def test_a_caption_shared_with_a_result_that_stays_is_not_moved(tmp_path, tiny_config):
    _source(tmp_path, "cat.jpg")
    _ran(_command(tmp_path, tiny_config, "run"))  # PNG without captions
    jpeg = _manifest("    format: jpeg\n    captions: true\n")
    _ran(_command(tmp_path, tiny_config, "run", jobs=jpeg))  # the same item as JPEG, with its caption
    folder = tmp_path / "out" / "job"
    (png,) = folder.glob("a-*.png")
    caption = png.with_suffix(".txt")
    assert caption.is_file() and png.with_suffix(".jpg").is_file()
    dry = _command(tmp_path, tiny_config, "prune", "--dry-run", jobs=jpeg)
    assert f"  would move {png.name} (an older result of an item that has a newer one)\n" in dry.stdout
    assert ".txt" not in dry.stdout
    result = _command(tmp_path, tiny_config, "prune", jobs=jpeg)
    assert "moved 1," in result.stdout
    assert not png.exists() and caption.read_text() == "a tiger, photo"
    assert sorted(p.name for p in (folder / ".batch-edit/pruned").iterdir()) == [png.name]


def test_a_moved_results_own_caption_is_listed_by_a_dry_run_and_moved(tmp_path, tiny_config):
    _source(tmp_path, "cat.jpg")
    captions = _manifest("    captions: true\n")
    _ran(_command(tmp_path, tiny_config, "run", jobs=captions))
    (png,) = (tmp_path / "out" / "job").glob("a-*.png")
    _source(tmp_path, "rocket.jpg")  # the old item leaves the plan; the new one is not made yet
    dry = _command(tmp_path, tiny_config, "prune", "--dry-run", jobs=captions)
    assert f"  would move {png.name} and its caption {png.stem}.txt (not in the plan)\n" in dry.stdout
    _ran(_command(tmp_path, tiny_config, "prune", jobs=captions))
    pruned = tmp_path / "out" / "job" / ".batch-edit/pruned"
    assert sorted(p.name for p in pruned.iterdir()) == sorted([png.name, f"{png.stem}.txt"])


def test_a_dry_run_counts_no_move_of_a_result_already_gone(tmp_path, tiny_config):
    _source(tmp_path, "cat.jpg")
    _ran(_command(tmp_path, tiny_config, "run"))
    (png,) = (tmp_path / "out" / "job").glob("a-*.png")
    png.unlink()
    _source(tmp_path, "rocket.jpg")  # the deleted result's item leaves the plan
    dry = _command(tmp_path, tiny_config, "prune", "--dry-run")
    assert "would move 0," in dry.stdout and png.name not in dry.stdout
    assert "moved 0," in _command(tmp_path, tiny_config, "prune").stdout


def test_prune_is_refused_while_a_run_holds_a_folder_it_has_recorded_nothing_in(tmp_path, tiny_config):
    state = tmp_path / "out" / "job" / ".batch-edit"
    state.mkdir(parents=True)  # what a run makes before it loads the model
    (state / "owner").write_text(str(os.getpid()))
    with FileLock(state / "lock").acquire(timeout=0):
        for flags in ((), ("--dry-run",)):
            result = _command(tmp_path, tiny_config, "prune", *flags)
            assert result.returncode == 2 and f"pid {os.getpid()}" in result.stderr, result.stdout
            assert "then prune again" in result.stderr and "--output-root" not in result.stderr
    assert sorted(p.name for p in state.iterdir()) == ["lock", "owner"]
    assert _command(tmp_path, tiny_config, "prune").returncode == 0  # the run is gone: nothing to prune


def test_prune_prints_each_jobs_line_before_its_file_lines(tmp_path, tiny_config):
    cat, rocket = PHOTOS / "cat.jpg", PHOTOS / "rocket.jpg"
    both = _manifest(name="first", source=str(cat)) + _manifest(name="second", source=str(rocket))
    _ran(_command(tmp_path, tiny_config, "run", jobs=both))
    seeds = "    seed: 2\n"
    changed = _manifest(seeds, name="first", source=str(cat)) + _manifest(seeds, name="second", source=str(rocket))
    changed = changed.replace("    seed: 1\n", "")
    lines = _command(tmp_path, tiny_config, "prune", "--dry-run", jobs=changed).stdout.splitlines()
    assert [line.split()[0] + " " + line.split()[1] for line in lines] == [
        "job first:", "would move", "job second:", "would move"
    ]  # fmt: skip


def test_prune_takes_no_limit(tmp_path, tiny_config):
    result = _command(tmp_path, tiny_config, "prune", "--limit", "1")
    assert result.returncode == 2 and "unrecognized arguments: --limit" in result.stderr
