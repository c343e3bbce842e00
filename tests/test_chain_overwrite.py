"""A job reading another job's results in the same run: one run makes the producer's items, then the reader's
from what the producer made (lists its folder again), with or without --overwrite; and one `prune` settles it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from batch_edit import run_command

from .conftest import PHOTOS, batch_edit

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"


def manifest_of(tmp_path: Path, a_sources: str, a_prompt: str = "a") -> Path:
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / name)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "output_root: out\n" + SMALL + "jobs:\n"
        f"  - {{name: a, sources: {a_sources}, prompts: {a_prompt}}}\n"
        "  - {name: b, sources: out/a, prompts: 'b {stem}'}\n"
    )
    return manifest


def run(manifest: Path, config: Path, *extra: str):
    result = batch_edit("run", str(manifest), "--pipeline", str(config), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def sources_of_b(tmp_path: Path) -> list[str]:
    return sorted(pd.read_csv(tmp_path / "out" / "b" / "metadata.csv")["source"].map(lambda s: Path(s).name))


def test_one_run_makes_the_producers_items_then_the_readers(tmp_path, tiny_config):
    manifest = manifest_of(tmp_path, "[cat.jpg, coffee.jpg]")
    first = run(manifest, tiny_config)
    assert "job a: 2 written" in first.stdout and "job b: 2 written" in first.stdout, first.stdout + first.stderr
    assert "left for later" not in first.stdout
    again = run(manifest, tiny_config)  # settled: a plain run redoes nothing
    assert "job a: 0 written, 2 already done" in again.stdout and "job b: 0 written, 2 already done" in again.stdout


def test_overwrite_remakes_the_producer_then_the_reader_from_its_new_results(tmp_path, tiny_config):
    manifest = manifest_of(tmp_path, "[cat.jpg, coffee.jpg]")
    run(manifest, tiny_config)
    for _ in range(2):  # every --overwrite run settles the chain, not only the first
        result = run(manifest, tiny_config, "--overwrite")
        assert "job a: 2 written" in result.stdout and "job b: 2 written" in result.stdout, result.stdout
        assert "total: 4 written, 0 failed, elapsed" in result.stdout, result.stdout
        plain = run(manifest, tiny_config)
        assert "job a: 0 written" in plain.stdout and "job b: 0 written" in plain.stdout, plain.stdout


def b_source_hashes(tmp_path: Path) -> dict[str, str]:
    """Job b's records: the sha256 of the source each current result was made from, per source file."""
    rows = [json.loads(line) for line in (tmp_path / "out" / "b" / ".batch-edit" / "records.jsonl").open()]
    return {Path(row["source"]).name: row["source_sha256"] for row in rows if row.get("status") == "ok"}


def a_hashes(tmp_path: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (tmp_path / "out" / "a").glob("*.png")
            if not path.name.startswith("contact-sheet")}  # fmt: skip


def test_the_reader_edits_what_the_producer_made_in_this_run_not_what_it_replaced(tmp_path, tiny_config):
    manifest = manifest_of(tmp_path, "cat.jpg", a_prompt="'{stem}-a'")
    manifest.write_text(manifest.read_text().replace("prompts: '{stem}-a'", "prompts: '{stem}-a', file_name: '{stem}'"))
    run(manifest, tiny_config)
    first = a_hashes(tmp_path)
    assert b_source_hashes(tmp_path) == first
    manifest.write_text(manifest.read_text().replace("'{stem}-a'", "'{stem} in the rain'"))  # a new result, same name
    changed = run(manifest, tiny_config)
    assert "job a: 1 written" in changed.stdout and "job b: 1 written" in changed.stdout, changed.stdout
    assert a_hashes(tmp_path) != first and b_source_hashes(tmp_path)["cat.png"] == a_hashes(tmp_path)["cat.png"]
    overwritten = run(manifest, tiny_config, "--overwrite")
    assert "job a: 1 written" in overwritten.stdout and "job b: 1 written" in overwritten.stdout, overwritten.stdout
    assert b_source_hashes(tmp_path)["cat.png"] == a_hashes(tmp_path)["cat.png"]
    assert "job b: 0 written, 1 already done" in run(manifest, tiny_config).stdout


def test_one_prune_settles_a_reader_of_results_it_moves_out(tmp_path, tiny_config):
    manifest = manifest_of(tmp_path, "cat.jpg")
    jobs = manifest.read_text().split("jobs:\n")
    manifest.write_text(jobs[0] + "jobs:\n" + "".join(reversed(jobs[1].splitlines(keepends=True))))  # b first
    run(manifest, tiny_config)
    manifest.write_text(manifest.read_text().replace("prompts: a}", "prompts: a cat}"))  # a new result of job a
    assert "job b: 1 written, 1 already done" in run(manifest, tiny_config).stdout  # b edits both of a's
    prune = ("prune", str(manifest), "--pipeline", str(tiny_config))
    dry = batch_edit(*prune, "--dry-run")
    assert "job a: would move 1" in dry.stdout and "job b: would move 1" in dry.stdout, dry.stdout + dry.stderr
    first = batch_edit(*prune)
    assert "job a: moved 1" in first.stdout and "job b: moved 1, rejected 0, kept 1" in first.stdout, first.stdout
    second = batch_edit(*prune)
    assert "job a: moved 0" in second.stdout and "job b: moved 0" in second.stdout, second.stdout
    assert sources_of_b(tmp_path) == sorted(p.name for p in (tmp_path / "out" / "a").glob("cat-*.png"))
    assert "nothing to do" in run(manifest, tiny_config).stdout


