"""Whether a file at a result's name is still the result the job made: its size, then (records with the result's
sha256) its bytes, read only where its modification time is not the one recorded as it was written. A result edited
in place under the same size is moved aside before it is written again; an untouched one is never read by a rerun;
records of older versions keep the size rule. A caption is written only once its result is recorded, so a run
killed at any point leaves no caption that a later run takes for a hand edit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from batch_edit.formats import OutputOptions
from batch_edit.outputs import JobOutput
from batch_edit.records import JobRecords
from batch_edit.result_files import encode_result

from .conftest import batch_edit, image_file
from .test_outputs import EXTRA, JOB, PIPELINE_YAML, make, picture

RESULTS = ("photo1_edit.png", "photo2_edit.png")


def _manifest(tmp_path: Path, sources: str = "[photo1.png, photo2.png]") -> None:
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: ds, sources: {sources}, prompts: 'a fox', seed: 5, file_name: '{{stem}}_edit',\n"
        "     width: 64, height: 64, num_inference_steps: 2, strength: 0.5, captions: true}\n"
    )


def _run(tmp_path: Path, config, *args: str, code: int = 0) -> str:
    result = batch_edit(*args, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


def _first_run(tmp_path: Path, config) -> Path:
    for number in (1, 2):
        image_file(tmp_path / f"photo{number}.png", size=(64, 64), color=(90 * number, 90, 200))
    _manifest(tmp_path)
    _run(tmp_path, config, "run")
    return tmp_path / "out" / "ds"


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


def _opened(monkeypatch, folder: Path) -> Counter:
    """Names in `folder` -> how often os.open opens them from now on."""
    opened: Counter = Counter()
    real = os.open

    def spying(path, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == os.fspath(folder):
            opened[os.path.basename(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying)
    return opened


def _later_mtime(path: Path) -> None:
    """A modification time a second after the one `path` has: an edit's own time may fall in the clock tick
    of the write (a coarse file-system clock), and a copy may keep it."""
    found = os.stat(path)
    os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns + 1_000_000_000))


# ---------------------------------------------------------------- the result's sha256


def test_a_result_records_the_sha256_and_modification_time_of_its_file(tmp_path, tiny_config):
    folder = _first_run(tmp_path, tiny_config)
    for record in _records(folder):
        data = (folder / record["file_name"]).read_bytes()
        assert record["file_sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        assert record["file_mtime_ns"] == os.stat(folder / record["file_name"]).st_mtime_ns


@pytest.mark.parametrize("overwrite", [False, True], ids=["run", "overwrite"])
def test_a_result_edited_under_the_same_size_is_moved_aside_before_it_is_written_again(
    tmp_path, tiny_config, overwrite
):
    folder = _first_run(tmp_path, tiny_config)
    result = folder / "photo1_edit.png"
    edited = bytearray(result.read_bytes())
    edited[len(edited) // 2] ^= 0xFF  # retouched in place: not one byte more or less
    result.write_bytes(bytes(edited))
    _later_mtime(result)
    output = _run(tmp_path, tiny_config, "run", *["--overwrite"] * overwrite)
    assert f"job ds: {1 + overwrite} written" in output
    moved = "job ds: moved 1 file(s) it did not make (or changed since it made them) to .batch-edit/pruned/"
    assert moved in output and "photo1_edit.png" in output.split(moved)[1], output
    pruned = folder / ".batch-edit" / "pruned"
    assert (pruned / "photo1_edit.png").read_bytes() == bytes(edited)
    assert sorted(p.name for p in pruned.iterdir()) == ["photo1_edit.png"]  # the caption the job wrote stays
    latest = {record["file_name"]: record for record in _records(folder)}
    for name in RESULTS:  # what is there now is the recorded result, with its caption
        assert latest[name]["file_sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert (folder / name).with_suffix(".txt").read_text() == "a fox"
    assert "moved" not in _run(tmp_path, tiny_config, "run", "--overwrite")  # its own results: written over


def test_a_rerun_reads_no_untouched_result_and_a_touched_one_once(tmp_path, tiny_config, monkeypatch):
    folder = _first_run(tmp_path, tiny_config)
    opened = _opened(monkeypatch, folder)
    assert "2 already done" in _run(tmp_path, tiny_config, "run")
    assert not [name for name in opened if name in RESULTS], opened
    lines = len(_records(folder))

    _later_mtime(folder / "photo1_edit.png")  # touched (or copied without its times): the same bytes
    output = _run(tmp_path, tiny_config, "run")
    assert "2 already done" in output and "moved" not in output, output
    assert opened["photo1_edit.png"] == 1 and opened["photo2_edit.png"] == 0, opened  # read once per run at most
    again = _records(folder)[lines:]  # recorded again with the time it has now
    assert [(r["file_name"], r["file_mtime_ns"]) for r in again] == [
        ("photo1_edit.png", os.stat(folder / "photo1_edit.png").st_mtime_ns)
    ]
    assert "verified_at" in again[0]

    opened.clear()
    assert "2 already done" in _run(tmp_path, tiny_config, "run")
    assert not [name for name in opened if name in RESULTS] and len(_records(folder)) == lines + 1, opened


def test_an_image_copied_back_from_pruned_is_done_and_recorded_with_its_new_time(tmp_path, tiny_config, monkeypatch):
    folder = _first_run(tmp_path, tiny_config)
    _manifest(tmp_path, "photo1.png")
    assert "moved 1," in _run(tmp_path, tiny_config, "prune")
    _manifest(tmp_path)
    pruned = folder / ".batch-edit" / "pruned" / "photo2_edit.png"
    shutil.copy(pruned, folder / "photo2_edit.png")  # a new modification time: read once, to be sure
    _later_mtime(folder / "photo2_edit.png")
    assert "2 already done" in _run(tmp_path, tiny_config, "run")
    latest = _records(folder)[-1]
    assert latest["status"] == "ok" and "restored_at" in latest
    assert latest["file_mtime_ns"] == os.stat(folder / "photo2_edit.png").st_mtime_ns
    opened = _opened(monkeypatch, folder)
    assert "2 already done" in _run(tmp_path, tiny_config, "run")
    assert not [name for name in opened if name in RESULTS], opened

    pruned.write_bytes(b"x" * len(pruned.read_bytes()))  # another file of the same size put back: not the result
    os.replace(pruned, folder / "photo2_edit.png")
    output = _run(tmp_path, tiny_config, "run")
    assert "1 written" in output and "photo2_edit.png" in output.split("moved 1 file(s)")[1], output


def test_records_of_older_versions_keep_the_size_rule_and_read_no_result(tmp_path, tiny_config, monkeypatch):
    folder = _first_run(tmp_path, tiny_config)
    older = [{k: v for k, v in r.items() if k not in ("file_sha256", "file_mtime_ns")} for r in _records(folder)]
    (folder / ".batch-edit" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older))
    for name in RESULTS:
        _later_mtime(folder / name)  # a stamp that differs from none recorded: nothing to compare it with
    opened = _opened(monkeypatch, folder)
    output = _run(tmp_path, tiny_config, "run")
    assert "2 already done" in output and "moved" not in output, output
    assert not [name for name in opened if name in RESULTS], opened
    assert len(_records(folder)) == len(older)  # nothing recorded again
    output = _run(tmp_path, tiny_config, "run", "--overwrite")
    assert "2 written" in output and "moved" not in output, output  # the size recorded: the job's own results


def test_a_record_with_a_result_digest_or_stamp_of_the_wrong_shape_is_ignored(tmp_path):
    output = JobOutput(tmp_path / "out", JOB)
    output.open(PIPELINE_YAML)
    output.close()
    (output.folder / "ok.png").write_bytes(b"x" * 10)
    good = {"item_id": "good", "status": "ok", "file_name": "ok.png", "bytes": 10, "seconds": 1.0}
    good.update(file_sha256=hashlib.sha256(b"x" * 10).hexdigest(), file_mtime_ns=1)
    bad = [
        {**good, "item_id": "a", "file_sha256": "ABC"},
        {**good, "item_id": "b", "file_sha256": 5},
        {**good, "item_id": "c", "file_sha256": good["file_sha256"].upper()},
        {**good, "item_id": "d", "file_mtime_ns": "1"},
        {**good, "item_id": "e", "file_mtime_ns": 1.5},
        {**good, "item_id": "f", "file_mtime_ns": None},
    ]
    output.records_path.write_text("".join(json.dumps(record) + "\n" for record in [*bad, good]))
    reader = JobOutput(tmp_path / "out", JOB)
    assert list(reader.read_records()) == ["good"] and reader.invalid_lines == len(bad)
    assert reader.done_ids() == {"good"}  # another mtime than recorded: read, and found to be the result
    (output.folder / "ok.png").write_bytes(b"y" * 10)
    assert JobOutput(tmp_path / "out", JOB).done_ids() == set()


# ---------------------------------------------------------------- a caption and a run killed while writing


class Killed(BaseException):
    """The process dies here: nothing after this point runs."""


def _captioned(prompt: str):
    return replace(make(prompt=prompt), name="photo_edit", output=OutputOptions(captions=True))


def _killed_after(monkeypatch, steps: int) -> None:
    """The run dies once `steps` writes (a file renamed into place, a record appended) are done."""
    done = []
    for method in ("_write_file", "_append"):
        real = getattr(JobOutput, method)

        def dying(self, *args, real=real):
            value = real(self, *args)
            done.append(args[0])
            if len(done) == steps:
                raise Killed
            return value

        monkeypatch.setattr(JobOutput, method, dying)


@pytest.mark.parametrize("prompt", ["a dog", "a cat"], ids=["prompt-changed", "same-prompt"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_a_caption_of_a_run_killed_while_writing_is_never_taken_for_a_hand_edit(tmp_path, monkeypatch, steps, prompt):
    first = _captioned("a cat")
    killed = JobOutput(tmp_path / "out", JOB)
    killed.open(PIPELINE_YAML)
    with monkeypatch.context() as patched:
        _killed_after(patched, steps)
        with pytest.raises(Killed):
            killed.write_image(first, picture(), EXTRA)
    killed.close()  # its descriptors and lock go with the process

    # the next run: the same item, or (the prompt changed) another one under the same name
    item = _captioned(prompt)
    output = JobOutput(tmp_path / "out", JOB)
    output.open(PIPELINE_YAML)
    output.follow_plan((item,))
    if item.item_id not in output.finished_ids([item]):
        output.write_image(item, picture(offset=1), EXTRA)
    output.finish_files()
    output.close()
    caption = output.folder / "photo_edit.txt"
    assert caption.read_text() == prompt  # the prompt of the result beside it, whatever the kill left
    assert "photo_edit.txt" not in [name for name, _ in output.moved_aside]  # never taken for the user's
    assert output.finished_ids([item]) == {item.item_id}


# ---------------------------------------------------------------- results found unchanged, recorded again once


def _hashed(monkeypatch) -> Counter:
    """File names -> how often their result is hashed (a file's state read once per process is counted once)."""
    hashed: Counter = Counter()
    real = JobRecords._sha256

    def counting(self, name, found):
        key = (name, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
        hashed[name] += key not in self._hashed
        return real(self, name, found)

    monkeypatch.setattr(JobRecords, "_sha256", counting)
    return hashed


def _three_ways(tmp_path: Path, config) -> Path:
    """photo1's result planned and finished, photo2's no longer planned, photo3's behind a failure (its source
    replaced by no image, then an --overwrite that fails; a source deleted would leave the item archived, done by
    its result): each touched since."""
    for number in (1, 2, 3):
        image_file(tmp_path / f"photo{number}.png", size=(64, 64), color=(70 * number, 90, 200))
    _manifest(tmp_path, "[photo1.png, photo2.png, photo3.png]")
    _run(tmp_path, config, "run")
    _manifest(tmp_path, "[photo1.png, photo3.png]")
    (tmp_path / "photo3.png").unlink()
    os.mkfifo(tmp_path / "photo3.png")  # there, but no image: its item fails, its result stays behind the failure
    _run(tmp_path, config, "run", "--overwrite", code=1)
    folder = tmp_path / "out" / "ds"
    assert [Path(r["source"]).name for r in _records(folder) if r["status"] == "failed"] == ["photo3.png"]
    for number in (1, 2, 3):
        _later_mtime(folder / f"photo{number}_edit.png")
    return folder


def _listed(folder: Path, name: str) -> list[str]:
    return [line.split(",")[0] for line in (folder / name).read_text().splitlines()[1:]]


def test_results_unplanned_or_behind_a_failure_are_recorded_again_once_and_never_read_again(
    tmp_path, tiny_config, monkeypatch
):
    folder = _three_ways(tmp_path, tiny_config)
    results = [f"photo{number}_edit.png" for number in (1, 2, 3)]
    metadata, failures = _listed(folder, "metadata.csv"), _listed(folder, "failures.csv")
    lines = len(_records(folder))
    hashed = _hashed(monkeypatch)
    writes = []  # the records of each append: each its own fsync
    real = JobOutput._write_line
    monkeypatch.setattr(JobOutput, "_write_line", lambda self, line: writes.append(bytes(line)) or real(self, line))
    output = _run(tmp_path, tiny_config, "run", code=1)
    assert "1 already done" in output and "1 failed" in output and "moved" not in output, output
    assert all(hashed[name] == 1 for name in results), hashed
    assert [write.count(b"verified_at") for write in writes if b"verified_at" in write] == [3]  # one append
    again = _records(folder)[lines:]  # photo3's item failed again (its source is gone): one failure more
    retried = [r for r in again if r["status"] == "failed" and "verified_at" not in r]
    verified = [r for r in again if "verified_at" in r]
    assert len(retried) == 1 and len(again) == 1 + len(results), again
    stamps = {r.get("file_name") or r["verified_result"]["file_name"]: r for r in verified}
    assert sorted(stamps) == results
    for name, record in stamps.items():
        stamp = record.get("verified_result", record)
        assert stamp["file_mtime_ns"] == os.stat(folder / name).st_mtime_ns
    assert stamps["photo3_edit.png"]["status"] == "failed"  # the failure stays the item's outcome

    hashed.clear()
    lines = len(_records(folder))
    for _ in range(2):
        output = _run(tmp_path, tiny_config, "run", code=1)
        assert "1 already done" in output and "1 failed" in output, output
        assert not hashed, hashed
    assert len(_records(folder)) == lines + 2  # the two retries' failures only
    assert not [r for r in _records(folder)[lines:] if "verified_at" in r]
    # listed as before: the unplanned result last, the failure with the result it came after
    assert _listed(folder, "metadata.csv") == metadata and _listed(folder, "failures.csv") == failures
    assert metadata == ["photo1_edit.png", "photo3_edit.png", "photo2_edit.png"] and len(failures) == 1


def test_plan_reads_only_the_planned_results_it_counts_and_prune_records_what_it_read(
    tmp_path, tiny_config, monkeypatch
):
    folder = _three_ways(tmp_path, tiny_config)
    lines = len(_records(folder))
    hashed = _hashed(monkeypatch)
    assert "1 already done" in _run(tmp_path, tiny_config, "plan")  # photo3.png is no image: it runs again
    assert dict(hashed) == {"photo1_edit.png": 1} and len(_records(folder)) == lines  # nothing written

    hashed.clear()
    assert "moved 1," in _run(tmp_path, tiny_config, "prune")  # photo2's result, no longer planned
    assert hashed["photo1_edit.png"] == 1 and hashed["photo3_edit.png"] == 1, hashed
    hashed.clear()
    output = _run(tmp_path, tiny_config, "run", code=1)
    assert "1 already done" in output and "1 failed" in output, output
    assert not hashed, hashed


def test_a_result_written_again_after_it_was_read_is_recorded_with_the_time_it_has_now(tmp_path):
    item = make()
    output = JobOutput(tmp_path / "out", JOB)
    output.open(PIPELINE_YAML)
    output.follow_plan((item,))
    result = encode_result(item, picture(), EXTRA)
    output.write_result(item, result)
    path = output.folder / item.output_name
    _later_mtime(path)
    assert output.done_ids() == {item.item_id}  # read: the same bytes under another time
    output.write_result(item, result)  # the same bytes written again (--overwrite), with a time of their own
    output.finish_files()
    output.close()
    assert _records(output.folder)[-1]["file_mtime_ns"] == os.stat(path).st_mtime_ns
