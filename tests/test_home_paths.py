"""`~` in the paths a manifest's settings and the command line's options name: the user's home, as for sources,
never a folder named `~` beside the manifest or in the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_edit.manifest import load_manifest, output_root_settings, pipeline_settings
from tests.conftest import batch_edit, image_file, write_pipeline_config


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def _manifest(folder: Path, settings: str) -> Path:
    folder.mkdir(exist_ok=True)
    image_file(folder / "a.png")
    path = folder / "m.yaml"
    path.write_text(
        f"{settings}jobs:\n  - name: j\n    sources: a.png\n    prompts: p\n    num_inference_steps: 2\n    strength: 1.0\n"
        "    width: 64\n    height: 64\n"
    )
    return path


def test_yaml_settings_expand_home(tmp_path, home):
    manifest = _manifest(tmp_path / "work", "output_root: ~/x\npipeline: ~/cfg.yaml\n")
    loaded = load_manifest(manifest)
    assert loaded.output_root == (home / "x").resolve()
    assert loaded.pipeline == (home / "cfg.yaml").resolve()
    assert output_root_settings([manifest]) == {(home / "x").resolve()}
    (home / "cfg.yaml").touch()  # a pipeline setting naming no file is refused there
    assert pipeline_settings([manifest]) == {(home / "cfg.yaml").resolve()}


def test_run_writes_under_home_output_root(tmp_path, home, tiny_model):
    write_pipeline_config(home / "cfg.yaml", tiny_model)
    work = tmp_path / "work"
    manifest = _manifest(work, "output_root: ~/x\npipeline: ~/cfg.yaml\n")
    result = batch_edit("run", str(manifest), cwd=work)
    assert result.returncode == 0, result.stderr
    assert not (work / "~").exists()
    assert len(list((home / "x" / "j").glob("a-*.png"))) == 1


def test_missing_home_pipeline_named_in_home(tmp_path, home):
    work = tmp_path / "work"
    manifest = _manifest(work, "pipeline: ~/cfg.yaml\n")
    result = batch_edit("plan", str(manifest), cwd=work)
    assert result.returncode != 0
    assert str(home / "cfg.yaml") in result.stderr and "~" not in result.stderr


def test_options_written_with_equals_expand_home(tmp_path, home, tiny_model):
    """`--output-root=~/y`: the shell expands `~` only at a word's start, so the option's value keeps it."""
    write_pipeline_config(home / "cfg.yaml", tiny_model)
    work = tmp_path / "work"
    manifest = _manifest(work, "")
    result = batch_edit("run", str(manifest), "--output-root=~/y", "--pipeline=~/cfg.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    assert not (work / "~").exists()
    assert len(list((home / "y" / "j").glob("a-*.png"))) == 1
