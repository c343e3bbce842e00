"""`plan` and `run` say, per job and before anything runs, what only `prune` revealed before: results of items the
plan no longer has (kept until `prune` moves them out), a folder whose every result was made with another pipeline
config (every item made again beside them), and results deleted by hand (made again unless `prune --rejected`).
Each only where it applies: a new job, an unchanged rerun, archived items get none."""

from __future__ import annotations

import shutil

import pandas as pd

from .conftest import PHOTOS, batch_edit, noise_image, run_manifest, write_pipeline_config

LEFTOVER = "result(s) of items the plan no longer has stay as they are"
OTHER_CONFIG = "result(s) in this folder were made with another pipeline config than this one"
DELETED = "result(s) deleted by hand will be made again"


def _sweep(tmp_path, strengths: str) -> None:
    (tmp_path / "m.yaml").write_text(
        "jobs:\n"
        f"  - {{name: sw, sources: {PHOTOS / 'cat.jpg'}, prompts: x, strength: {strengths}, seed: 1,\n"
        "     width: 32, height: 32, num_inference_steps: 2}\n"
    )


def _rows(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "out" / "sw" / "metadata.csv", dtype=str)


def _notes(text: str) -> list[str]:
    return [line for line in text.splitlines() if "note:" in line]


def test_results_no_longer_planned_are_noted_until_prune_moves_them(tmp_path, tiny_config):
    _sweep(tmp_path, "[0.5, 0.7, 0.9]")
    assert _notes(run_manifest(tmp_path, tiny_config, "plan")) == []  # a new job
    assert _notes(run_manifest(tmp_path, tiny_config, "run")) == []
    assert _notes(run_manifest(tmp_path, tiny_config, "plan")) == []  # nothing changed
    names = dict(zip(_rows(tmp_path).strength.astype(float), _rows(tmp_path).file_name))
    _sweep(tmp_path, "[0.5]")  # the sweep narrowed: two results no longer planned

    planned = run_manifest(tmp_path, tiny_config, "plan")
    note = f"  note: 2 {LEFTOVER} ({names[0.7]}, {names[0.9]}; listed last in metadata.csv, without a position, until"
    assert note in planned, planned
    assert "`batch-edit prune MANIFEST...` (with this --pipeline) moves them to .batch-edit/pruned/" in planned
    assert DELETED not in planned and OTHER_CONFIG not in planned, planned

    ran = run_manifest(tmp_path, tiny_config, "run")
    assert f"note: job sw: 2 {LEFTOVER} ({names[0.7]}, {names[0.9]};" in ran, ran
    rows = _rows(tmp_path)  # as the note says: kept, listed last without a position
    assert rows.file_name.tolist() == [names[0.5], names[0.7], names[0.9]]
    assert rows["index"].isna().tolist() == [False, True, True]
    assert all((tmp_path / "out" / "sw" / name).is_file() for name in names.values())

    assert "moved 2" in run_manifest(tmp_path, tiny_config, "prune")
    assert LEFTOVER not in run_manifest(tmp_path, tiny_config, "plan")
    assert LEFTOVER not in run_manifest(tmp_path, tiny_config, "run")


def test_archived_items_are_no_leftovers(tmp_path, tiny_config):
    """A source deleted once its items are done (archived on purpose): prune keeps its result, so no note does."""
    noise_image(tmp_path / "img" / "a.png", 1)
    noise_image(tmp_path / "img" / "b.png", 2)
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: ar, sources: img/, prompts: x, width: 32, height: 32, num_inference_steps: 2, strength: 0.5}\n"
    )
    run_manifest(tmp_path, tiny_config, "run")
    (tmp_path / "img" / "b.png").unlink()
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "2 item(s), 2 already done" in planned, planned
    assert LEFTOVER not in planned and DELETED not in planned, planned
    assert LEFTOVER not in run_manifest(tmp_path, tiny_config, "run")
    assert "moved 0, rejected 0, kept 2" in run_manifest(tmp_path, tiny_config, "prune")
    # its result deleted too: no run can make it again, so none "will be made again"
    archived = pd.read_csv(tmp_path / "out" / "ar" / "metadata.csv", dtype=str)
    (tmp_path / "out" / "ar" / archived[archived.source.str.endswith("b.png")].file_name.iloc[0]).unlink()
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    planned = result.stdout + result.stderr
    assert "missing: 1 of 2 source file(s)" in planned, planned  # said there instead
    assert DELETED not in planned and LEFTOVER not in planned, planned


