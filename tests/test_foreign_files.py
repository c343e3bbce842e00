"""A run never destroys a file it did not make: a file at a result's (or caption's) name that no record of the job
names, or a result changed since it was recorded, moves to `.batch-edit/pruned/` before the run writes there, and
the run's summary names it. An image put back from `pruned/` gets its record again at the next run, so deleting it
later is a deletion like any other, also where no prune ran in between."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import batch_edit, image_file


def _manifest(tmp_path, sources: str = "[photo1.png, photo2.png]", captions: bool = False) -> None:
    output = ", captions: true" if captions else ""
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: ds, sources: {sources}, prompts: 'a fox', seed: 5, file_name: '{{stem}}_edit',\n"
        f"     width: 64, height: 64, num_inference_steps: 2, strength: 0.5{output}}}\n"
    )


def _command(tmp_path, config, *args: str):
    return batch_edit(*args, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _sources(tmp_path) -> None:
    for number, name in enumerate(("photo1", "photo2", "photo3")):
        image_file(tmp_path / f"{name}.png", size=(64, 64), color=(90 * number, 90, 200))


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / ".batch-edit" / "records.jsonl").read_text().splitlines()]


def _listed(folder) -> list[str]:
    return pd.read_csv(folder / "metadata.csv", dtype=str)["file_name"].tolist()


def test_a_users_file_at_a_result_name_is_moved_aside_and_never_taken_for_a_result(tmp_path, tiny_config):
    _sources(tmp_path)
    _manifest(tmp_path)
    folder, pruned = tmp_path / "out" / "ds", tmp_path / "out" / "ds" / ".batch-edit" / "pruned"
    folder.mkdir(parents=True)
    mine = image_file(folder / "photo1_edit.png", size=(32, 32), color=(1, 2, 3)).read_bytes()
    (folder / "photo2_edit.txt").write_text("my own caption")  # the job writes no captions: left alone
    output = _ok(_command(tmp_path, tiny_config, "run"))
    assert (pruned / "photo1_edit.png").read_bytes() == mine  # kept whole, under its own name
    assert (folder / "photo2_edit.txt").read_text() == "my own caption"
    assert (folder / "photo1_edit.png").read_bytes() != mine
    moved = "job ds: moved 1 file(s) it did not make (or changed since it made them) to .batch-edit/pruned/"
    assert output.count(moved) == 1 and output.count("photo1_edit.png") == 1
    # the log names the run's results only; listing, prune, plan and reproduce see them, never the moved file
    assert [r["file_name"] for r in _records(folder)] == ["photo1_edit.png", "photo2_edit.png"]
    assert _listed(folder) == ["photo1_edit.png", "photo2_edit.png"]
    assert "moved 0, rejected 0, kept 2" in _ok(_command(tmp_path, tiny_config, "prune"))
    assert (pruned / "photo1_edit.png").read_bytes() == mine and sorted(p.name for p in pruned.iterdir()) == [
        "photo1_edit.png"
    ]
    assert "2 already done" in _ok(_command(tmp_path, tiny_config, "plan"))
    assert "moved" not in _ok(_command(tmp_path, tiny_config, "run"))  # nothing more to move: said once
    item = _records(folder)[0]["item_id"]
    reproduced = batch_edit(
        "reproduce", str(folder / "metadata.csv"), "--item", item, "--pipeline", str(tiny_config), cwd=tmp_path
    )
    assert reproduced.returncode == 0 and "identical" in reproduced.stdout, reproduced.stdout + reproduced.stderr


def test_a_result_changed_since_it_was_made_is_moved_aside_never_over_an_earlier_moved_file(tmp_path, tiny_config):
    _sources(tmp_path)
    _manifest(tmp_path, "photo1.png")
    folder, pruned = tmp_path / "out" / "ds", tmp_path / "out" / "ds" / ".batch-edit" / "pruned"
    folder.mkdir(parents=True)
    first = image_file(folder / "photo1_edit.png", size=(32, 32), color=(1, 2, 3)).read_bytes()
    _ok(_command(tmp_path, tiny_config, "run"))
    # retouched in place by another tool: not the size recorded, so made again, and the retouch kept
    retouched = image_file(folder / "photo1_edit.png", size=(64, 64), color=(9, 9, 9)).read_bytes()
    output = _ok(_command(tmp_path, tiny_config, "run"))
    assert "job ds: 1 written" in output and "photo1_edit.png (as photo1_edit~2.png)" in output
    assert (pruned / "photo1_edit.png").read_bytes() == first
    assert (pruned / "photo1_edit~2.png").read_bytes() == retouched
    assert (folder / "photo1_edit.png").read_bytes() not in (first, retouched)
    # --overwrite writes over the run's own result as recorded: nothing moves
    assert "moved" not in _ok(_command(tmp_path, tiny_config, "run", "--overwrite"))
    assert len(list(pruned.iterdir())) == 2


def test_a_users_caption_and_image_pair_move_together_and_a_lone_caption_stays_unwritten(tmp_path, tiny_config):
    _sources(tmp_path)
    _manifest(tmp_path, captions=True)
    folder, pruned = tmp_path / "out" / "ds", tmp_path / "out" / "ds" / ".batch-edit" / "pruned"
    folder.mkdir(parents=True)
    (folder / "photo1_edit.txt").write_text("my own caption")  # no image beside it: stays, never rewritten
    pair = image_file(folder / "photo2_edit.png", size=(32, 32)).read_bytes()
    (folder / "photo2_edit.txt").write_text("my caption of my image")
    output = _ok(_command(tmp_path, tiny_config, "run"))
    assert "moved 2 file(s)" in output
    assert (pruned / "photo2_edit.png").read_bytes() == pair
    assert (pruned / "photo2_edit.txt").read_text() == "my caption of my image"
    assert [(folder / f"photo{n}_edit.txt").read_text() for n in (1, 2)] == ["my own caption", "a fox"]
    # a caption the job wrote is its own: rewritten by --overwrite; one edited by hand stays as it is
    (folder / "photo2_edit.txt").write_text("a fox, edited")
    output = _ok(_command(tmp_path, tiny_config, "run", "--overwrite"))
    assert "moved" not in output and (folder / "photo2_edit.txt").read_text() == "a fox, edited"
    assert len(list(pruned.iterdir())) == 2


@pytest.mark.parametrize("other_work", [False, True], ids=["nothing-else-to-run", "another-item-runs"])
def test_an_image_put_back_then_deleted_with_no_prune_between_is_rejected_like_any_other(
    tmp_path, tiny_config, other_work
):
    _sources(tmp_path)
    folder, pruned = tmp_path / "out" / "ds", tmp_path / "out" / "ds" / ".batch-edit" / "pruned"
    _manifest(tmp_path)
    _ok(_command(tmp_path, tiny_config, "run"))
    _manifest(tmp_path, "photo1.png")
    assert "moved 1, rejected 0, kept 1" in _ok(_command(tmp_path, tiny_config, "prune"))
    (pruned / "photo2_edit.png").rename(folder / "photo2_edit.png")  # wanted after all
    _manifest(tmp_path, "[photo1.png, photo2.png, photo3.png]" if other_work else "[photo1.png, photo2.png]")
    output = _ok(_command(tmp_path, tiny_config, "run"))  # finds it done, and records it as put back
    assert f"job ds: {int(other_work)} written, 2 already done" in output
    (folder / "photo2_edit.png").unlink()  # not wanted after all
    assert "1 deleted (the next run makes them again" in _ok(_command(tmp_path, tiny_config, "prune", "--dry-run"))
    assert "rejected 1" in _ok(_command(tmp_path, tiny_config, "prune", "--rejected"))
    assert "1 rejected" in _ok(_command(tmp_path, tiny_config, "plan"))
