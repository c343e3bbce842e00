"""A prompt removed, pruned, then put back: the item's earlier result is in .batch-edit/pruned/. `plan` and `run`
say so with the move that keeps it; moved back, the item is done and not made again."""

from __future__ import annotations

from .conftest import image_file, run_manifest

JOB = (
    "jobs:\n  - {{name: j, sources: a.png, prompts: {prompts}, width: 16, height: 16, strength: 0.5, "
    "num_inference_steps: 2}}\n"
)


def _manifest(tmp_path, prompts):
    (tmp_path / "m.yaml").write_text(JOB.format(prompts=prompts))


def test_a_pruned_result_planned_again_is_named_with_the_move_that_keeps_it(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    _manifest(tmp_path, "[p, q]")
    run_manifest(tmp_path, tiny_config, "run")
    _manifest(tmp_path, "[p]")
    run_manifest(tmp_path, tiny_config, "prune")
    (pruned,) = (tmp_path / "out" / "j" / ".batch-edit" / "pruned").glob("*.png")
    assert "pruned/" not in run_manifest(tmp_path, tiny_config, "plan")
    _manifest(tmp_path, "[p, q]")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 2 item(s), 1 already done" in planned
    assert "note: 1 item(s) to make have their earlier result in .batch-edit/pruned/" in planned, planned
    assert f"(e.g. mv {pruned} {tmp_path / 'out' / 'j' / pruned.name})" in planned
    pruned.rename(tmp_path / "out" / "j" / pruned.name)
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 2 item(s), 2 already done" in planned and "pruned/" not in planned
    assert "0 written, 2 already done" in run_manifest(tmp_path, tiny_config, "run")
