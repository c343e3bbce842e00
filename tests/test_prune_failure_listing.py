"""What `prune --dry-run` and `reproduce` say of a failure the plan no longer has: a dry run lists dropping it
from failures.csv only where failures.csv lists it, and `reproduce` says the item failed, not that an image of it
was moved."""

from __future__ import annotations

import shutil

from .conftest import PHOTOS, batch_edit
from .http_fixtures import png_header

JOB = """
jobs:
  - name: j
    sources: photos/
    prompts: {prompts}
    width: 64
    height: 64
    num_inference_steps: 2
"""


def _run(tmp_path, tiny_config, *args):
    result = batch_edit(*args, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    return result


def _failed_job(tmp_path, tiny_config, prompts: str) -> list[str]:
    """A folder job whose huge.png fails 'too many pixels' for each prompt; the failed items' ids."""
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photos" / "cat.jpg")
    (tmp_path / "photos" / "huge.png").write_bytes(png_header(50000, 50000))
    (tmp_path / "m.yaml").write_text(JOB.format(prompts=prompts))
    assert _run(tmp_path, tiny_config, "run").returncode == 1
    failures = (tmp_path / "out" / "j" / "failures.csv").read_text().splitlines()[1:]
    assert failures and all("too many pixels" in line for line in failures)
    return [line.split(",")[0] for line in failures]


def test_a_failure_whose_source_was_deleted_is_not_listed_as_dropped_from_failures_csv(tmp_path, tiny_config):
    [failed] = _failed_job(tmp_path, tiny_config, "x")
    (tmp_path / "photos" / "huge.png").unlink()
    assert _run(tmp_path, tiny_config, "run").returncode == 0  # failures.csv no longer lists it
    assert (tmp_path / "out" / "j" / "failures.csv").read_text().count("\n") == 1
    dry = _run(tmp_path, tiny_config, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "failures.csv" not in dry.stdout and failed not in dry.stdout
    assert _run(tmp_path, tiny_config, "prune").returncode == 0
    said = batch_edit("reproduce", str(tmp_path / "out" / "j" / "metadata.csv"), "--item", failed)
    assert said.returncode != 0
    assert f"item {failed} failed in its latest run (load: SourceError: too many pixels" in said.stderr
    assert "then was pruned as no longer planned, so there is no image to compare" in said.stderr
    assert "pruned into" not in said.stderr


def test_a_failure_failures_csv_still_lists_is_listed_as_dropped(tmp_path, tiny_config):
    failed = _failed_job(tmp_path, tiny_config, "[x, y]")
    (tmp_path / "m.yaml").write_text(JOB.format(prompts="x"))  # the prompt y no longer planned: one failure
    dry = _run(tmp_path, tiny_config, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    dropped = [line for line in dry.stdout.splitlines() if "would drop the failure of item" in line]
    assert len(dropped) == 1 and any(item in dropped[0] for item in failed)
    assert dropped[0].strip().endswith("from failures.csv (not in the plan)")
