"""A job renamed in its manifest makes its items again in a new folder; `plan` and `run` say where they were made
before (a folder beside its own recording them as made), so the user can rename the folder instead. No note for
a job with records of its own, for another job of the same run, or for a folder holding other items."""

from __future__ import annotations

from .conftest import image_file, run_manifest

JOB = (
    "  - {{name: {name}, sources: [a.png, b.png], prompts: {prompt}, width: 16, height: 16, strength: 0.5, "
    "num_inference_steps: 2}}\n"
)


def _manifest(tmp_path, *jobs, prompt="p"):
    (tmp_path / "m.yaml").write_text("jobs:\n" + "".join(JOB.format(name=name, prompt=prompt) for name in jobs))


def _setup(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", (32, 32), color=40)
    image_file(tmp_path / "b.png", (32, 32), color=200)
    _manifest(tmp_path, "old")
    run_manifest(tmp_path, tiny_config, "run")


def test_a_renamed_job_is_said_made_before_in_its_old_folder(tmp_path, tiny_config):
    _setup(tmp_path, tiny_config)
    _manifest(tmp_path, "new")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "note: 2 of its 2 item(s) were made before in " in planned and "/out/old (" in planned, planned
    assert "if job 'new' was job 'old' renamed, rename that folder to " in planned
    printed = run_manifest(tmp_path, tiny_config, "run")
    assert "note: job new: 2 of its 2 item(s) were made before in " in printed, printed
    # made again here: the note is said before, not after
    assert "note:" not in run_manifest(tmp_path, tiny_config, "plan")


def test_the_folder_renamed_keeps_its_results_and_no_note(tmp_path, tiny_config):
    _setup(tmp_path, tiny_config)
    _manifest(tmp_path, "new")
    (tmp_path / "out" / "old").rename(tmp_path / "out" / "new")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job new: 2 item(s), 2 already done" in planned and "note:" not in planned, planned


def test_no_note_for_other_items_or_another_job_of_the_run(tmp_path, tiny_config):
    _setup(tmp_path, tiny_config)
    _manifest(tmp_path, "new", prompt="q")  # other items: nothing made before
    assert "note:" not in run_manifest(tmp_path, tiny_config, "plan")
    _manifest(tmp_path, "old", "twin")  # the same items in two jobs of a run: the folder is the run's own
    assert "note:" not in run_manifest(tmp_path, tiny_config, "plan")
