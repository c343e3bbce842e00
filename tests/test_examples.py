"""The example manifests and configs shipped in jobs/ and configs/ stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_edit.cli import main
from batch_edit.pipeline_config import load_pipeline_config

from .conftest import REPO, batch_edit

EXAMPLES = sorted((REPO / "jobs").glob("*.yaml")) + sorted((REPO / "jobs").glob("*.csv"))


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda path: path.name)
def test_example_manifests_plan(manifest: Path, capsys):
    assert main(["plan", str(manifest)]) == 0
    assert "item(s)" in capsys.readouterr().out


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_configs_load(config: Path):
    loaded = load_pipeline_config(config)
    assert loaded.model


def test_reference_example_is_the_reference_call(capsys):
    assert main(["plan", str(REPO / "jobs" / "cat-to-tiger.yaml")]) == 0
    out = capsys.readouterr().out
    assert "job cat-to-tiger: 1 item(s)" in out and "FLUX.1-dev" in out and "qint8" in out


@pytest.mark.slow
def test_reference_example_runs_at_full_size_on_the_tiny_pipeline(tmp_path, tiny_model):
    """1024x1024, 28 steps, strength 0.9: the reference settings end to end (about 10 s on a laptop CPU)."""
    import pandas as pd
    from PIL import Image

    config = tmp_path / "tiny.yaml"
    config.write_text(f"model: {tiny_model}\ndtype: float32\ndevice: cpu\nlocal_files_only: true\n")
    result = batch_edit(
        "run",
        str(REPO / "jobs" / "cat-to-tiger.yaml"),
        "--pipeline",
        str(config),
        "--output-root",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    row = pd.read_csv(tmp_path / "out" / "cat-to-tiger" / "metadata.csv").iloc[0]
    assert (row.seed, row.num_inference_steps, row.strength, row.guidance_scale) == (100, 28, 0.9, 3.5)
    with Image.open(tmp_path / "out" / "cat-to-tiger" / row.file_name) as image:
        assert image.size == (1024, 1024)
