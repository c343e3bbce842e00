"""What an attacker's second look at the job folder, `reproduce` and the terminal found: planted record lines
that crashed the reader, hand-edited metadata rows that reached the engine, FIFOs that hung `reproduce`, a run
over the open-file limit that left a folder behind, and paths whose escape sequences reached the terminal."""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess

import pytest
from PIL import Image, PngImagePlugin

from batch_edit.formats import embedded_record
from batch_edit.records import JobRecords
from batch_edit.reproduce import REQUIRED_COLUMNS, ReproduceError, read_stored

from .conftest import PHOTOS, _command, batch_edit, batch_edit_subprocess, write_pipeline_config

ESC = "\x1b"


def _one_line_refusal(result) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- planted record lines


def _records(tmp_path, *lines: str) -> JobRecords:
    state = tmp_path / "out" / "job" / ".batch-edit"
    state.mkdir(parents=True)
    (state / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    return JobRecords(tmp_path / "out", "job")


def test_record_lines_nested_too_deep_or_with_huge_numbers_are_ignored_and_counted(tmp_path):
    good = {"item_id": "a1", "status": "failed", "index": 0}
    records = _records(
        tmp_path,
        "[" * 100_000 + "]" * 100_000,  # RecursionError in json
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        json.dumps({**good, "item_id": "a2"})[:-1] + ', "seed": ' + "7" * 5000 + "}",  # over 4300 digits
        json.dumps(good),
    )
    assert list(records.read_records()) == ["a1"]
    assert records.invalid_lines == 3


def test_records_with_a_position_that_is_no_number_or_an_endless_duration_are_ignored(tmp_path, tiny_config):
    (tmp_path / "photo.jpg").write_bytes((PHOTOS / "cat.jpg").read_bytes())
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "jobs:\n  - name: job\n    sources: photo.jpg\n    prompts: [p, q]\n    strength: 1.0\n"
        "    num_inference_steps: 1\n    seed: 1\n    width: 16\n    height: 16\n"
    )
    common = ("--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit("run", str(manifest), "--limit", "1", *common, cwd=tmp_path).returncode == 0
    path = tmp_path / "out" / "job" / ".batch-edit" / "records.jsonl"
    done = json.loads(path.read_text().splitlines()[0])
    planted = [
        {**done, "item_id": "b1", "prompt": "other", "index": [1, 2]},
        {**done, "item_id": "b2", "prompt": "another", "index": "zz"},
        {**done, "item_id": "b3", "status": "failed", "index": "x"},
        {**done, "item_id": "b4", "prompt": "a third", "seconds": float("nan")},
    ]
    with path.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in planted)
    plan = batch_edit("plan", str(manifest), *common, cwd=tmp_path)
    assert plan.returncode == 0 and "4 invalid record line(s) ignored" in plan.stdout, plan.stdout + plan.stderr
    assert "nan" not in plan.stdout
    again = batch_edit("run", str(manifest), *common, cwd=tmp_path)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    with (tmp_path / "out" / "job" / "metadata.csv").open() as handle:
        assert [row["prompt"] for row in csv.DictReader(handle)] == ["p", "q"]


def test_an_embedded_record_that_is_no_json_object_reads_as_none(tmp_path):
    for text in ["[" * 100_000 + "]" * 100_000, "[1, 2]", "7" * 5000]:
        info = PngImagePlugin.PngInfo()
        info.add_text("batch-edit", text)
        Image.new("RGB", (4, 4)).save(tmp_path / "x.png", pnginfo=info)
        with Image.open(tmp_path / "x.png") as image:
            assert embedded_record(image) is None


# --------------------------------------------------------------------------- reproduce on a hand-edited row


def _metadata(tmp_path, **edits) -> str:
    row = dict.fromkeys(REQUIRED_COLUMNS, "")
    row.update(
        file_name="x.png", item_id="abc", job="job", source=str(PHOTOS / "cat.jpg"), prompt="p", seed="1",
        seed_derived="False", strength="0.5", num_inference_steps="2", guidance_scale="3.5",
        requested_width="32", requested_height="32", resize="center-crop", batch_size="1",
    )  # fmt: skip
    row.update(edits)
    path = tmp_path / "metadata.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return str(path)


