"""`prune` reads the manifests for its jobs' names, locks their folders, then plans once and prunes from the records
that planning read under those locks: no plan made before the locks, no second read of a job's records."""

from __future__ import annotations

import shutil

import pytest

from batch_edit import cli
from batch_edit.records import JobRecords

from .conftest import PHOTOS, batch_edit

JOB = "{name: %s, sources: a.jpg, prompts: x, strength: %s, seed: 1, num_inference_steps: 2, width: 64, height: 64}"


@pytest.mark.parametrize("dry_run", [True, False])
def test_prune_plans_once_under_the_locks_and_reads_each_jobs_records_once(tmp_path, tiny_config, monkeypatch, dry_run):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    command = ("--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', '[0.5, 0.6]')}, {JOB % ('b', '[0.5, 0.6]')}]\n")
    assert batch_edit("run", "m.yaml", *command, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(f"jobs: [{JOB % ('a', 0.5)}, {JOB % ('b', 0.5)}]\n")  # one result each out
    calls: list[str] = []
    prepare, read_records, recorded_files = cli.prepare, JobRecords.read_records, JobRecords.recorded_files

    def planned(*args, **kwargs):
        calls.append("prepare")
        return prepare(*args, **kwargs)

    def read(self):
        calls.append(f"read {self.folder.name}")
        return read_records(self)

    def listed(self):
        calls.append(f"listed {self.folder.name}")
        return recorded_files(self)

    monkeypatch.setattr(cli, "prepare", planned)
    monkeypatch.setattr(JobRecords, "read_records", read)
    monkeypatch.setattr(JobRecords, "recorded_files", listed)
    flags = ("--dry-run",) if dry_run else ()
    result = batch_edit("prune", "m.yaml", *command, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    verb = "would move" if dry_run else "moved"
    assert f"job a: {verb} 1" in result.stdout and f"job b: {verb} 1" in result.stdout, result.stdout
    # planned once, reading each job's records once; then (not a dry run) each job's finishing pass reads them
    # again, with what the prune appended
    after = [] if dry_run else ["read a", "read b"]
    assert calls == ["prepare", "read a", "read b", *after], calls
    if not dry_run:  # what was pruned is what a later prune finds done: nothing more to move
        again = batch_edit("prune", "m.yaml", *command, cwd=tmp_path)
        assert "job a: moved 0" in again.stdout and "job b: moved 0" in again.stdout, again.stdout
