"""How runs and prunes end: the summary of a run an unwritable folder stops, prune's own stop message, failure
reasons counted without their paths, an estimate that follows --limit, what README and --help say."""

from __future__ import annotations

import csv
import errno
import os
import re
from pathlib import Path

from batch_edit import job_files
from batch_edit.cli import _parser
from batch_edit.job_listing import FAILURE_COLUMNS, MASK_COLUMNS

from .conftest import PHOTOS, batch_edit

REPO = Path(__file__).resolve().parent.parent
STEPS = "num_inference_steps: 2, strength: 0.5, width: 32, height: 32"


def _manifest(tmp_path: Path, tiny_config: Path, sources: list[str], seeds: str = "1") -> list[str]:
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: a, sources: {sources}, prompts: x, {STEPS}, seed: {seeds}}}\n"
    )
    return ["--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]


def _refused_for(monkeypatch, module, name: str, part: str, code: int = errno.ENOSPC, after: int = 0) -> None:
    """`module.name(path, ...)` refused as a full (or read-only) disk refuses it, for paths holding `part`, once
    `after` such calls went through."""
    real, calls = getattr(module, name), []

    def refused(path, *args, **kwargs):
        if part in Path(path).as_posix():
            calls.append(path)
            if len(calls) > after:
                raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, refused)


def test_a_run_the_disk_stops_partway_prints_its_summary_then_the_error(tmp_path, tiny_config, monkeypatch):
    sources = [str(PHOTOS / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg")]
    options = _manifest(tmp_path, tiny_config, sources)
    _refused_for(monkeypatch, job_files, "open_new", "rocket")  # the third result: a full disk
    result = batch_edit("run", str(tmp_path / "m.yaml"), *options)
    assert result.returncode == 3, result.stdout + result.stderr
    line = re.search(r"job a: (\d) written, 0 already done, 0 failed, (\d) left for later \(stopped by an error\)",
                     result.stdout)  # fmt: skip
    assert line, result.stdout
    written, left = map(int, line.groups())
    assert written + left == 4 and left >= 1 and "total: " in result.stdout
    assert "No space left on device" in result.stderr and "re-run the same command to resume" in result.stderr
    assert result.stderr.index("error: ") < result.stderr.index("The run stopped")
    monkeypatch.undo()  # nothing recorded is lost: the next run does only what is left
    again = batch_edit("run", str(tmp_path / "m.yaml"), *options)
    assert again.returncode == 0, again.stderr
    assert f"job a: {left} written, {written} already done, 0 failed" in again.stdout
    with (tmp_path / "out" / "a" / "metadata.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4


def test_a_prune_the_folder_refuses_partway_says_what_it_moved(tmp_path, tiny_config, monkeypatch):
    sources = [str(PHOTOS / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg")]
    options = _manifest(tmp_path, tiny_config, sources)
    assert batch_edit("run", str(tmp_path / "m.yaml"), *options).returncode == 0
    _manifest(tmp_path, tiny_config, sources[:1])  # coffee and rocket leave the plan
    _refused_for(monkeypatch, job_files, "make_folder", "pruned", code=errno.EROFS, after=1)
    stopped = batch_edit("prune", str(tmp_path / "m.yaml"), *options)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "Read-only file system" in stopped.stderr and "resume" not in stopped.stderr
    assert "prune stopped at job a: 1 file(s) moved to .batch-edit/pruned/" in stopped.stderr
    assert "run the same prune again" in stopped.stderr
    monkeypatch.undo()
    again = batch_edit("prune", str(tmp_path / "m.yaml"), *options)
    assert again.returncode == 0 and "job a: moved 1, rejected 0, kept 1" in again.stdout, again.stdout


def test_failures_are_counted_by_reason_without_their_paths(tmp_path, tiny_config):
    bad = tmp_path / "bad"
    bad.mkdir()
    for number in range(2):
        (bad / f"junk{number}.png").write_bytes(b"not an image at all")
    missing = [str(tmp_path / f"gone{number}.jpg") for number in range(7)]
    options = _manifest(tmp_path, tiny_config, [str(PHOTOS / "cat.jpg"), *missing, *map(str, bad.iterdir())])
    result = batch_edit("run", str(tmp_path / "m.yaml"), *options)
    assert result.returncode == 1, result.stderr
    assert "9 failed (file not found: 7; not an image: 2) in " in result.stdout, result.stdout
    assert "gone0" not in result.stdout
    with (tmp_path / "out" / "a" / "failures.csv").open() as handle:  # each row keeps its whole error
        errors = {row["error"] for row in csv.DictReader(handle)}
    assert {f"file not found: {path}" for path in missing} <= errors


def test_a_summary_names_the_most_frequent_reasons_and_counts_the_rest():
    from batch_edit.run_summary import _reasons

    errors = {f"reason {number}": number for number in range(1, 9)}
    assert _reasons(errors) == ("reason 8: 8; reason 7: 7; reason 6: 6; reason 5: 5; reason 4: 4; 3 more reasons: 6")


def test_plans_estimate_follows_limit(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, {STEPS}, seed: [1, 2, 3, 4]}}\n"
        f"  - {{name: b, sources: {PHOTOS / 'coffee.jpg'}, prompts: x, {STEPS}, seed: [1, 2]}}\n"
    )
    options = ["--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    assert batch_edit("run", str(tmp_path / "m.yaml"), *options, "--limit", "2").returncode == 0  # timings here
    planned = batch_edit("plan", str(tmp_path / "m.yaml"), *options, "--limit", "1")
    assert planned.returncode == 0, planned.stderr
    assert re.search(r"estimate: .* for 1 item\(s\) at .*; the first 1 of 2 pending, which --limit 1 would run",
                     planned.stdout), planned.stdout  # fmt: skip
    assert "estimate: none of its 2 pending item(s) would run with --limit 1" in planned.stdout


def test_every_commands_help_lists_verbose():
    commands = _parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        assert "-v, --verbose" in command.format_help(), name


def test_readme_lists_every_failures_csv_column():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    described = readme[readme.index("  failures.csv  ") : readme.index("  metadata-edited.csv")]
    for column in ["stage", "error_type", "error", "failed_at", "mask", *MASK_COLUMNS]:
        assert column in described, column
    assert FAILURE_COLUMNS[-4:] == ["stage", "error_type", "error", "failed_at"]
