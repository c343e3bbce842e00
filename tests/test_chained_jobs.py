"""A job whose source is another job's folder: its items wait while that folder holds no results (made by this
run or left empty by failures), `plan --limit` counts as `run --limit` does, a job folder nothing will fill is
refused, and a job edits what its source folder holds once that job's items are made, in the same run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from .conftest import PHOTOS, batch_edit, image_file

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"


def chained(tmp_path: Path, a_sources: str, order: str = "ab") -> Path:
    jobs = {
        "a": f"  - {{name: a, sources: {a_sources}, prompts: a}}\n",
        "b": "  - {name: b, sources: out/a, prompts: 'b {stem}'}\n",
    }
    manifest = tmp_path / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + "".join(jobs[name] for name in order))
    return manifest


def with_cat(tmp_path: Path, jobs: str) -> Path:
    """cat.jpg beside a manifest of these job lines (after `jobs:`)."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + jobs)
    return manifest


def run(manifest: Path, config: Path, *extra: str):
    return batch_edit("run", str(manifest), "--pipeline", str(config), *extra)


def refused_by_plan_and_run(manifest: Path, config: Path, message: str) -> None:
    for command in ("plan", "run"):
        result = batch_edit(command, str(manifest), "--pipeline", str(config))
        assert result.returncode == 2 and message in result.stderr, result.stdout + result.stderr


def test_a_job_folder_its_failures_left_empty_makes_the_next_job_wait_again_not_refused(tmp_path, tiny_config):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    manifest = chained(tmp_path, "bad.png")
    for _ in range(2):  # the second run retries job a: its folder exists now, with no result in it
        result = run(manifest, tiny_config)
        assert result.returncode == 1, result.stdout + result.stderr  # job a's item failed
        assert "job b: 0 written, 0 already done, 0 failed, 1 to come from job a's results still to make (run" in (
            result.stdout
        )
    image_file(tmp_path / "bad.png")  # fixed: job a makes its result, then job b edits it, in the same run
    again = run(manifest, tiny_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "job a: 1 written" in again.stdout and "job b: 1 written" in again.stdout, again.stdout


def test_plan_limit_skips_waiting_items_as_run_limit_does(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    manifest = chained(tmp_path, "[cat.jpg, coffee.jpg]", order="ba")  # b first: its item waits
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config), "--limit", "1")
    assert plan.returncode == 0, plan.stderr
    # job b's items are those job a's two results will give: none runs with --limit 1, as in the run
    assert "--limit 1: 1 of 4 pending item(s) would run (2 of them to come from results made in the run)" in (
        plan.stdout
    )
    assert "job b: 0 item(s) and 2 to come from job a's results still to make" in plan.stdout
    assert "estimate: none of its 2 pending item(s) would run with --limit 1" in plan.stdout
    result = run(manifest, tiny_config, "--limit", "1")
    assert "job a: 1 written" in result.stdout, result.stdout + result.stderr
    assert "job b: 0 written" in result.stdout, result.stdout + result.stderr


