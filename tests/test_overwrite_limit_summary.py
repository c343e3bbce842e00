"""What `run --overwrite --limit N` says is left: nothing marks an item as redone, so the same command redoes the
same first N each time and never reaches the rest (a reader waiting for results, those to come from them): no
"run again" on any job's line, and what a rerun does said once, with --limit (a stop's hint too)."""

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
