"""JobOutput: atomic PNG writes, the append-only records and the CSVs rebuilt from them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.errors import OutputError
from batch_edit.job_listing import FAILURE_COLUMNS, METADATA_COLUMNS
from batch_edit.outputs import STATE_DIR, JobOutput
from batch_edit.plan import make_item
from batch_edit.sources import SourceRef

JOB = "job"
PIPELINE_YAML = "model: tiny\ndtype: float32\n"
EXTRA = {"model": "black-forest-labs/FLUX.1-dev", "dtype": "bfloat16", "device": "cuda", "seconds": 1.25}


def make(stem: str = "photo", prompt: str = "a cat", seed: int | None = 7, width: int = 32, height: int = 16):
    ref = SourceRef(key=f"/photos/{stem}.jpg", is_url=False, stem=stem, fingerprint="10-20", caption=None)
    params = dict(
        strength=0.8, num_inference_steps=4, guidance_scale=3.5, seed=seed, width=width, height=height,
        resize="center-crop",
    )  # fmt: skip
    return make_item(JOB, ref, prompt, params, "{}")


def picture(width: int = 32, height: int = 16, offset: int = 0) -> Image.Image:
    """A deterministic RGB image whose every pixel differs from its neighbours (catches lossy writes)."""
    rng = np.random.default_rng(offset)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def raw_lines(out: JobOutput) -> list[dict]:
    return [json.loads(line) for line in out.records_path.read_text(encoding="utf-8").splitlines()]


def tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def read_csv(path: Path) -> pd.DataFrame:
    # Everything as text, nothing turned into NaN: the comparison is with exactly what was written.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture
def out(tmp_path):
    output = JobOutput(tmp_path / "out", JOB)
    output.open(PIPELINE_YAML)
    yield output
    output.close()


# --------------------------------------------------------------------------- images and metadata.csv


def test_write_image_is_a_lossless_png_with_one_ok_record_and_no_temp_file(out):
    item = make()
    image = picture()
    out.write_image(item, image, EXTRA)

    final = out.folder / item.output_name
    assert final.is_file()
    with Image.open(final) as written:
        assert written.format == "PNG"
        assert written.size == image.size
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(image))
    assert tmp_files(out.folder) == []

    records = raw_lines(out)
    assert len(records) == 1
    assert records[0]["status"] == "ok"
    assert records[0]["item_id"] == item.item_id
    assert records[0]["file_name"] == item.output_name
    assert out.done_ids() == {item.item_id}


def test_rebuild_csvs_counts_and_metadata_columns(out):
    first, second, broken = make("a"), make("b", width=64, height=64), make("c")
    out.write_image(first, picture(), EXTRA)
    # The pipeline may hand back another size than requested ("fit"): width/height are the real ones.
    out.write_image(second, picture(48, 80, offset=1), {**EXTRA, "seconds": 2.5})
    out.record_failure(broken, "load", FileNotFoundError("file not found: /photos/c.jpg"))

    assert out.rebuild_csvs() == (2, 1)
    assert tmp_files(out.folder) == []

    with (out.folder / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header[0] == "file_name"
    assert header == METADATA_COLUMNS

    meta = read_csv(out.folder / "metadata.csv")
    assert list(meta["file_name"]) == [first.output_name, second.output_name]
    assert list(meta["item_id"]) == [first.item_id, second.item_id]
    assert set(meta["model"]) == {EXTRA["model"]}
    assert set(meta["device"]) == {"cuda"}
    assert list(meta["seconds"]) == ["1.25", "2.5"]
    row = meta.set_index("item_id").loc[second.item_id]
    assert (row["width"], row["height"]) == ("48", "80")
    assert (row["requested_width"], row["requested_height"]) == ("64", "64")
    assert row["source"] == "/photos/b.jpg"
    assert row["finished_at"] != ""
    # Every listed file is really there, next to metadata.csv (the `imagefolder` layout).
    assert all((out.folder / name).is_file() for name in meta["file_name"])

    with (out.folder / "failures.csv").open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == FAILURE_COLUMNS


def test_rebuild_csvs_with_no_records_writes_header_only_files(out):
    assert out.rebuild_csvs() == (0, 0)
    assert read_csv(out.folder / "metadata.csv").columns.tolist() == METADATA_COLUMNS
    assert len(read_csv(out.folder / "metadata.csv")) == 0
    assert read_csv(out.folder / "failures.csv").columns.tolist() == FAILURE_COLUMNS


# --------------------------------------------------------------------------- failures


def test_record_failure_gives_a_failures_row(out):
    item = make()
    out.record_failure(item, "generate", RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert out.rebuild_csvs() == (0, 1)

    failures = read_csv(out.folder / "failures.csv")
    assert len(failures) == 1
    row = failures.iloc[0]
    assert row["item_id"] == item.item_id
    assert row["stage"] == "generate"
    assert row["error_type"] == "RuntimeError"
    assert row["error"] == "CUDA out of memory. Tried to allocate 2 GiB"
    assert row["failed_at"] != ""
    assert read_csv(out.folder / "metadata.csv").empty
    assert out.done_ids() == set()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("first line\nsecond line\n  File 'x.py', line 3"), "first line"),
        (ValueError("\n\n  indented reason\nmore"), "indented reason"),
        (ValueError("windows\r\nline ends"), "windows"),
        (ValueError(""), "ValueError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (ValueError("   \n\t "), "ValueError"),
    ],
    ids=["multi-line", "leading-blank-lines", "crlf", "empty", "no-args", "whitespace-only"],
)
def test_failure_error_is_one_line(out, error, expected):
    out.record_failure(make(), "load", error)
    assert raw_lines(out)[0]["error"] == expected
    out.rebuild_csvs()
    row = read_csv(out.folder / "failures.csv").iloc[0]
    assert row["error"] == expected
    assert row["error_type"] == type(error).__name__
    assert "\n" not in row["error"]


# --------------------------------------------------------------------------- the latest record wins


def test_failure_then_success_counts_as_done(out):
    item, other = make("a"), make("b")
    out.record_failure(item, "generate", RuntimeError("boom"))
    out.record_failure(other, "load", RuntimeError("not an image"))
    out.write_image(item, picture(), EXTRA)

    records = out.read_records()
    assert list(records) == [item.item_id, other.item_id]  # first-seen order, latest content
    assert records[item.item_id]["status"] == "ok"
    assert out.rebuild_csvs() == (1, 1)
    assert list(read_csv(out.folder / "metadata.csv")["item_id"]) == [item.item_id]
    assert list(read_csv(out.folder / "failures.csv")["item_id"]) == [other.item_id]


def test_success_then_failure_counts_as_failed(out):
    item = make()
    out.write_image(item, picture(), EXTRA)
    out.record_failure(item, "generate", RuntimeError("boom"))
    assert out.done_ids() == set()
    assert out.rebuild_csvs() == (0, 1)
    assert read_csv(out.folder / "metadata.csv").empty


# --------------------------------------------------------------------------- crash safety


def test_truncated_last_line_is_ignored(out):
    kept, failed, cut = make("a"), make("b"), make("c")
    out.write_image(kept, picture(), EXTRA)
    out.record_failure(failed, "load", RuntimeError("bad"))
    out.close()
    # A crash in the middle of appending the next record: half a line, no newline.
    line = json.dumps({"status": "ok", "file_name": cut.output_name, "item_id": cut.item_id, "prompt": "x"})
    with out.records_path.open("a", encoding="utf-8") as handle:
        handle.write(line[: len(line) // 2])

    fresh = JobOutput(out.folder.parent, JOB)
    records = fresh.read_records()
    assert list(records) == [kept.item_id, failed.item_id]
    assert fresh.done_ids() == {kept.item_id}
    assert fresh.rebuild_csvs() == (1, 1)
    assert list(read_csv(fresh.folder / "metadata.csv")["item_id"]) == [kept.item_id]
    assert list(read_csv(fresh.folder / "failures.csv")["item_id"]) == [failed.item_id]


def test_record_written_after_a_truncated_line_survives(tmp_path):
    before, after = make("a"), make("b")
    first = JobOutput(tmp_path, JOB)
    first.open(PIPELINE_YAML)
    first.write_image(before, picture(), EXTRA)
    first.close()
    with first.records_path.open("a", encoding="utf-8") as handle:
        handle.write('{"status": "ok", "item_id": "deadbeef", "file_na')  # the crash

    resumed = JobOutput(tmp_path, JOB)
    resumed.open(PIPELINE_YAML)
    resumed.write_image(after, picture(offset=1), EXTRA)
    resumed.close()

    assert (resumed.folder / after.output_name).is_file()
    assert resumed.done_ids() == {before.item_id, after.item_id}
    assert resumed.rebuild_csvs() == (2, 0)


def test_truncated_line_cut_inside_a_multibyte_character_is_ignored(out):
    kept = make("a")
    out.write_image(kept, picture(), EXTRA)
    out.close()
    line = json.dumps({"status": "ok", "item_id": "x", "prompt": "un café crème"}, ensure_ascii=False)
    data = line.encode("utf-8")
    with out.records_path.open("ab") as handle:
        handle.write(data[: data.index("é".encode()) + 1])  # the first byte of 'é' only

    fresh = JobOutput(out.folder.parent, JOB)
    assert list(fresh.read_records()) == [kept.item_id]
    assert fresh.done_ids() == {kept.item_id}


def test_records_are_on_disk_after_each_item(out):
    """Flushed per item: another reader sees the record while the job is still open."""
    item = make()
    out.write_image(item, picture(), EXTRA)
    assert JobOutput(out.folder.parent, JOB).done_ids() == {item.item_id}


# --------------------------------------------------------------------------- done_ids and missing images


def test_done_ids_needs_the_image_file(out):
    kept, deleted = make("a"), make("b")
    out.write_image(kept, picture(), EXTRA)
    out.write_image(deleted, picture(offset=1), EXTRA)
    assert out.done_ids() == {kept.item_id, deleted.item_id}

    (out.folder / deleted.output_name).unlink()
    assert out.done_ids() == {kept.item_id}
    assert out.rebuild_csvs() == (1, 0)
    meta = read_csv(out.folder / "metadata.csv")
    assert list(meta["item_id"]) == [kept.item_id]
    assert deleted.output_name not in set(meta["file_name"])


def test_done_ids_on_a_job_never_run_is_empty(tmp_path):
    output = JobOutput(tmp_path / "nothing-here", JOB)
    assert output.read_records() == {}
    assert output.done_ids() == set()
    assert not output.folder.exists()  # reading never creates anything


# --------------------------------------------------------------------------- open()


def test_open_removes_stale_temp_files_and_keeps_images(tmp_path):
    item = make()
    first = JobOutput(tmp_path, JOB)
    first.open(PIPELINE_YAML)
    first.write_image(item, picture(), EXTRA)
    first.close()

    folder = first.folder
    stale = [
        folder / f".{item.output_name}.12345.tmp",  # a PNG cut short by a crash
        folder / ".other-0123456789abcdef.png.999.tmp",
        folder / ".metadata.csv.4242.tmp",
    ]
    for path in stale:
        path.write_bytes(b"\x89PNG half")
    keep = [folder / "user-notes.txt", folder / "not-hidden.tmp"]
    for path in keep:
        path.write_text("mine")
    before = (folder / item.output_name).read_bytes()

    resumed = JobOutput(tmp_path, JOB)
    resumed.open("model: other\n")
    resumed.close()

    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "mine" for path in keep)
    assert (folder / item.output_name).read_bytes() == before
    assert sorted(p.read_text(encoding="utf-8") for p in (folder / STATE_DIR / "pipelines").iterdir()) == [
        "model: other\n",
        PIPELINE_YAML,
    ]  # each config kept under its own hash, none overwritten
    assert resumed.done_ids() == {item.item_id}  # earlier records kept: the file is appended to


def test_open_creates_the_folders_and_pipeline_yaml(tmp_path):
    output = JobOutput(tmp_path / "deep" / "root", JOB)
    output.open(PIPELINE_YAML, "0123456789abcdef")
    output.close()
    assert output.folder == (tmp_path / "deep" / "root" / JOB).resolve()
    config = output.folder / STATE_DIR / "pipelines" / "0123456789abcdef.yaml"
    assert config.read_text(encoding="utf-8") == PIPELINE_YAML
    assert output.records_path.parent == output.folder / STATE_DIR


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("job", ["../x", "..", ".", "", "x/../../y", "a/b", "/etc"])
def test_job_name_cannot_leave_the_output_root(tmp_path, job):
    root = tmp_path / "out"
    root.mkdir()
    with pytest.raises(OutputError, match="outside the output root"):
        JobOutput(root, job)


def test_job_folder_that_is_a_file_gives_output_error(tmp_path):
    (tmp_path / JOB).write_text("not a folder")
    output = JobOutput(tmp_path, JOB)
    with pytest.raises(OutputError) as info:
        output.open(PIPELINE_YAML)
    error = info.value
    assert not isinstance(error, OSError)
    assert isinstance(error.__cause__, OSError)
    message = str(error)
    assert str(output.folder) in message
    assert "Not a directory" in message or "exists" in message
    assert "Errno" not in message
    assert (tmp_path / JOB).read_text() == "not a folder"  # untouched


def test_output_root_that_is_a_file_gives_output_error(tmp_path):
    root = tmp_path / "root"
    root.write_text("oops")
    with pytest.raises(OutputError, match="cannot write to the output folder"):
        JobOutput(root, JOB).open(PIPELINE_YAML)


def test_write_image_failure_is_output_error_and_leaves_no_temp_file(out):
    item = make()
    # Something that cannot be replaced by a file sits where the image goes.
    (out.folder / item.output_name).mkdir()
    (out.folder / item.output_name / "keep").write_text("x")
    with pytest.raises(OutputError, match="cannot write") as info:
        out.write_image(item, picture(), EXTRA)
    assert not isinstance(info.value, OSError)
    assert item.output_name in str(info.value)
    assert tmp_files(out.folder) == []
    assert out.read_records() == {}  # no ok record for an image that was not written


def test_rebuild_csvs_failure_is_output_error(out):
    out.write_image(make(), picture(), EXTRA)
    (out.folder / "metadata.csv").mkdir()
    (out.folder / "metadata.csv" / "keep").write_text("x")
    with pytest.raises(OutputError, match="metadata.csv"):
        out.rebuild_csvs()
    assert tmp_files(out.folder) == []


# --------------------------------------------------------------------------- CSV quoting


AWKWARD_PROMPTS = [
    "a cat, a dog, and a bird",
    'the sign says "OPEN", in red',
    "style: watercolor; mood: calm",
    "first line\nsecond line",
    "windows\r\nline end, and a lone\rcarriage return",
    '"quoted from start to end"',
    "  leading and trailing spaces  ",
    "NA",
    "",
    "1e5",
    "émoji 🐱, tab\there, backslash \\ and 'single'",
    "=cmd|' /C calc'!A0",
]


def test_csv_quoting_round_trips_awkward_prompts(out):
    items = [make(f"s{i}", prompt=prompt) for i, prompt in enumerate(AWKWARD_PROMPTS)]
    for i, item in enumerate(items):
        out.write_image(item, picture(offset=i), EXTRA)
    failed = make("bad", prompt='oops, "this", failed:\nreally')
    out.record_failure(failed, "load", ValueError('corrupt image: bad "IHDR", chunk: 3'))
    assert out.rebuild_csvs() == (len(items), 1)

    meta = read_csv(out.folder / "metadata.csv")
    assert meta.columns.tolist() == METADATA_COLUMNS
    assert list(meta["prompt"]) == AWKWARD_PROMPTS
    assert list(meta["file_name"]) == [item.output_name for item in items]
    assert list(meta["item_id"]) == [item.item_id for item in items]

    failures = read_csv(out.folder / "failures.csv")
    assert failures.columns.tolist() == FAILURE_COLUMNS
    assert list(failures["prompt"]) == ['oops, "this", failed:\nreally']
    assert list(failures["error"]) == ['corrupt image: bad "IHDR", chunk: 3']

    # The standard library reader agrees with pandas.
    with (out.folder / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        assert [row["prompt"] for row in csv.DictReader(handle)] == AWKWARD_PROMPTS


def test_rebuild_replaces_previous_csvs(out):
    first, second = make("a"), make("b")
    out.write_image(first, picture(), EXTRA)
    out.rebuild_csvs()
    out.write_image(second, picture(offset=1), EXTRA)
    (out.folder / first.output_name).unlink()
    assert out.rebuild_csvs() == (1, 0)
    assert list(read_csv(out.folder / "metadata.csv")["item_id"]) == [second.item_id]
    assert sorted(p.name for p in out.folder.iterdir() if p.name.endswith(".csv")) == ["failures.csv", "metadata.csv"]
    state = ["lock", "metadata-written", "owner", "pipelines", "records.jsonl"]  # metadata-written: its digests
    assert sorted(os.listdir(out.folder / STATE_DIR)) == state
