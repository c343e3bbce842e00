"""Messages that say exactly what is wrong: a lone brace's escape, a long value's own length, a manifest with no
jobs."""

from __future__ import annotations

import pytest

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifest
from tests.conftest import image_file


def _problems(path) -> list[str]:
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    return refused.value.problems


def _yaml(tmp_path, prompt: str):
    image_file(tmp_path / "a.png")
    path = tmp_path / "m.yaml"
    path.write_text(f"jobs:\n  - name: j\n    sources: a.png\n    prompts: '{prompt}'\n")
    return path


@pytest.mark.parametrize(
    ("prompt", "escape"),
    [("smile :}", "write '}}' for a literal '}'"), ("smile :{", "write '{{' for a literal '{'")],
)
def test_a_lone_brace_is_told_the_escape_of_that_brace(tmp_path, prompt, escape):
    (problem,) = _problems(_yaml(tmp_path, prompt))
    assert escape in problem, problem


def test_a_long_value_is_said_its_own_length(tmp_path):
    (problem,) = _problems(_yaml(tmp_path, "x" * 4001))
    assert "at most 4000 characters" in problem and "(4,001 characters)" in problem, problem
    (tmp_path / "rows.csv").write_text(f"source,prompt\na.png,{'y' * 4001}\n")
    (problem,) = _problems(tmp_path / "rows.csv")
    assert "row 1 (line 2)" in problem and "(4,001 characters)" in problem, problem


@pytest.mark.parametrize("jobs", ["jobs: []\n", "jobs:\n"])
def test_a_manifest_without_jobs_says_so_naming_the_file(tmp_path, jobs):
    path = tmp_path / "m.yaml"
    path.write_text(jobs)
    assert _problems(path) == [f"{path}: the manifest lists no jobs: 'jobs:' needs at least one job"]
