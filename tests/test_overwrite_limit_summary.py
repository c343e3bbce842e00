"""What `run --overwrite --limit N` says is left: nothing marks an item as redone, so the same command redoes the
same first N each time and never reaches the rest (a reader waiting for results, those to come from them): no
"run again" on any job's line, and what a rerun does said once, with --limit (a stop's hint too). Only items done
before are "not redone" (they keep their earlier results): those the limit leaves that were never made are left
for later."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from batch_edit.run_summary import print_stops

from .conftest import batch_edit, image_file

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"
CHAIN = (
    "  - {name: a, sources: img/, prompts: a}\n"
    "  - {name: b, sources: out/a, prompts: [b, bb]}\n"
    "  - {name: c, sources: out/b, prompts: c}\n"
)
SAME_FIRST = (
    "running the same command again (--overwrite --limit 1) redoes the same first 1 item(s) again, never the rest"
)


def _run(manifest: Path, config: Path, *extra: str):
    result = batch_edit("run", str(manifest), "--pipeline", str(config), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _line(output: str, job: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"job {job}: "))


def test_a_reader_left_by_overwrite_and_limit_is_not_told_to_run_again(tmp_path, tiny_config):
    for stem in ("x", "y"):
        image_file(tmp_path / "img" / f"{stem}.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + CHAIN)
    _run(manifest, tiny_config)
    for _ in range(2):  # the same command, twice: it never gets past job a's first item
        result = _run(manifest, tiny_config, "--overwrite", "--limit", "1")
        assert "job a: 1 written" in result.stdout and "total: 1 written" in result.stdout, result.stdout
        assert "run again" not in result.stdout, result.stdout
        reader = _line(result.stdout, "c")
        assert reader.startswith("job c: 0 written, 0 already done, 0 failed, 4 not redone (waiting for job b's"), (
            reader
        )
        assert "--overwrite --limit 1 redoes the first 1 each time" in reader, reader
        assert "to come from job b's results still to make in" in reader, reader
        assert f"note: nothing marks an item as redone: {SAME_FIRST}" in result.stderr, result.stderr
    plain = _run(manifest, tiny_config)  # no note where nothing is left
    assert "note: nothing marks" not in plain.stderr and "not redone" not in plain.stdout, plain.stdout + plain.stderr


def test_items_overwrite_and_limit_leave_that_were_never_made_are_left_for_later(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "output_root: out\n" + SMALL + "jobs:\n  - {name: l1, sources: img/, prompts: [a, b]}\n"
        "  - {name: l2, sources: img/, prompts: [c, d, e, f]}\n"
    )
    # on new folders: nothing the limit leaves was made before, so nothing keeps an earlier result
    result = _run(manifest, tiny_config, "--overwrite", "--limit", "4")
    assert _line(result.stdout, "l2").startswith("job l2: 2 written, 0 already done, 0 failed, 2 left for later ("), (
        result.stdout
    )
    assert "not redone" not in result.stdout and "total: 4 written, 0 failed, 2 left for later," in result.stdout, (
        result.stdout
    )
    assert "redoes the same first 4 item(s) again" in result.stderr, result.stderr
    assert "keep their earlier results" not in result.stderr, result.stderr
    # job l2's first 2 items are done, its last 2 never made: only the former keep earlier results
    result = _run(manifest, tiny_config, "--overwrite", "--limit", "1")
    assert _line(result.stdout, "l1").startswith("job l1: 1 written, 0 already done, 0 failed, 1 not redone ("), (
        result.stdout
    )
    l2 = _line(result.stdout, "l2")
    assert l2.startswith("job l2: 0 written, 0 already done, 0 failed, 2 not redone, 2 left for later ("), l2
    assert "--overwrite --limit 1 redoes the first 1 each time" in l2 and "run again" not in l2, l2
    assert "total: 1 written, 0 failed, 3 not redone, 2 left for later," in result.stdout, result.stdout
    assert f"{SAME_FIRST}; " in result.stderr and "did not redo keep their earlier results" in result.stderr, (
        result.stderr
    )


def test_overwrite_without_limit_leaves_the_note_out_where_nothing_is_left(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n  - {name: a, sources: img/, prompts: a}\n")
    _run(manifest, tiny_config)
    result = _run(manifest, tiny_config, "--overwrite")
    assert "job a: 1 written" in result.stdout and "note:" not in result.stderr, result.stdout + result.stderr


def test_a_stopped_overwrite_limit_run_says_it_redoes_the_same_first_items(capsys):
    for error, unwritten, stopped_by in ((None, [], "SIGINT"), ("cannot write x", [], None)):
        print_stops(SimpleNamespace(error=error, unwritten=unwritten), stopped_by, True, 1)
        said = capsys.readouterr().err
        assert SAME_FIRST in said and "redoes every item again" not in said, said
    print_stops(SimpleNamespace(error=None, unwritten=["cannot write metadata.csv"]), None, True, 1)
    said = capsys.readouterr().err
    assert "with --overwrite it redoes the first 1 item(s) again" in said and "every item" not in said, said
