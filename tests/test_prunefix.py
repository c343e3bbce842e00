"""An item whose format changed back keeps its result through `prune` (the other format's file moved out is not
the item pruned); metadata.csv's digests compared by raw bytes first; one synced write of a new file."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pytest

from batch_edit import job_files, metadata_edits
from batch_edit.errors import UnsafeOutputError
from batch_edit.metadata_edits import WRITTEN_DIGESTS, WrittenMetadata, content_digest

from .conftest import batch_edit, sweep_manifest


@pytest.fixture
def sweep(tmp_path, tiny_config):
    """`sweep(command, format, strengths, *flags)`: the sweep manifest written, then the command run on it."""

    def command(name: str, format: str = "png", strengths: str = "[0.5, 0.6, 0.7]", *flags: str):
        (tmp_path / "m.yaml").write_text(sweep_manifest(strengths=strengths, format=format))
        return batch_edit(name, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", *flags, cwd=tmp_path)

    return command


def changed_back_and_pruned(sweep, folder) -> list[str]:
    """png, then jpeg, then png again and a prune (which moves the .jpg files): the png results' names."""
    assert sweep("run").returncode == 0
    assert "3 written" in sweep("run", "jpeg").stdout
    assert "moved 3, rejected 0, kept 3" in sweep("prune").stdout
    return sorted(pd.read_csv(folder / "metadata.csv")["file_name"])


def test_a_result_deleted_after_its_format_changed_back_and_was_pruned_is_rejected(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    name = changed_back_and_pruned(sweep, folder)[0]
    (folder / name).unlink()
    pruned = sweep("prune", "png", "[0.5, 0.6, 0.7]", "--rejected")
    assert "rejected 1, kept 2" in pruned.stdout, pruned.stdout
    assert "1 rejected" in sweep("plan").stdout  # not made again by the next run
    again = sweep("run")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_an_item_dropped_after_its_format_changed_back_and_was_pruned_stays_listed(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    names = changed_back_and_pruned(sweep, folder)
    assert sweep("run", "png", "[0.5, 0.6]").returncode == 0  # the 0.7 item is no longer planned
    metadata = pd.read_csv(folder / "metadata.csv")
    assert sorted(metadata["file_name"]) == names  # its png, still in the folder, still listed
    dropped = metadata["item_id"][2]  # items no longer planned are listed last
    same = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", dropped)
    assert same.returncode == 0 and same.stdout.startswith("identical"), same.stdout + same.stderr


def test_the_pruned_record_of_another_formats_file_names_the_result_kept(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    names = changed_back_and_pruned(sweep, folder)
    lines = (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()
    pruned = [json.loads(line) for line in lines if '"pruned"' in line]
    assert sorted(record["kept"] for record in pruned) == names
    assert all(record["file_name"].endswith(".jpg") and record["pruned_to"] for record in pruned)


# --- metadata.csv digests -----------------------------------------------------------------------------------

CSV = b'file_name,item_id,seed\r\na.png,abc,0\r\n\r\nb.png,"d,e",7\r\n'


def test_the_cells_digest_is_the_one_older_folders_recorded():
    rows = [["file_name", "item_id", "seed"], ["a.png", "abc", "0.0"], ["b.png", "d,e", "7.0"]]
    assert content_digest(CSV) == hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def test_written_metadata_records_the_raw_bytes_and_compares_them_without_parsing(tmp_path, monkeypatch):
    written = WrittenMetadata(tmp_path)
    written.record(CSV)
    assert (tmp_path / WRITTEN_DIGESTS).read_text() == f"{content_digest(CSV)} {hashlib.sha256(CSV).hexdigest()}\n"

    def parse(data):
        raise AssertionError("parsed the whole file")

    monkeypatch.setattr(metadata_edits, "content_digest", parse)
    reread = WrittenMetadata(tmp_path)
    assert not reread.edited(CSV)
    reread.record(CSV)  # the file a rebuild found unchanged: nothing parsed, nothing written
    monkeypatch.undo()
    assert not reread.edited(CSV.replace(b"\r\n", b"\n"))  # other bytes, the same cells: by the cells' digest
    assert reread.edited(CSV.replace(b"abc", b"abd"))


def test_a_rebuild_during_a_job_records_the_bytes_without_parsing_and_the_last_the_cells(tmp_path, monkeypatch):
    def parse(data):
        raise AssertionError("parsed the whole file")

    monkeypatch.setattr(metadata_edits, "content_digest", parse)
    written = WrittenMetadata(tmp_path)
    written.record(CSV, cells=False)  # every 30 s during a job: tens of megabytes not parsed
    assert not written.edited(CSV)
    monkeypatch.undo()
    assert written.edited(CSV.replace(b"\r\n", b"\n"))  # unparsed: any other bytes count (a copy kept)
    written.record(CSV)  # the job's last rebuild: the cells' digest too
    assert not WrittenMetadata(tmp_path).edited(CSV.replace(b"\r\n", b"\n"))


def test_an_older_folders_digests_of_cells_alone_are_still_read(tmp_path):
    (tmp_path / WRITTEN_DIGESTS).write_text(f"{content_digest(CSV)}\n{'0' * 64}\n")
    written = WrittenMetadata(tmp_path)
    assert not written.edited(CSV) and written.edited(CSV.replace(b"abc", b"abd"))
    written.record(CSV)  # the same cells: the newest entry gains its raw digest, the one before stays
    lines = (tmp_path / WRITTEN_DIGESTS).read_text().splitlines()
    assert lines == [f"{content_digest(CSV)} {hashlib.sha256(CSV).hexdigest()}", "0" * 64]


def test_write_new_refuses_a_file_or_link_already_there(tmp_path):
    job_files.write_new(tmp_path / "new", b"data", sync=True)
    assert (tmp_path / "new").read_bytes() == b"data"
    with pytest.raises(FileExistsError):
        job_files.write_new(tmp_path / "new", b"other")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises((FileExistsError, UnsafeOutputError)):
        job_files.write_new(tmp_path / "link", b"other")
    assert not (tmp_path / "elsewhere").exists()


def test_superseded_results_are_kept_one_per_file_name(tmp_path):
    from types import SimpleNamespace

    from batch_edit.records import JobRecords

    records = JobRecords(tmp_path, "j")
    records.state.mkdir(parents=True)
    ok = {"status": "ok", "item_id": "i1", "bytes": 3, "seconds": 0.5}
    lines = [{**ok, "file_name": "a.png", "seconds": n} for n in range(50)]  # fifty --overwrite reruns
    lines += [{**ok, "file_name": "a.jpg"}, {**ok, "file_name": "a.png", "seconds": 99}]
    records.records_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    latest = records.read_records()
    assert latest["i1"]["seconds"] == 99
    (tmp_path / "j" / "a.jpg").write_bytes(b"abc")
    # the format changed back to jpeg: the latest record naming a.jpg finishes the item; the earlier ones are
    # one per file name, not fifty
    found = records.finished_records([SimpleNamespace(item_id="i1", output_name="a.jpg")], latest)
    assert found["i1"]["file_name"] == "a.jpg"
    assert sum(len(named) for named in records._earlier.values()) == 2
