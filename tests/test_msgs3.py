"""Messages that tell the user what to change: a result name that starts as contact sheets are named, long
prompts in warnings, a CSV in UTF-16 without a byte-order mark, and a job's folder named as a source before the
job has made it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from batch_edit.csv_table import CsvTableError, decode_csv
from batch_edit.prompt_tokens import truncation_warning

from .conftest import batch_edit, image_file


def test_a_csv_row_whose_source_is_named_as_a_contact_sheet_is_told_to_rename_the_source(tmp_path, tiny_config):
    image_file(tmp_path / "contact-sheet.png")
    manifest = tmp_path / "e.csv"
    manifest.write_text("source,prompt\nphoto.png,a cap\ncontact-sheet.png,a hat\n")
    image_file(tmp_path / "photo.png")
    result = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert result.returncode == 2
    assert f"{manifest}: job 'e': row 2: source 'contact-sheet.png': the default result name 'contact-sheet-" in (
        result.stderr
    )
    assert "rename the source file" in result.stderr
    assert "file_name" not in result.stderr  # a key CSV manifests cannot set


def planned_job(tmp_path, config, source: str, extra: str = ""):
    """`plan` of one YAML job of `source` (made as an image)."""
    image_file(tmp_path / source)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"jobs:\n  - {{name: j, sources: {source}, prompts: a hat{extra}}}\n")
    return batch_edit("plan", str(manifest), "--pipeline", str(config))


def test_a_yaml_job_with_the_default_name_may_rename_the_source_or_set_a_file_name(tmp_path, tiny_config):
    result = planned_job(tmp_path, tiny_config, "contact-sheet-1.png")
    assert result.returncode == 2
    assert "source 'contact-sheet-1.png': the default result name 'contact-sheet-1-" in result.stderr
    assert "rename the source file or set a 'file_name' that starts otherwise" in result.stderr


def test_a_chosen_file_name_that_starts_as_a_contact_sheet_is_still_the_file_names_fault(tmp_path, tiny_config):
    result = planned_job(tmp_path, tiny_config, "cat.png", ", file_name: 'contact-sheet-{id}'")
    assert result.returncode == 2
    assert "field 'file_name': 'contact-sheet-{id}' gives (cat, " in result.stderr
    assert "choose a name that starts otherwise" in result.stderr


def test_long_prompts_differing_only_at_the_end_read_differently_in_their_warnings():
    template = "a very long prompt about a cat sitting on a wooden table in the afternoon sun with a {}"
    cat, dog = (truncation_warning("l", template.format(stem), 71, 16) for stem in ("cat", "dog"))
    assert cat != dog
    assert "prompt 'a very long prompt about a cat … rnoon sun with a cat (88 characters)' has 71" in cat
    assert "\n" not in cat


def test_a_short_enough_prompt_is_shown_whole():
    prompt = "x" * 53  # 30 + 20 + the 3 characters " … " would take: nothing to gain by cutting
    assert f"prompt '{prompt}' has" in truncation_warning("j", prompt, 20, 16)


@pytest.mark.parametrize(("codec", "order"), [("utf-16-le", "little-endian"), ("utf-16-be", "big-endian")])
def test_utf16_without_a_byte_order_mark_is_named_as_such_not_as_windows_1252(codec, order):
    data = "sep=;\r\nsource;prompt\r\ncat.png;chat été\r\n".encode(codec)
    with pytest.raises(CsvTableError) as info:
        decode_csv(data)
    message = str(info.value)
    assert message.startswith(f"the file looks like UTF-16 ({order}) text without a byte-order mark; save ")
    assert '"CSV UTF-8"' in message and "Windows-1252" not in message and "line" not in message


def test_a_windows_1252_csv_is_still_told_apart_from_utf16():
    with pytest.raises(CsvTableError, match=r"line 2, column 14: not UTF-8 text \(byte 0xe9, 'é' in Windows-1252"):
        decode_csv("source,prompt\ncat.png,chat été\n".encode("cp1252"))


def _chained(tmp_path: Path) -> Path:
    image_file(tmp_path / "cat.png")
    manifest = tmp_path / "s.yaml"
    manifest.write_text(
        "output_root: out\ndefaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\njobs:\n"
        "  - {name: a, sources: cat.png, prompts: a}\n  - {name: b, sources: out/a, prompts: 'b {stem}'}\n"
    )
    return manifest


def _explained(stderr: str, folder: Path) -> bool:
    return (
        f"warning: job b: source {folder} is job a's folder in this run, which holds no results yet: a job reads "
        "another's results only once they exist, so job b's items from them run after job a's"
    ) in stderr


def test_plan_says_a_source_is_a_job_folder_this_run_has_not_made_yet(tmp_path, tiny_config):
    manifest = _chained(tmp_path)
    result = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr  # not a missing source: the run makes it
    assert _explained(result.stderr, tmp_path / "out" / "a")
    assert f"waiting for job a's results: {tmp_path / 'out' / 'a'} holds none yet" in result.stdout
    assert "missing" not in result.stdout


def test_run_says_so_too_and_reads_the_results_once_made(tmp_path, tiny_config):
    manifest = _chained(tmp_path)
    first = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert _explained(first.stderr, tmp_path / "out" / "a")
    assert first.returncode == 0
    assert "job a: 1 written" in first.stdout and "job b: 1 written" in first.stdout, first.stdout
    assert "total: 2 written, 0 failed, elapsed" in first.stdout
    second = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert "job a's folder" not in second.stderr and "nothing to do" in second.stdout


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [
        (".png", "a PNG image"),
        (".jpg", "a JPEG image"),
        (".webp", "a WebP image"),
        (".safetensors", "a safetensors weights file"),
    ],
)
def test_a_binary_file_given_as_the_pipeline_config_is_named_for_what_it_is(tmp_path, suffix, kind):
    """An image or a weights file passed to --pipeline: said so, not refused at its first byte as text to re-save."""
    path = tmp_path / f"config{suffix}"
    if suffix == ".safetensors":
        header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    else:
        Image.new("RGB", (8, 8)).save(path)
    (tmp_path / "m.yaml").write_text("jobs: [{name: a, sources: x.png, prompts: a}]\n")
    result = batch_edit("plan", str(tmp_path / "m.yaml"), "--pipeline", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: {kind}, not a text file"
