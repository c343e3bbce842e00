"""Resuming a folder whose history is months long: sources deleted after their items were done, a format
changed and changed back, an image put back after `prune --rejected`."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from .conftest import batch_edit, image_file, sweep_manifest

STRENGTHS = "[0.5, 0.6, 0.7]"


@pytest.fixture
def sweep(tmp_path, tiny_config):
    """`sweep(command, format, *flags)`: the sweep manifest written in `format`, then the command run on it."""

    def command(name: str, format: str = "png", *flags: str):
        (tmp_path / "m.yaml").write_text(sweep_manifest(strengths=STRENGTHS, format=format))
        return batch_edit(name, "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", *flags, cwd=tmp_path)

    command.config = tiny_config
    return command


def listed(folder) -> list[str]:
    return sorted(pd.read_csv(folder / "metadata.csv")["file_name"])


# --- missing sources: refused only where none of the plan's exists -------------------------------------------


def test_sources_deleted_after_a_run_fail_their_items_instead_of_refusing_the_run(tmp_path, tiny_config):
    for stem, color in (("a", 10), ("b", 90), ("c", 170)):
        image_file(tmp_path / f"{stem}.png", color=color)
    rows = "source,prompt,seed,width,height,num_inference_steps,strength\n"
    rows += "".join(f"{stem}.png,p {stem},1,64,48,2,0.5\n" for stem in "abc")
    (tmp_path / "rows.csv").write_text(rows)
    run = ("run", "rows.csv", "--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit(*run, cwd=tmp_path).returncode == 0
    made = pd.read_csv(tmp_path / "out" / "rows" / "metadata.csv")
    (tmp_path / "out" / "rows" / made.file_name[1]).unlink()  # b's result deleted: its item runs again
    (tmp_path / "b.png").unlink()  # the only pending item's source: the others are done from theirs
    resumed = batch_edit(*run, cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr
    assert "none of the" not in resumed.stderr and "1 failed" in resumed.stdout
    failures = pd.read_csv(tmp_path / "out" / "rows" / "failures.csv")
    assert list(failures["source"]) == [str(tmp_path / "b.png")]
    # --limit 1 reaching only the missing source's item: the run plan says would run, its failure recorded
    (tmp_path / "rows.csv").write_text(rows + "a.png,p new,1,64,48,2,0.5\n")
    plan = batch_edit("plan", *run[1:], "--limit", "1", cwd=tmp_path)
    assert "--limit 1: 1 of 2 pending item(s) would run" in plan.stdout
    limited = batch_edit(*run, "--limit", "1", cwd=tmp_path)
    assert limited.returncode == 1 and "1 failed" in limited.stdout, limited.stdout + limited.stderr
    assert "none of the" not in limited.stderr


# --- a format changed and changed back ----------------------------------------------------------------------


def test_a_format_changed_back_finds_its_results_done(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    pngs = listed(folder)
    before = {name: (folder / name).read_bytes() for name in pngs}
    assert "3 written" in sweep("run", "jpeg").stdout
    assert "3 item(s), 3 already done" in sweep("plan").stdout
    back = sweep("run")
    assert back.returncode == 0 and "nothing to do" in back.stdout, back.stdout
    assert listed(folder) == pngs
    dry = sweep("prune", "png", "--dry-run")
    moving = [line.split()[2] for line in dry.stdout.splitlines() if line.startswith("  would move ")]
    assert len(moving) == 3 and all(name.endswith(".jpg") for name in moving), dry.stdout
    assert all(f"(the job now writes {name})" in dry.stdout for name in pngs)
    pruned = sweep("prune")
    assert "moved 3, rejected 0, kept 3" in pruned.stdout, pruned.stdout
    assert {name: (folder / name).read_bytes() for name in pngs} == before  # the planned files stay, untouched
    assert all((folder / name).with_suffix(".txt").is_file() for name in pngs)  # and their captions
    assert not list(folder.glob("cat-*.jpg")) and listed(folder) == pngs
    assert "3 already done" in sweep("plan").stdout


# --- an image put back after `prune --rejected` -------------------------------------------------------------


def test_an_image_put_back_after_it_was_rejected_is_done_again(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    name = listed(folder)[0]
    shutil.move(folder / name, tmp_path / "trash.png")
    assert "rejected 1, kept 2" in sweep("prune", "png", "--rejected").stdout
    shutil.move(tmp_path / "trash.png", folder / name)
    plan = sweep("plan")
    assert "3 item(s), 3 already done ->" in plan.stdout and "rejected" not in plan.stdout
    again = sweep("run")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert name in listed(folder) and len(listed(folder)) == 3
    dry = sweep("prune", "png", "--dry-run")
    assert "  would move" not in dry.stdout and "would move 0, would reject 0, kept 3" in dry.stdout, dry.stdout


def test_a_file_moved_out_by_prune_says_why_as_its_item_records_it(tmp_path, sweep):
    """A result put back after its item was rejected, the job's format changed since: not an older result of an
    item with a newer one (it has none), but a file of a format the job no longer writes."""
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    name = listed(folder)[0]
    shutil.move(folder / name, tmp_path / "trash.png")
    sweep("prune", "png", "--rejected")
    shutil.move(tmp_path / "trash.png", folder / name)
    webp = name.replace(".png", ".webp")
    assert "2 written, 0 already done, 1 rejected" in sweep("run", "webp").stdout
    dry = sweep("prune", "webp", "--dry-run")
    assert f"would move {name} (the job now writes {webp})" in dry.stdout, dry.stdout
    assert "newer one" not in dry.stdout.split(name)[1].split("\n")[0]


def test_a_planned_file_of_another_size_than_recorded_is_not_called_an_older_result(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    name = listed(folder)[0]
    (folder / name).unlink()
    sweep("prune", "png", "--rejected")
    image_file(folder / name, size=(8, 8))  # another image put under its name
    dry = sweep("prune", "png", "--dry-run")
    assert f"would move {name} (not the image recorded for its item)" in dry.stdout, dry.stdout


def test_a_planned_file_changed_since_it_was_recorded_is_made_again_after_a_format_changed_back(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    name = listed(folder)[0]
    sweep("run", "jpeg")
    (folder / name).write_bytes((folder / name).read_bytes() + b"\0")  # no longer the file its record names
    assert "3 item(s), 2 already done" in sweep("plan").stdout
    assert "1 written, 2 already done" in sweep("run").stdout


def test_an_overwrite_that_fails_is_a_failure_not_the_earlier_result(tmp_path, tiny_config):
    from .http_fixtures import LoopbackServer

    manifest = tmp_path / "m.yaml"
    common = ["--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out"), "--allow-private-urls"]
    with LoopbackServer() as server:
        manifest.write_text(
            f"jobs: [{{name: j, sources: '{server.url('/ok.png')}', prompts: a, seed: 1, width: 16, height: 16, "
            "num_inference_steps: 2, strength: 0.5}]\n"
        )
        assert batch_edit("run", str(manifest), *common).returncode == 0
    again = batch_edit("run", str(manifest), *common, "--overwrite", "--fetch-timeout", "2")  # the server is gone
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout + again.stderr
    failures = pd.read_csv(tmp_path / "out" / "j" / "failures.csv")
    assert len(failures) == 1  # as the summary says; the next run retries it
    assert "0 already done" in batch_edit("plan", str(manifest), *common[:4]).stdout


def test_an_image_put_back_after_it_was_rejected_gets_its_caption_back(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    assert sweep("run").returncode == 0
    name = listed(folder)[0]
    caption = folder / name.replace(".png", ".txt")
    shutil.move(folder / name, tmp_path / "trash.png")
    sweep("prune", "png", "--rejected")
    assert not caption.exists()  # a dataset keeps no caption without its image
    shutil.move(tmp_path / "trash.png", folder / name)
    assert "moved 0, rejected 0, kept 3" in sweep("prune", "png").stdout
    assert caption.read_text() == "a tiger, photo"
    caption.unlink()  # deleted by hand: the next run writes it without making the image again
    again = sweep("run")
    assert "nothing to do" in again.stdout and caption.read_text() == "a tiger, photo"


def test_captions_turned_on_after_items_were_made_are_written_for_them_and_hand_edits_stay(tmp_path, sweep):
    folder = tmp_path / "out" / "sweep"
    manifest = sweep_manifest(strengths=STRENGTHS).replace("captions: true", "captions: false")
    (tmp_path / "m.yaml").write_text(manifest)
    run = ("run", "m.yaml", "--pipeline", str(sweep.config), "--output-root", "out")
    assert batch_edit(*run, cwd=tmp_path).returncode == 0
    assert not list(folder.glob("*.txt"))
    (tmp_path / "m.yaml").write_text(manifest.replace("captions: false", "captions: true"))
    first = folder / listed(folder)[0].replace(".png", ".txt")
    result = batch_edit(*run, cwd=tmp_path)
    assert "nothing to do" in result.stdout, result.stdout
    assert sorted(path.name for path in folder.glob("*.txt")) == [
        name.replace(".png", ".txt") for name in listed(folder)
    ]
    first.write_text("a tiger, photo, hand-fixed caption")
    batch_edit(*run, cwd=tmp_path)
    assert first.read_text() == "a tiger, photo, hand-fixed caption"
