"""`run --ray` with a CPU config starts Ray only once the run has items to make: a finished run says it has nothing
to do, and a manifest none of whose sources exists is refused, both without Ray's start-up (seconds) or its lines."""

from __future__ import annotations

import pytest

from batch_edit import ray_run

from .conftest import PHOTOS, batch_edit


def _manifest(tmp_path, source) -> None:
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: j, sources: [{source}], prompts: p, width: 16, height: 16, strength: 0.5, "
        "num_inference_steps: 2, seed: 1}\n"
    )


@pytest.fixture
def no_ray_start(monkeypatch):
    def refused(self):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_run.RayCluster, "_init", refused)


def _run(tmp_path, config, *flags):
    return batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", *flags, cwd=tmp_path)


def test_a_finished_run_says_nothing_to_do_without_starting_ray(tmp_path, tiny_config, request):
    _manifest(tmp_path, PHOTOS / "cat.jpg")
    made = _run(tmp_path, tiny_config)  # in this process: the same items as on Ray (a CPU config)
    assert made.returncode == 0 and "1 written" in made.stdout, made.stderr
    request.getfixturevalue("no_ray_start")
    again = _run(tmp_path, tiny_config, "--ray", "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert "0 written, 1 already done" in again.stdout and "nothing to do" in again.stdout, again.stdout


def test_sources_that_do_not_exist_are_refused_without_starting_ray(tmp_path, tiny_config, no_ray_start):
    _manifest(tmp_path, tmp_path / "gone.jpg")
    refused = _run(tmp_path, tiny_config, "--ray")
    assert refused.returncode == 2
    assert "none of the 1 source file(s) exists" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
