"""The end of a run: final writes the disk refuses, failures.csv against the plan, a stop by signal (no contact
sheets, what is left), hand-edited metadata.csv."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from batch_edit import job_files, recording

from .conftest import PHOTOS, batch_edit


def _two_jobs(tmp_path: Path, tiny_config: Path) -> list[str]:
    (tmp_path / "m.yaml").write_text(
        "defaults: {num_inference_steps: 2, strength: 0.5, width: 32, height: 32, seed: 1}\n"
        f"jobs:\n  - {{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}\n"
        f"  - {{name: b, sources: {PHOTOS / 'coffee.jpg'}, prompts: x}}\n"
    )
    return ["run", str(tmp_path / "m.yaml"), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]


def _disk_full_for(monkeypatch, name_part: str) -> None:
    """Every new file whose name holds `name_part` is refused as a full disk would refuse it."""
    real = job_files.open_new

    def open_new(path: Path, text: bool = False):
        if name_part in Path(path).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(job_files, "open_new", open_new)


def test_a_contact_sheet_the_disk_refuses_at_the_end_stops_with_exit_3(tmp_path, tiny_config, monkeypatch):
    command = _two_jobs(tmp_path, tiny_config)
    _disk_full_for(monkeypatch, "contact-sheet-cat")
    result = batch_edit(*command)
    assert result.returncode == 3, result.stdout + result.stderr
    sheet = tmp_path / "out" / "a" / "contact-sheet-cat.png"
    assert f"error: cannot write {sheet}: No space left on device" in result.stderr
    assert "re-run the same command" in result.stderr
    # the summary still comes, and the other job's final writes were made
    assert "job a: 1 written" in result.stdout and "job b: 1 written" in result.stdout
    assert (tmp_path / "out" / "b" / "contact-sheet-coffee.png").is_file()
    assert len(list(csv.DictReader((tmp_path / "out" / "a" / "metadata.csv").open()))) == 1
    monkeypatch.undo()
    again = batch_edit(*command)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and sheet.is_file()


def test_a_metadata_csv_the_disk_refuses_at_the_end_stops_with_exit_3(tmp_path, tiny_config, monkeypatch):
    command = _two_jobs(tmp_path, tiny_config)
    _disk_full_for(monkeypatch, "metadata.csv")
    result = batch_edit(*command)
    assert result.returncode == 3, result.stdout + result.stderr
    for job in ("a", "b"):  # every job's final write was tried
        assert f"error: cannot write {tmp_path / 'out' / job / 'metadata.csv'}: No space left" in result.stderr
    # the same on a run with nothing to do but the CSVs
    assert batch_edit(*command).returncode == 3
    monkeypatch.undo()
    again = batch_edit(*command)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (tmp_path / "out" / "a" / "metadata.csv").is_file()


def _folder_job(tmp_path: Path, tiny_config: Path) -> list[str]:
    images = tmp_path / "img"
    images.mkdir()
    for number in range(2):
        Image.new("RGB", (24, 24), (number * 80, 0, 0)).save(images / f"p{number}.png")
    (images / "bad.png").write_bytes(b"garbage")
    (tmp_path / "j.yaml").write_text(
        f"jobs: [{{name: f, sources: {images}/, prompts: x, width: 16, height: 16, num_inference_steps: 2, "
        "strength: 0.5, seed: 1}]\n"
    )
    return ["run", str(tmp_path / "j.yaml"), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_failures_csv_lists_only_failures_of_planned_items(tmp_path, tiny_config):
    command = _folder_job(tmp_path, tiny_config)
    first = batch_edit(*command)
    assert first.returncode == 1 and "2 written, 0 already done, 1 failed" in first.stdout
    folder = tmp_path / "out" / "f"
    assert [Path(row["source"]).name for row in _rows(folder / "failures.csv")] == ["bad.png"]
    (tmp_path / "img" / "bad.png").unlink()
    again = batch_edit(*command)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert _rows(folder / "failures.csv") == []  # as the summary and the exit status say
    records = [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records].count("failed") == 1  # the record stays


def test_a_job_whose_retried_items_fail_again_draws_no_contact_sheet(tmp_path, tiny_config):
    command = _folder_job(tmp_path, tiny_config)
    assert batch_edit(*command).returncode == 1
    sheets = sorted((tmp_path / "out" / "f").glob("contact-sheet-*.png"))
    assert len(sheets) == 2
    before = [sheet.stat().st_mtime_ns for sheet in sheets]
    again = batch_edit(*command)  # bad.png runs again and fails again: metadata.csv does not change
    assert again.returncode == 1 and "0 written, 2 already done, 1 failed" in again.stdout
    assert [sheet.stat().st_mtime_ns for sheet in sheets] == before


def test_a_contact_sheet_deleted_by_hand_comes_back_at_the_next_run(tmp_path, tiny_config):
    command = _folder_job(tmp_path, tiny_config)
    assert batch_edit(*command).returncode == 1
    kept, deleted = sorted((tmp_path / "out" / "f").glob("contact-sheet-*.png"))
    before = kept.stat().st_mtime_ns
    deleted.unlink()
    assert batch_edit(*command).returncode == 1  # nothing new: metadata.csv is as the sheets were drawn from
    assert deleted.is_file() and kept.stat().st_mtime_ns != before


def test_the_summary_says_how_many_items_limit_left(tmp_path, tiny_config):
    result = batch_edit(*_two_jobs(tmp_path, tiny_config), "--limit", "1")
    assert result.returncode == 0, result.stderr
    assert "job b: 0 written, 0 already done, 0 failed, 1 left for later (--limit)" in result.stdout
    assert "total: 1 written, 0 failed, 1 left for later, elapsed" in result.stdout


def terminated_after(count: int, record):
    """Recorder.record, sending this process SIGTERM once `count` results are recorded (as `kill` would)."""

    def recording_then_stopping(self, result):
        record(self, result)
        if len(self.recorded) == count:
            os.kill(os.getpid(), signal.SIGTERM)

    return recording_then_stopping


@contextlib.contextmanager
def sigterm_raises():
    """While the run's own handler is not there, SIGTERM fails the test instead of ending pytest."""

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached no handler of the run")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_by_signal_draws_no_contact_sheet_and_says_what_is_left(tmp_path, tiny_config, monkeypatch):
    """The run stops itself with SIGTERM once 3 results are recorded: the run's handler takes it as a `kill`
    from outside would reach it (test_resilience sends real signals to a run in its own process)."""
    manifest = tmp_path / "big.yaml"
    manifest.write_text(
        f"jobs: [{{name: big, sources: [{PHOTOS / 'cat.jpg'}, {PHOTOS / 'coffee.jpg'}], prompts: [a, b], "
        "seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], num_inference_steps: 4, strength: 0.5, width: 64, height: 64}]\n"
    )
    command = ["run", str(manifest), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    folder = tmp_path / "out" / "big"
    with monkeypatch.context() as patched, sigterm_raises():
        patched.setattr(recording.Recorder, "record", terminated_after(3, recording.Recorder.record))
        stopped = batch_edit(*command)
    stdout, stderr = stopped.stdout, stopped.stderr
    assert stopped.returncode == 143, stderr
    written = len(_rows(folder / "metadata.csv"))
    assert 3 <= written < 48
    assert "contact sheets of 1 job(s) not drawn, to stop sooner: the next run draws them" in stderr
    assert not list(folder.glob("contact-sheet-*.png"))
    left = 48 - written
    assert f"job big: {written} written, 0 already done, 0 failed, {left} left for later (stopped by SIGTERM)" in stdout
    assert f"total: {written} written, 0 failed, {left} left for later, elapsed" in stdout
    again = batch_edit(*command, "--limit", "1")
    assert again.returncode == 0, again.stderr
    assert f"1 written, {written} already done, 0 failed, {left - 1} left for later (--limit)" in again.stdout
    sources = {Path(row["source"]).stem for row in _rows(folder / "metadata.csv")}
    assert {sheet.stem for sheet in folder.glob("contact-sheet-*.png")} == {f"contact-sheet-{s}" for s in sources}


def _add_rating(metadata: Path) -> None:
    rows = list(csv.reader(metadata.open(encoding="utf-8", newline="")))
    rows[0].append("rating")
    for row in rows[1:]:
        row.append("5")
    with metadata.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_a_column_added_to_metadata_csv_is_kept_in_a_copy_with_a_warning(tmp_path, tiny_config):
    command = _two_jobs(tmp_path, tiny_config)
    assert batch_edit(*command).returncode == 0
    folder = tmp_path / "out" / "a"
    _add_rating(folder / "metadata.csv")
    edited = (folder / "metadata.csv").read_bytes()
    again = batch_edit(*command)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert again.stderr.count("WARNING") == 1, again.stderr
    assert "has columns batch-edit does not write (rating): kept as metadata-edited.csv" in again.stderr
    assert (folder / "metadata-edited.csv").read_bytes() == edited
    assert "rating" not in _rows(folder / "metadata.csv")[0]
    third = batch_edit(*command)  # warned once: the rebuilt file has only its own columns
    assert "WARNING" not in third.stderr and not list(folder.glob("metadata-edited~*"))
    _add_rating(folder / "metadata.csv")
    batch_edit(*command)  # a second edit never replaces the first copy
    assert (folder / "metadata-edited.csv").read_bytes() == edited and (folder / "metadata-edited~2.csv").is_file()


def test_a_kept_metadata_copy_is_not_read_by_the_imagefolder_loader(tmp_path, tiny_config):
    datasets = pytest.importorskip("datasets")
    command = _two_jobs(tmp_path, tiny_config)
    assert batch_edit(*command).returncode == 0
    folder = tmp_path / "out" / "a"
    _add_rating(folder / "metadata.csv")
    assert batch_edit(*command).returncode == 0 and (folder / "metadata-edited.csv").is_file()
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert loaded.num_rows == 1 and "item_id" in loaded.features and "rating" not in loaded.features


def test_a_job_with_nothing_to_run_gets_its_missing_sheets_while_another_job_runs(tmp_path, tiny_config):
    command = _two_jobs(tmp_path, tiny_config)
    assert batch_edit(*command).returncode == 0
    (sheet,) = (tmp_path / "out" / "a").glob("contact-sheet-*.png")
    sheet.unlink()  # as a stop before drawing leaves it: the next run draws it
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        manifest.read_text()
        .replace("prompts: x}}\n", "prompts: [x, y]}}\n")
        .replace("coffee.jpg, prompts: x}", "coffee.jpg, prompts: [x, y]}")
    )
    result = batch_edit(*command)
    assert "job a: 0 written, 1 already done" in result.stdout and "job b: 1 written" in result.stdout, result.stdout
    assert sheet.is_file()