def test_a_reader_with_items_of_its_own_in_the_first_round_gets_the_new_ones_in_the_same_run(tmp_path, tiny_config):
    """The reader has items to run from the producer's earlier results (and a --limit left both jobs half done):
    what the producer adds in this run is still the reader's to edit in this run, not silently the next's."""
    manifest = manifest_of(tmp_path, "[cat.jpg]")
    run(manifest, tiny_config)
    manifest.write_text(manifest.read_text().replace("sources: [cat.jpg]", "sources: [cat.jpg, coffee.jpg]")
                        .replace("prompts: 'b {stem}'", "prompts: ['b {stem}', 'c {stem}']"))  # fmt: skip
    grown = run(manifest, tiny_config)  # a: coffee's result; b: cat's second prompt, then coffee's two
    assert "job a: 1 written, 1 already done" in grown.stdout, grown.stdout
    assert "job b: 3 written, 1 already done" in grown.stdout and "left for later" not in grown.stdout, grown.stdout
    assert [name.split("-")[0] for name in sources_of_b(tmp_path)] == ["cat", "cat", "coffee", "coffee"]
    assert "0 written" in run(manifest, tiny_config).stdout.split("job b:")[1]


def stopping_while_replanning(planned_again):
    """A re-planner that sends this process a Ctrl-C once it has planned the readers again (between rounds)."""

    def stopping(args, config, cluster):
        replan = planned_again(args, config, cluster)

        def then_stop(names):
            plans = replan(names)
            os.kill(os.getpid(), signal.SIGINT)
            return plans

        return then_stop

    return stopping


# `batch-edit` in its own process, with a Ctrl-C sent while the readers are planned again (for Ray's run)
STOP_WHILE_REPLANNING = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from batch_edit import cli, run_command
from tests.test_chain_overwrite import stopping_while_replanning
run_command._replanner = stopping_while_replanning(run_command._replanner)
sys.exit(cli.main(sys.argv[1:]))
"""


def stopped_between_rounds(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STOP_WHILE_REPLANNING, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_a_stop_while_the_readers_are_planned_again_ends_the_run_with_its_summary(tmp_path, tiny_config, monkeypatch):
    """A signal that comes between rounds: nothing more starts, what the producer made is recorded and summed up,
    the reader's items are left for later, and the next run makes them. (In this process: the run's handlers
    take the signal, and hand pytest's back when it ends.)"""
    manifest = manifest_of(tmp_path, "[cat.jpg, coffee.jpg]")
    with monkeypatch.context() as patched:
        patched.setattr(run_command, "_replanner", stopping_while_replanning(run_command._replanner))
        stopped = batch_edit("run", str(manifest), "--pipeline", str(tiny_config), cwd=tmp_path)
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "job a: 2 written" in stopped.stdout and "job b: 0 written" in stopped.stdout, stopped.stdout
    assert "2 left for later (stopped by SIGINT)" in stopped.stdout, stopped.stdout
    again = run(manifest, tiny_config)
    assert "job a: 0 written, 2 already done" in again.stdout and "job b: 2 written" in again.stdout, again.stdout


def two_jobs(tmp_path: Path, a_sources: str, b_sources: str) -> Path:
    """Jobs a and b (prompts "a" and "b") with these sources, beside a copy of the cat photo."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "output_root: out\n" + SMALL + "jobs:\n"
        f"  - {{name: a, sources: {a_sources}, prompts: a}}\n"
        f"  - {{name: b, sources: {b_sources}, prompts: b}}\n"
    )
    return manifest


def test_two_jobs_reading_each_other_leave_what_waits_for_later_not_failed(tmp_path, tiny_config):
    """Job a also reads job b's folder, which holds nothing yet and whose only item waits for a's results: a's
    item from it waits too (left for later, exit 0), never runs as a source that "is a folder"."""
    manifest = two_jobs(tmp_path, "[cat.jpg, out/b]", "out/a")
    first = run(manifest, tiny_config)
    assert "job a: 1 written, 0 already done, 0 failed" in first.stdout, first.stdout + first.stderr
    assert "job b: 1 written" in first.stdout and "waiting for job b's results" in first.stdout, first.stdout
    assert (
        not (tmp_path / "out" / "a" / "failures.csv").exists()
        or pd.read_csv(tmp_path / "out" / "a" / "failures.csv").empty
    )


def test_a_reader_glob_matching_none_of_what_its_producer_made_is_refused_in_the_same_run(tmp_path, tiny_config):
    """Planned again once job a's results exist, job b's glob matches none of them: refused as a run starting
    now would refuse it (exit 2, the glob named), not "left for later: run again"; a's results are kept."""
    manifest = two_jobs(tmp_path, "cat.jpg", "'out/a/zzz*.png'")
    result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "job a: 1 written" in result.stdout
    assert "refused once its sources were listed again" in result.stdout and "run again" not in result.stdout
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: job(s) b refused: "))
    assert "zzz*.png" in error and "matches no image" in error, error
    assert len(pd.read_csv(tmp_path / "out" / "a" / "metadata.csv")) == 1
    again = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert again.returncode == 2 and "matches no image" in again.stderr  # the same refusal, before anything runs


def test_plan_says_the_readers_items_run_in_the_same_run(tmp_path, tiny_config):
    manifest = manifest_of(tmp_path, "[cat.jpg, coffee.jpg]")
    planned = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config), "--limit", "3")
    assert planned.returncode == 0, planned.stderr
    assert "job b: 0 item(s) and 2 to come from job a's results still to make" in planned.stdout
    assert "--limit 3: 3 of 4 pending item(s) would run (2 of them to come from results made in the run)" in (
        planned.stdout
    )
    assert "left for the run after" not in planned.stdout
