"""Nothing made is lost to a name reused or a pipeline config forgotten: a run never writes a result over another
item's (it moves that one into `.batch-edit/pruned/` first), `prune` never moves a planned item's result, refuses
to empty a job folder whose results were all made with another pipeline config, and treats an image put back after
a prune like any other finished one."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from .conftest import PHOTOS, batch_edit, image_file


def _manifest(tmp_path, sources: str, file_name: str, prompts: str = "x", pipeline: str = "") -> None:
    (tmp_path / "m.yaml").write_text(
        f"{pipeline}jobs:\n"
        f"  - {{name: ds, sources: {sources}, prompts: {prompts}, seed: 5, file_name: '{file_name}',\n"
        "     width: 64, height: 64, num_inference_steps: 2, strength: 0.5}\n"
    )


def _command(tmp_path, config, *args: str):
    pipeline = ("--pipeline", str(config)) if config else ()
    return batch_edit(*args, "m.yaml", *pipeline, "--output-root", "out", cwd=tmp_path)


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _images(tmp_path) -> None:
    for number, name in enumerate("abc"):
        image_file(tmp_path / f"{name}.png", size=(64, 64), color=(80 * number, 90, 200))


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


def _listed(folder) -> list[str]:
    return pd.read_csv(folder / "metadata.csv", dtype=str)["file_name"].tolist()


def _run_a_b_then_a_c(tmp_path, config) -> tuple[bytes, bytes]:
    """{index:04d} names: b's result is 0001.png, then c (in b's place) is given 0001.png. Both 0001.png's bytes."""
    _images(tmp_path)
    _manifest(tmp_path, "[a.png, b.png]", "{index:04d}")
    _ok(_command(tmp_path, config, "run"))
    first = (tmp_path / "out" / "ds" / "0001.png").read_bytes()
    _manifest(tmp_path, "[a.png, c.png]", "{index:04d}")
    _ok(_command(tmp_path, config, "run"))
    return first, (tmp_path / "out" / "ds" / "0001.png").read_bytes()


def test_a_run_moves_out_the_result_of_an_item_no_longer_planned_before_writing_under_its_name(tmp_path, tiny_config):
    b_result, c_result = _run_a_b_then_a_c(tmp_path, tiny_config)
    folder = tmp_path / "out" / "ds"
    assert b_result != c_result
    assert (folder / ".batch-edit" / "pruned" / "0001.png").read_bytes() == b_result  # kept, not written over
    b_id = _records(folder)[1]["item_id"]
    marks = [r for r in _records(folder) if r["status"] == "pruned"]
    assert [(r["item_id"], r["pruned_to"]) for r in marks] == [(b_id, ".batch-edit/pruned/0001.png")]
    assert _listed(folder) == ["0000.png", "0001.png"]
    # prune finds nothing to move: c's result stays, b is recorded as pruned already
    assert "moved 0, rejected 0, kept 2 ->" in _ok(_command(tmp_path, tiny_config, "prune"))
    assert (folder / "0001.png").read_bytes() == c_result and _listed(folder) == ["0000.png", "0001.png"]
    assert "2 already done" in _ok(_command(tmp_path, tiny_config, "plan"))


def test_prune_records_an_item_whose_file_a_planned_result_replaced_without_moving_that_result(tmp_path, tiny_config):
    _, c_result = _run_a_b_then_a_c(tmp_path, tiny_config)
    folder = tmp_path / "out" / "ds"
    # the folder as runs that wrote over another item's result left it: no move, no "pruned" record
    lines = (folder / ".batch-edit" / "records.jsonl").read_text().splitlines(keepends=True)
    (folder / ".batch-edit" / "records.jsonl").write_text("".join(x for x in lines if '"pruned"' not in x))
    shutil.rmtree(folder / ".batch-edit" / "pruned")
    b_id = _records(folder)[1]["item_id"]
    dry = _ok(_command(tmp_path, tiny_config, "prune", "--dry-run"))
    assert "would move 0, would reject 0, kept 2, 1 would be pruned without moving" in dry
    assert f"would record item {b_id} as pruned without moving 0001.png" in dry
    assert "would move 0001.png" not in dry
    result = _ok(_command(tmp_path, tiny_config, "prune"))
    assert "moved 0, rejected 0, kept 2, 1 pruned without moving (their files hold planned results now)" in result
    assert (folder / "0001.png").read_bytes() == c_result and not (folder / ".batch-edit" / "pruned").exists()
    assert _listed(folder) == ["0000.png", "0001.png"]
    assert [r["pruned_to"] for r in _records(folder) if r["status"] == "pruned"] == [None]
    assert "moved 0, rejected 0, kept 2 ->" in _ok(_command(tmp_path, tiny_config, "prune"))  # nothing left
    assert "2 already done" in _ok(_command(tmp_path, tiny_config, "plan"))