def test_a_job_folder_no_job_of_the_run_fills_is_refused(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert run(chained(tmp_path, "bad.png"), tiny_config).returncode == 1  # job a's folder: records, no result
    alone = tmp_path / "b.yaml"
    alone.write_text("output_root: out\n" + SMALL + "jobs:\n  - {name: b, sources: out/a, prompts: b}\n")
    refused_by_plan_and_run(
        alone,
        tiny_config,
        f"source {tmp_path / 'out' / 'a'} is a job folder holding no results (or none yet), and no job of "
        "this run makes them",
    )


def test_a_job_editing_another_jobs_results_edits_the_new_ones_in_the_same_run(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    manifest = chained(tmp_path, "cat.jpg")
    assert run(manifest, tiny_config).returncode == 0
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    manifest.write_text(manifest.read_text().replace("sources: cat.jpg", "sources: [cat.jpg, coffee.jpg]"))
    result = run(manifest, tiny_config)
    assert result.returncode == 0, result.stderr
    assert "job a: 1 written" in result.stdout and "job b: 1 written, 1 already done" in result.stdout
    assert len(pd.read_csv(tmp_path / "out" / "b" / "metadata.csv")) == 2
    assert "job b: 0 written, 2 already done" in run(manifest, tiny_config).stdout


def test_prune_says_nothing_of_what_a_run_would_leave_waiting(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    manifest = chained(tmp_path, "cat.jpg")
    pruned = batch_edit("prune", str(manifest), "--pipeline", str(tiny_config), "--dry-run")
    assert pruned.returncode == 0, pruned.stderr
    assert not re.search(r"waiting|holds no results|next run", pruned.stderr), pruned.stderr


def test_a_glob_or_a_file_of_another_jobs_folder_waits_as_the_folder_does(tmp_path, tiny_config):
    manifest = with_cat(
        tmp_path,
        "  - {name: a, sources: cat.jpg, prompts: a, file_name: '{stem}'}\n"
        "  - {name: b, sources: 'out/a/*.png', prompts: b}\n  - {name: c, sources: out/a/cat.png, prompts: c}\n",
    )
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "missing" not in plan.stdout and plan.stdout.count("waiting: 1 item(s)") == 1  # job c's file
    assert "job b: 0 item(s) and 1 to come from job a's results still to make" in plan.stdout  # the glob's
    assert "job c: 1 item(s), 0 already done" in plan.stdout  # the file it names: nothing more to come
    assert f"source {tmp_path / 'out' / 'a' / 'cat.png'} is a result of job a in this run, not made yet" in plan.stderr
    first = run(manifest, tiny_config)  # job a's result first, then b and c edit it
    assert first.returncode == 0, first.stdout + first.stderr
    assert "job b: 1 written" in first.stdout and "job c: 1 written" in first.stdout, first.stdout


def test_a_job_reading_captions_of_a_folder_not_made_yet_waits_instead_of_refusing(tmp_path, tiny_config):
    manifest = with_cat(
        tmp_path,
        "  - {name: a, sources: cat.jpg, prompts: a tiger, captions: true}\n"
        "  - {name: b, sources: out/a, prompts: '{caption}, then b'}\n",
    )
    first = run(manifest, tiny_config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "job b: 1 written" in first.stdout, first.stdout + first.stderr
    assert list(pd.read_csv(tmp_path / "out" / "b" / "metadata.csv")["prompt"]) == ["a tiger, then b"]


def test_a_glob_of_a_job_folder_nothing_fills_is_refused(tmp_path, tiny_config):
    alone = tmp_path / "b.yaml"
    alone.write_text("output_root: out\n" + SMALL + "jobs:\n  - {name: b, sources: 'out/a/*.png', prompts: b}\n")
    result = batch_edit("plan", str(alone), "--pipeline", str(tiny_config))
    assert result.returncode == 2 and "holding no results (or none yet), and no job of this run makes them" in (
        result.stderr
    ), result.stderr


def test_a_glob_or_file_naming_no_result_of_a_finished_job_is_no_wait(tmp_path, tiny_config):
    manifest = with_cat(tmp_path, "  - {name: a, sources: cat.jpg, prompts: a, file_name: '{stem}'}\n")
    assert run(manifest, tiny_config).returncode == 0  # job a is done: it makes nothing more
    for spec, refused in (("'out/a/dog*.webp'", True), ("out/a/cat-typo.png", False)):
        manifest.write_text(manifest.read_text() + f"  - {{name: b, sources: {spec}, prompts: b}}\n")
        result = run(manifest, tiny_config)
        assert "left for later" not in result.stdout, result.stdout
        if refused:  # a glob of an existing job folder matching none of its results is a mistake, as any glob
            assert result.returncode == 2 and "matches no image" in result.stderr, result.stderr
        else:  # a file that is not there: its item's failure
            assert result.returncode == 1 and "job b: 0 written, 0 already done, 1 failed (file not found: 1)" in (
                result.stdout
            ), result.stdout + result.stderr
        manifest.write_text(manifest.read_text().rsplit("  - {name: b", 1)[0])


def test_an_image_in_the_output_root_is_a_source_like_any_other(tmp_path, tiny_config):
    (tmp_path / "out").mkdir()
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "out" / "cat.jpg")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "output_root: out\n" + SMALL + "jobs:\n  - {name: a, sources: [out/cat.jpg, out/gone.png], prompts: a}\n"
    )
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert plan.returncode == 1 and f"missing: 1 of 2 source file(s): {tmp_path / 'out' / 'gone.png'}" in plan.stdout


def test_many_sources_waiting_for_one_job_are_one_warning(tmp_path, tiny_config):
    names = "[" + ", ".join(f"out/a/r{n}.png" for n in range(5)) + "]"
    manifest = with_cat(
        tmp_path,
        "  - {name: a, sources: cat.jpg, prompts: a, file_name: '{stem}'}\n"
        f"  - {{name: b, sources: {names}, prompts: b}}\n",
    )
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    (line,) = [line for line in plan.stderr.splitlines() if "not made yet" in line]
    assert f"sources {tmp_path / 'out' / 'a' / 'r0.png'} and 4 more are results of job a in this run" in line
    assert "waiting: 5 item(s)" in plan.stdout


def test_a_prune_dry_run_of_a_folder_a_stopped_run_left_without_records(tmp_path, tiny_config):
    manifest = with_cat(tmp_path, "  - {name: a, sources: cat.jpg, prompts: a}\n")
    (tmp_path / "out" / "a" / ".batch-edit").mkdir(parents=True)  # a run killed while loading leaves this
    result = batch_edit("prune", str(manifest), "--pipeline", str(tiny_config), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_job_folder_whose_job_has_only_rejected_items_is_refused_not_failed_as_a_folder(tmp_path, tiny_config):
    manifest = with_cat(tmp_path, "  - {name: a, sources: cat.jpg, prompts: a}\n")
    assert run(manifest, tiny_config).returncode == 0
    for result in (tmp_path / "out" / "a").glob("*.png"):
        result.unlink()
    assert "rejected 1" in batch_edit("prune", str(manifest), "--pipeline", str(tiny_config), "--rejected").stdout
    manifest.write_text(manifest.read_text() + "  - {name: b, sources: out/a, prompts: b}\n")
    refused_by_plan_and_run(
        manifest,
        tiny_config,
        f"job b: source {tmp_path / 'out' / 'a'} is job a's folder, which holds no results, and job a has nothing "
        "left to make",
    )
    assert not (tmp_path / "out" / "b").exists()
    result = run(manifest, tiny_config, "--overwrite")  # job a makes its item again, then job b edits it
    assert "job a: 1 written" in result.stdout and "job b: 1 written" in result.stdout, result.stdout


def test_results_the_first_job_makes_again_are_waited_for_not_failed_as_changed(tmp_path, tiny_config):
    manifest = with_cat(
        tmp_path, "  - {name: a, sources: cat.jpg, prompts: a}\n  - {name: b, sources: out/a, prompts: b}\n"
    )
    assert "job b: 1 written" in run(manifest, tiny_config).stdout  # edits job a's result, once made
    again = run(manifest, tiny_config, "--overwrite")  # job a makes its result again: job b waits for the new one
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is a result job a makes again in this run" in again.stderr
    assert "job b: 1 written" in again.stdout and "failed (" not in again.stdout, again.stdout
    assert len(pd.read_csv(tmp_path / "out" / "b" / "metadata.csv")) == 1


def test_plan_counts_what_a_partly_filled_folder_of_a_job_still_making_results_adds_as_the_run_does(
    tmp_path, tiny_config
):
    for stem in ("x", "y", "z"):
        image_file(tmp_path / "img" / f"{stem}.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "output_root: out\n" + SMALL + "jobs:\n  - {name: a, sources: img/, prompts: a, strength: [0.5, 0.6]}\n"
        "  - {name: b, sources: out/a, prompts: b}\n"
    )
    assert "job a: 2 written" in run(manifest, tiny_config, "--limit", "2").stdout  # 2 of its 6 results
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # job b edits the 2 results there now, then the 4 job a makes in the run, one item each
    assert "job b: 2 item(s) and 4 to come from job a's results still to make, 0 already done" in plan.stdout
    assert "total: 12 item(s) in 2 job(s), 4 of them to come from results made in the run" in plan.stdout
    limited = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config), "--limit", "5")
    assert "--limit 5: 5 of 10 pending item(s) would run" in limited.stdout, limited.stdout
    result = run(manifest, tiny_config, "--limit", "5")  # job a's 4, then job b's first one
    assert "job a: 4 written" in result.stdout and "job b: 1 written" in result.stdout, result.stdout
    assert "total: 5 written, 0 failed, 5 left for later" in result.stdout, result.stdout
    assert (
        "job b: 6 item(s), 1 already done" in batch_edit("plan", str(manifest), "--pipeline", str(tiny_config)).stdout
    )


def test_plan_estimates_the_items_to_come_from_results_made_in_the_run(tmp_path, tiny_config):
    manifest = with_cat(
        tmp_path, "  - {name: a, sources: cat.jpg, prompts: a}\n  - {name: b, sources: out/a, prompts: b}\n"
    )
    assert "job b: 1 written" in run(manifest, tiny_config).stdout  # timings for job b's items
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    manifest.write_text(manifest.read_text().replace("sources: cat.jpg", "sources: [cat.jpg, coffee.jpg]"))
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert "job b: 1 item(s) and 1 to come from job a's results still to make, 1 already done" in plan.stdout
    estimates = [line for line in plan.stdout.splitlines() if line.startswith("  estimate:")]
    assert len(estimates) == 2 and all(" for 1 item(s) at " in line for line in estimates), plan.stdout
    result = run(manifest, tiny_config)
    assert "job a: 1 written" in result.stdout and "job b: 1 written, 1 already done" in result.stdout


def test_plan_counts_only_the_results_to_come_that_a_readers_glob_takes(tmp_path, tiny_config):
    image_file(tmp_path / "x.png")
    manifest = with_cat(
        tmp_path, "  - {name: a, sources: [cat.jpg, coffee.jpg, x.png], prompts: a, file_name: '{stem}'}\n"
    )
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "coffee.jpg")
    assert "job a: 1 written" in run(manifest, tiny_config, "--limit", "1").stdout  # cat.png
    manifest.write_text(manifest.read_text() + "  - {name: b, sources: 'out/a/c*.png', prompts: b}\n")
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config))
    assert "job b: 1 item(s) and 1 to come from job a's results still to make" in plan.stdout, plan.stdout  # coffee
    assert "total: 5 item(s) in 2 job(s), 1 of them to come from results made in the run" in plan.stdout
    result = run(manifest, tiny_config)
    assert "job a: 2 written" in result.stdout and "job b: 2 written" in result.stdout, result.stdout
