"""A result that cannot be encoded (a JPEG whose metadata is over the format's 64 KB: a 4000-emoji prompt and a long
source path) is that item's failure, stage `encode`: the run goes on, the other items of its batch are written,
and the run ends with its summary; the same on Ray. Real tiny pipeline, real encoder: nothing is faked."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from .conftest import PHOTOS, batch_edit, batch_edit_subprocess

EMOJI = "\U0001f600" * 4000


def too_long_for_jpeg(tmp_path, seeds: str = "[1, 2]") -> str:
    folder = tmp_path / ("d" * 200)
    folder.mkdir()
    source = shutil.copy(PHOTOS / "cat.jpg", folder / "cat.jpg")
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - name: j\n    sources: {source}\n    prompts: ['{EMOJI}', 'a cat']\n    seed: {seeds}\n"
        "    num_inference_steps: 2\n    strength: 1.0\n    width: 32\n    height: 32\n    format: jpeg\n"
    )
    return "m.yaml"


def assert_encode_failures_recorded(root, failed: int, written: int) -> None:
    failures = pd.read_csv(root / "j" / "failures.csv")
    assert len(failures) == failed
    assert set(failures["stage"]) == {"encode"} and set(failures["error_type"]) == {"ValueError"}
    assert all("EXIF data is too long" in error for error in failures["error"])
    assert set(failures["prompt"]) == {EMOJI}
    made = pd.read_csv(root / "j" / "metadata.csv")
    assert len(made) == written and set(made["prompt"]) == {"a cat"}
    assert all((root / "j" / name).is_file() for name in made["file_name"])


def test_a_result_that_cannot_be_encoded_is_its_items_failure_and_the_run_goes_on(tmp_path, tiny_config):
    manifest = too_long_for_jpeg(tmp_path)
    command = ("run", manifest, "--pipeline", str(tiny_config), "--output-root", "o")
    first = batch_edit(*command, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert "job j: 2 written, 0 already done, 2 failed (EXIF data is too long: 2)" in first.stdout, first.stdout
    assert_encode_failures_recorded(tmp_path / "o", failed=2, written=2)
    again = batch_edit(*command, cwd=tmp_path)  # the rerun tries only the failed ones, and records them again
    assert again.returncode == 1 and "job j: 0 written, 2 already done, 2 failed" in again.stdout, again.stdout
    assert_encode_failures_recorded(tmp_path / "o", failed=2, written=2)


@pytest.mark.slow  # a Ray run (`pytest -m slow`)
def test_on_ray_a_result_that_cannot_be_encoded_fails_alone_and_its_batch_is_kept(tmp_path, tiny_config):
    manifest = too_long_for_jpeg(tmp_path, seeds="1")  # both items in one Ray batch
    result = batch_edit_subprocess(
        "run", manifest, "--pipeline", str(tiny_config), "--ray", "--workers", "1", "--output-root", "o", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert "the Ray workers stopped" not in result.stderr
    assert "job j: 1 written, 0 already done, 1 failed (EXIF data is too long: 1)" in result.stdout, result.stdout
    assert_encode_failures_recorded(tmp_path / "o", failed=1, written=1)
