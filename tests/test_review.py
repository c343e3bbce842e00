"""Interactions between features: the run's output root against every manifest's sources, reproduce's word on a
failed item against failures.csv, reproduce's mask as given that is no longer a file."""

from __future__ import annotations

import shutil

from .conftest import PHOTOS, batch_edit


def test_a_manifest_without_output_root_is_judged_against_the_root_another_manifest_gives_the_run(
    tmp_path, tiny_config
):
    (tmp_path / "ws" / "photos").mkdir(parents=True)
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "ws" / "photos" / "cat.jpg")
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "a.yaml").write_text(
        "output_root: ws\njobs:\n  - {name: first, sources: photo.jpg, prompts: a tiger}\n"
    )
    # no output_root of its own: its job folder is ws/photos all the same, since the run writes into ws
    (tmp_path / "b.yaml").write_text("jobs:\n  - {name: photos, sources: ws/photos/, prompts: a tiger}\n")
    result = batch_edit("plan", "a.yaml", "b.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "b.yaml: jobs[0] ('photos'): field 'sources[0]': source 'ws/photos/' is this job's own output" in result.stderr
    )


def test_a_failed_item_no_longer_planned_is_not_said_to_be_in_failures_csv(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    job = "jobs:\n  - {{name: j, sources: {}, prompts: a tiger, num_inference_steps: 2, width: 64, height: 64}}\n"
    (tmp_path / "job.yaml").write_text(job.format("[photo.jpg, broken.jpg]"))
    run = ("run", "job.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit(*run, cwd=tmp_path).returncode == 1
    folder = tmp_path / "out" / "j"
    failed = (folder / "failures.csv").read_text().splitlines()[1].split(",")[0]
    (tmp_path / "job.yaml").write_text(job.format("photo.jpg"))  # the broken source is planned no more
    assert batch_edit(*run, cwd=tmp_path).returncode == 0
    assert failed not in (folder / "failures.csv").read_text()
    result = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", failed)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"item {failed} failed in its latest run (load: " in result.stderr
    assert "failures.csv lists it" not in result.stderr
    assert "its record says so; failures.csv lists only planned items" in result.stderr


def test_a_mask_file_replaced_by_a_folder_is_a_one_line_refusal_not_a_traceback(tmp_path, tiny_task_config):
    from .test_repro2 import masked_run, one_line_refusal

    metadata, row = masked_run(tmp_path, tiny_task_config, keep=False)
    mask = tmp_path / "masks" / "photo.png"
    mask.unlink()
    mask.mkdir()
    result = batch_edit("reproduce", str(metadata), "--item", row.item_id)
    line = one_line_refusal(result)
    assert f"cannot load the mask {mask}: source '{mask}' is a folder" in line
