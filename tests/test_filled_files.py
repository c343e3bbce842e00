"""`keep_sources` or `captions` turned on for a finished job: `plan` says how many finished items lack their kept
copies, and the run that writes them (no image made again) says so in its summary, as it does for caption files;
a rerun with everything there says nothing of either."""

from __future__ import annotations

from .conftest import image_file, run_manifest

JOB = (
    "jobs:\n  - {{name: j, sources: [a.png, b.png], prompts: p, width: 16, height: 16, strength: 0.5, "
    "num_inference_steps: 2{extra}}}\n"
)


def _manifest(tmp_path, extra=""):
    (tmp_path / "m.yaml").write_text(JOB.format(extra=extra))


def test_kept_copies_written_for_finished_items_are_said(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    image_file(tmp_path / "b.png", (32, 32), color=200)
    _manifest(tmp_path)
    run_manifest(tmp_path, tiny_config, "run")
    images = sorted(p.name for p in (tmp_path / "out" / "j").glob("*.png"))
    _manifest(tmp_path, ", keep_sources: true")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "note: 2 finished item(s) lack their kept source copies (keep_sources)" in planned, planned
    printed = run_manifest(tmp_path, tiny_config, "run")
    assert "job j: wrote the kept source copies of 2 finished item(s) that lacked them" in printed, printed
    assert "0 written, 2 already done" in printed
    assert len(list((tmp_path / "out" / "j" / "sources").glob("*.png"))) == 2
    assert sorted(p.name for p in (tmp_path / "out" / "j").glob("*.png")) == images  # no image made again
    assert "lack" not in run_manifest(tmp_path, tiny_config, "plan")
    assert "wrote" not in run_manifest(tmp_path, tiny_config, "run")


def test_caption_files_written_for_finished_items_are_said(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    image_file(tmp_path / "b.png", (32, 32), color=200)
    _manifest(tmp_path)
    run_manifest(tmp_path, tiny_config, "run")
    _manifest(tmp_path, ", captions: true")
    printed = run_manifest(tmp_path, tiny_config, "run")
    assert "job j: wrote the caption files of 2 finished item(s) that lacked them" in printed, printed
    assert len(list((tmp_path / "out" / "j").glob("*.txt"))) == 2
    assert "wrote" not in run_manifest(tmp_path, tiny_config, "run")
