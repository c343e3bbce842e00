"""Two endings between counting a run's items and making them: workers lost before any result leave no job folder
(as a load failure does), and items another run finished while this one started (Ray's start-up) load no model
and start no worker: the run says there is nothing to do. Real tiny pipeline and planning; the faults (workers
lost, another run finishing meanwhile) are simulated."""

from __future__ import annotations

import shutil

from batch_edit.engine import Engine
from batch_edit.ray_run import WorkersLost
from batch_edit.runner import InProcess

from .conftest import PHOTOS, batch_edit, write_pipeline_config

MANIFEST = (
    f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: [a tiger], seed: [1, 2],"
    " num_inference_steps: 2, width: 32, height: 32}]\n"
)


def test_workers_lost_before_any_result_leave_no_job_folder(tmp_path, tiny_model, monkeypatch):
    def losing_the_workers(self, tasks, pipeline, record, stop):
        raise WorkersLost("the Ray workers stopped (simulated)")

    monkeypatch.setattr(InProcess, "run", losing_the_workers)
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "o", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "error: the Ray workers stopped (simulated)" in result.stderr
    assert not (tmp_path / "o" / "j").exists()


def test_items_another_run_finished_meanwhile_load_nothing_and_say_nothing_to_do(tmp_path, tiny_model, monkeypatch):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    first = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "done", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    def finished_elsewhere(config):  # after the items were counted, before the locks: the other run's folder
        shutil.copytree(tmp_path / "done" / "j", tmp_path / "o" / "j")

    loads = []
    load = Engine.load.__func__
    monkeypatch.setattr(Engine, "check", staticmethod(finished_elsewhere))
    monkeypatch.setattr(Engine, "load", classmethod(lambda cls, *a, **k: loads.append(1) or load(cls, *a, **k)))
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert loads == []
    assert "nothing to do: every item is already done" in result.stdout + result.stderr
    assert "job j: 0 written, 2 already done" in result.stdout
