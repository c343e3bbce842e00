"""A source whose mtime changed with its bytes unchanged (touched, copied, restored, synced) is read and hashed
once: the run that finds it so records its new stat, and later plans reuse the hash instead of reading it again."""

from __future__ import annotations

import os
import shutil

import pytest

import batch_edit.source_identity as source_identity

from .conftest import PHOTOS, batch_edit

YAML = """jobs:
  - {name: j, sources: [photo.jpg], prompts: x, width: 32, height: 32, num_inference_steps: 2, strength: 0.5}
"""


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    read: list[str] = []
    real = source_identity.file_identity

    def counted(path: str):
        read.append(path)
        return real(path)

    monkeypatch.setattr(source_identity, "file_identity", counted)
    return read


def _cli(tmp_path, config, command: str) -> str:
    result = batch_edit(command, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_touched_source_is_hashed_once(tmp_path, tiny_config, reads):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "m.yaml").write_text(YAML)
    assert "1 written" in _cli(tmp_path, tiny_config, "run")
    _cli(tmp_path, tiny_config, "plan")
    reads.clear()
    os.utime(tmp_path / "photo.jpg", ns=(1, 1_700_000_000_000_000_000))  # a new mtime, the same bytes
    assert "nothing to do" in _cli(tmp_path, tiny_config, "run")
    assert len(reads) == 1  # the run read it and found the content recorded
    reads.clear()
    assert "1 already done" in _cli(tmp_path, tiny_config, "plan")
    assert "nothing to do" in _cli(tmp_path, tiny_config, "run")
    assert reads == []  # its new stat was recorded: not read again