@pytest.mark.parametrize(
    "edits, field",
    [
        ({"batch_size": "abc"}, "batch_size"),
        ({"batch_size": "1000000"}, "batch_size"),
        ({"requested_width": "65536"}, "requested_width"),
        ({"strength": "7"}, "strength"),
        ({"num_inference_steps": "0"}, "num_inference_steps"),
        ({"seed": "-5"}, "seed"),
        ({"resize": "bogus"}, "resize"),
    ],
)
def test_reproduce_holds_a_hand_edited_row_to_the_manifest_limits_before_loading(tmp_path, edits, field):
    config = write_pipeline_config(tmp_path / "p.yaml", tmp_path / "no-model")
    result = batch_edit("reproduce", _metadata(tmp_path, **edits), "--item", "abc", "--pipeline", str(config))
    _one_line_refusal(result)
    assert "item abc" in result.stderr and field in result.stderr, result.stderr


def test_reproduce_refuses_a_fifo_or_device_as_the_metadata_csv_at_once(tmp_path):
    os.mkfifo(tmp_path / "metadata.csv")
    for path in (tmp_path / "metadata.csv", "/dev/zero"):
        result = batch_edit_subprocess("reproduce", str(path), "--item", "abc", timeout=60)
        _one_line_refusal(result)
        assert "not a regular file" in result.stderr, result.stderr


def test_reproduce_does_not_block_on_a_stored_image_that_is_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(ReproduceError, match="not a regular file"):
        read_stored(tmp_path / "x.png")


# --------------------------------------------------------------------------- open-file limit, output root


def test_a_run_over_the_open_file_limit_is_refused_saying_so_and_leaves_no_folder(tmp_path, tiny_config):
    jobs = "".join(f"  - name: j{n:03d}\n    sources: {PHOTOS / 'cat.jpg'}\n    prompts: p\n" for n in range(100))
    (tmp_path / "many.yaml").write_text("jobs:\n" + jobs)

    def low_limits():  # the hard limit too: the run cannot raise the soft one past it
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    command, env = _command(("run", "many.yaml", "--pipeline", str(tiny_config), "--output-root", "new/out"))
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=low_limits
    )
    _one_line_refusal(result)
    assert "open-file limit" in result.stderr, result.stderr
    assert not (tmp_path / "new" / "out").exists()  # the output root it made goes, once its job folders have
    assert not (tmp_path / "new").exists()  # and the folder it made above it


def test_an_output_root_that_is_a_file_is_named_as_such(tmp_path, tiny_config):
    (tmp_path / "out").write_text("not a folder")
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - name: job\n    sources: {PHOTOS / 'cat.jpg'}\n    prompts: p\n")
    for command in ("plan", "run"):
        result = batch_edit(command, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
        _one_line_refusal(result)
        assert f"{tmp_path / 'out'} is a file where a folder should be" in result.stderr, result.stderr


# --------------------------------------------------------------------------- escapes in echoed paths


def test_paths_with_terminal_escapes_are_echoed_escaped(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(  # YAML's own escape: the file itself may not hold an ESC
        f'output_root: "out/r\\x1b[32mG"\njobs:\n  - name: job\n    sources: [{PHOTOS / "cat.jpg"}, '
        f'"gone\\x1bZ.png"]\n    prompts: p\n    strength: 1.0\n    num_inference_steps: 1\n    seed: 1\n'
        "    width: 16\n    height: 16\n"
    )
    plan = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert plan.returncode == 1 and "r\\x1b[32mG" in plan.stdout and "gone\\x1bZ" in plan.stdout, plan.stdout
    ran = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    # the summary counts the failure by its reason; the escaped path is failures.csv's, the folder's is echoed
    assert ran.returncode == 1 and "(file not found: 1)" in ran.stdout, ran.stdout + ran.stderr
    assert "r\\x1b[32mG" in ran.stdout, ran.stdout
    folder = tmp_path / "out" / f"r{ESC}[32mG" / "job"
    (folder / "metadata.csv").unlink()
    (folder / "metadata.csv").symlink_to(tmp_path / "m.yaml")
    refused = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    _one_line_refusal(refused)
    assert "r\\x1b[32mG" in refused.stderr, refused.stderr
    for result in (plan, ran, refused):
        assert ESC not in result.stdout + result.stderr