def test_a_changed_prompt_under_a_stem_name_moves_the_earlier_result_out_first(tmp_path, tiny_config):
    _images(tmp_path)
    folder = tmp_path / "out" / "ds"
    _manifest(tmp_path, "a.png", "{stem}", prompts="'a fox'")
    _ok(_command(tmp_path, tiny_config, "run"))
    first = (folder / "a.png").read_bytes()
    _manifest(tmp_path, "a.png", "{stem}", prompts="'a cat'")
    _ok(_command(tmp_path, tiny_config, "run"))
    assert (folder / ".batch-edit" / "pruned" / "a.png").read_bytes() == first
    assert (folder / "a.png").read_bytes() != first
    assert "moved 0, rejected 0, kept 1 ->" in _ok(_command(tmp_path, tiny_config, "prune"))
    assert _listed(folder) == ["a.png"] and (folder / "a.png").is_file()


def test_prune_refuses_to_move_every_result_made_with_another_pipeline_config(tmp_path, tiny_config, tiny_model):
    shutil.copyfile(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    _manifest(tmp_path, "a.jpg", "{stem}-{id}", prompts="[red, blue]")
    _ok(_command(tmp_path, tiny_config, "run"))
    folder = tmp_path / "out" / "ds"
    names = sorted(p.name for p in folder.glob("a-*.png"))
    for extra in ((), ("--dry-run",)):  # the --pipeline of the run forgotten: the built-in default plans
        refused = _command(tmp_path, None, "prune", *extra)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "job ds: prune would move all 2 result(s)" in refused.stderr
        assert f"(model {tiny_model})" in refused.stderr  # the config the results were made with
        assert "pass the run's --pipeline, or --config-changed" in refused.stderr
        assert sorted(p.name for p in folder.glob("a-*.png")) == names and len(_listed(folder)) == 2
    assert "moved 0, rejected 0, kept 2" in _ok(_command(tmp_path, tiny_config, "prune"))  # the run's config
    # a config changed on purpose: every result moves out when asked to
    moved = _ok(_command(tmp_path, None, "prune", "--config-changed"))
    assert "moved 2, rejected 0, kept 0" in moved
    assert not list(folder.glob("a-*.png")) and len(list((folder / ".batch-edit" / "pruned").glob("a-*.png"))) == 2


def test_an_image_put_back_after_a_prune_then_deleted_is_rejected_like_any_other(tmp_path, tiny_config):
    shutil.copyfile(PHOTOS / "cat.jpg", tmp_path / "a.jpg")
    folder = tmp_path / "out" / "ds"
    _manifest(tmp_path, "a.jpg", "{stem}-{id}", prompts="[red, blue]")
    _ok(_command(tmp_path, tiny_config, "run"))
    _manifest(tmp_path, "a.jpg", "{stem}-{id}", prompts="[red]")
    assert "moved 1, rejected 0, kept 1" in _ok(_command(tmp_path, tiny_config, "prune"))
    (put_back,) = (folder / ".batch-edit" / "pruned").glob("*.png")
    put_back.rename(folder / put_back.name)  # wanted after all
    _manifest(tmp_path, "a.jpg", "{stem}-{id}", prompts="[red, blue]")
    assert "2 already done" in _ok(_command(tmp_path, tiny_config, "plan"))
    assert "moved 0, rejected 0, kept 2" in _ok(_command(tmp_path, tiny_config, "prune"))
    (folder / put_back.name).unlink()  # not wanted after all
    assert "1 deleted (the next run makes them again" in _ok(_command(tmp_path, tiny_config, "prune", "--dry-run"))
    assert "moved 0, rejected 1, kept 1" in _ok(_command(tmp_path, tiny_config, "prune", "--rejected"))
    assert "1 already done, 1 rejected" in _ok(_command(tmp_path, tiny_config, "plan"))
