"""A JPEG job's `quality` changed after its items were made: quality is not part of an item, so the done items keep
the quality they were written at; `plan` and `run` say so (with the qualities), and nothing is said where the
quality is unchanged or the format is PNG."""

from __future__ import annotations

from .conftest import image_file, run_manifest

JOB = (
    "jobs:\n  - {{name: j, sources: [a.png, b.png], prompts: p, width: 16, height: 16, strength: 0.5, "
    "num_inference_steps: 2, format: {format}{quality}}}\n"
)


def _manifest(tmp_path, format="jpeg", quality=None):
    extra = "" if quality is None else f", quality: {quality}"
    (tmp_path / "m.yaml").write_text(JOB.format(format=format, quality=extra))


def test_done_items_keep_the_quality_they_were_written_at(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    image_file(tmp_path / "b.png", (32, 32), color=200)
    _manifest(tmp_path)  # the default quality, 95
    run_manifest(tmp_path, tiny_config, "run")
    assert "quality" not in run_manifest(tmp_path, tiny_config, "plan")
    _manifest(tmp_path, quality=80)
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "2 already done" in planned
    assert "note: 2 done item(s) keep the quality their result was written at (95; the job now gives 80)" in planned
    printed = run_manifest(tmp_path, tiny_config, "run")
    assert "note: job j: 2 done item(s) keep the quality" in printed and "0 written, 2 already done" in printed
    assert "quality" not in run_manifest(tmp_path, tiny_config, "run", "--overwrite")  # made again at 80
    assert "quality" not in run_manifest(tmp_path, tiny_config, "plan")


def test_png_jobs_say_nothing_of_quality(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    image_file(tmp_path / "b.png", (32, 32), color=200)
    _manifest(tmp_path, format="png")
    run_manifest(tmp_path, tiny_config, "run")
    _manifest(tmp_path, format="webp", quality=70)  # another format: made again, as another note says
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "keep the quality" not in planned and "made again in the job's new format" in planned, planned
