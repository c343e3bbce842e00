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


def _on_cuda(tmp_path, tiny_config):
    """The tiny config with `device: cuda`: the same item ids (the device is not part of them), for a GPU cluster."""
    config = tmp_path / "cuda.yaml"
    config.write_text(tiny_config.read_text().replace("device: cpu", "device: cuda"))
    return config


def test_a_finished_run_of_a_gpu_config_starts_no_ray_either(tmp_path, tiny_config, request):
    """Its GPUs are probed while planning only for an `auto` that changes images (torchao_type): not here."""
    _manifest(tmp_path, PHOTOS / "cat.jpg")
    assert _run(tmp_path, tiny_config).returncode == 0
    request.getfixturevalue("no_ray_start")
    again = _run(tmp_path, _on_cuda(tmp_path, tiny_config), "--ray")
    assert again.returncode == 0, again.stderr
    assert "0 written, 1 already done" in again.stdout and "nothing to do" in again.stdout, again.stdout


def test_a_gpu_config_on_a_cluster_without_gpus_is_refused_before_anything_is_written(
    tmp_path, tiny_config, no_ray_start, monkeypatch
):
    """Checked once the run has items to make, where the cluster's GPUs are probed: this one has none (as a local
    Ray instance on this CPU machine reports it; the probe itself needs Ray started, hence its answer given)."""
    monkeypatch.setattr(ray_run.RayCluster, "gpus", lambda self: [])
    _manifest(tmp_path, PHOTOS / "cat.jpg")
    refused = _run(tmp_path, _on_cuda(tmp_path, tiny_config), "--ray")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "asks for device 'cuda' but the Ray cluster has no GPU" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