def test_a_folder_made_with_another_pipeline_config_is_noted_once(tmp_path, tiny_config, tiny_model):
    _sweep(tmp_path, "[0.5, 0.7]")
    run_manifest(tmp_path, tiny_config, "run")
    other = write_pipeline_config(tmp_path / "tiled.yaml", tiny_model, vae_tiling="true")

    planned = run_manifest(tmp_path, other, "plan")
    note = [line for line in _notes(planned) if OTHER_CONFIG in line]
    assert len(note) == 1, planned
    assert f"all 2 {OTHER_CONFIG}, " in note[0] and f" (model {tiny_model}): " in note[0], note
    assert "every item will be made again beside them (they stay; prune refuses to move them all out" in note[0]
    assert "a separate output_root or job name keeps the two apart" in note[0]
    assert LEFTOVER not in planned and DELETED not in planned, planned  # not listed again as leftovers

    ran = run_manifest(tmp_path, other, "run")
    assert f"note: job sw: all 2 {OTHER_CONFIG}" in ran, ran
    assert "2 written" in ran and LEFTOVER not in ran, ran
    assert len(list((tmp_path / "out" / "sw").glob("cat-*.png"))) == 4  # the old results stayed
    # now a folder of both configs: for each, the other's results are leftovers prune would move
    assert OTHER_CONFIG not in run_manifest(tmp_path, other, "plan")
    assert f"2 {LEFTOVER}" in run_manifest(tmp_path, tiny_config, "plan")


def test_results_deleted_by_hand_are_noted_unless_rejected_or_overwriting(tmp_path, tiny_config):
    _sweep(tmp_path, "[0.5, 0.7]")
    run_manifest(tmp_path, tiny_config, "run")
    name = _rows(tmp_path).file_name[1]
    (tmp_path / "out" / "sw" / name).unlink()

    planned = run_manifest(tmp_path, tiny_config, "plan")
    note = f"  note: 1 {DELETED} ({name}): `batch-edit prune --rejected MANIFEST...` records them as unwanted"
    assert note in planned, planned
    assert LEFTOVER not in planned and OTHER_CONFIG not in planned, planned

    kept = tmp_path / "kept"
    shutil.copytree(tmp_path / "out", kept)
    overwritten = run_manifest(tmp_path, tiny_config, "run", "--overwrite")  # every item runs: nothing to reject
    assert DELETED not in overwritten and "2 written" in overwritten, overwritten
    shutil.rmtree(tmp_path / "out")
    shutil.copytree(kept, tmp_path / "out")

    ran = run_manifest(tmp_path, tiny_config, "run")
    assert f"note: job sw: 1 {DELETED} ({name})" in ran and "1 written, 1 already done" in ran, ran
    assert DELETED not in run_manifest(tmp_path, tiny_config, "plan")  # made again: nothing deleted now

    (tmp_path / "out" / "sw" / name).unlink()
    assert "rejected 1" in run_manifest(tmp_path, tiny_config, "prune", "--rejected")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert DELETED not in planned and "1 rejected" in planned, planned
    assert DELETED not in run_manifest(tmp_path, tiny_config, "run")


def test_an_unchanged_rerun_asks_prune_nothing_and_reads_no_result(tmp_path, tiny_config, monkeypatch):
    """prune's decision looks at every result: `plan` and `run` ask it only where a note may apply."""
    from batch_edit import prune
    from batch_edit.records import JobRecords

    _sweep(tmp_path, "[0.5, 0.7]")
    run_manifest(tmp_path, tiny_config, "run")

    def refused(*args, **kwargs):
        raise AssertionError("asked for nothing to note")

    monkeypatch.setattr(prune, "_decide", refused)
    monkeypatch.setattr(JobRecords, "_sha256", refused)
    assert "2 already done" in run_manifest(tmp_path, tiny_config, "plan")
    assert "nothing to do" in run_manifest(tmp_path, tiny_config, "run")


def test_a_result_whose_name_a_pending_item_takes_is_noted_as_moving_not_as_staying(tmp_path, tiny_config):
    """Under `{stem}` a prompt edited gives the new item the old result's name: the run moves that result out first
    (name_notes says so), so it is not one that stays."""
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: sw, sources: {PHOTOS / 'cat.jpg'}, prompts: fox, file_name: '{{stem}}', width: 32,\n"
        "     height: 32, num_inference_steps: 2, strength: 0.5}\n"
    )
    run_manifest(tmp_path, tiny_config, "run")
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("fox", "owl"))
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "1 earlier result(s) of other items (with any caption files) will move" in planned, planned
    assert LEFTOVER not in planned, planned
