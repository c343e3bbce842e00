"""`plan` counts the items a job reading another job's results gets from those still to make as `run` makes
them: a manifest reached through a link, results made again over files already there, producer items whose source
is missing, and `--limit` across a chain of three listed readers first, or a producer running in several rounds."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import batch_edit, image_file

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"


def write(folder: Path, *jobs: str) -> Path:
    manifest = folder / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + "".join(f"  - {job}\n" for job in jobs))
    return manifest


def command(name: str, manifest: Path, config: Path, *extra: str, cwd: Path | None = None):
    result = batch_edit(name, str(manifest), "--pipeline", str(config), *extra, cwd=cwd)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result


def test_plan_counts_the_results_to_come_through_a_link_to_the_manifests_folder(tmp_path, tiny_config):
    real, link = tmp_path / "real", tmp_path / "link"
    for stem in ("x", "y"):
        image_file(real / "img" / f"{stem}.png")
    link.symlink_to(real)
    for spec in ("out/a", "'out/a/*.png'"):  # its folder, a glob in it
        manifest = write(link, "{name: a, sources: img/, prompts: a}", f"{{name: b, sources: {spec}, prompts: b}}")
        plan = command("plan", manifest, tiny_config, cwd=link)
        assert "job b: 0 item(s) and 2 to come from job a's results still to make" in plan.stdout, plan.stdout
        assert "total: 4 item(s) in 2 job(s), 2 of them to come" in plan.stdout, plan.stdout
    result = command("run", manifest, tiny_config, cwd=link)
    assert "job a: 2 written" in result.stdout and "job b: 2 written" in result.stdout, result.stdout


def test_plan_counts_a_readers_items_from_results_made_again_over_their_files_as_to_come(tmp_path, tiny_config):
    for stem in ("x", "y"):
        image_file(tmp_path / "img" / f"{stem}.png")
    reader = "{name: b, sources: out/a, prompts: b}"
    manifest = write(tmp_path, "{name: a, sources: img/, prompts: first, file_name: '{stem}'}", reader)
    assert "job b: 2 written" in command("run", manifest, tiny_config).stdout
    # job a's prompt changed: its results are made again at the same names, and job b's from their new content
    write(tmp_path, "{name: a, sources: img/, prompts: second, file_name: '{stem}'}", reader)
    plan = command("plan", manifest, tiny_config)
    assert "job b: 0 item(s) and 2 to come from job a's results still to make, 0 already done" in plan.stdout
    assert "total: 4 item(s) in 2 job(s), 2 of them to come" in plan.stdout, plan.stdout
    result = command("run", manifest, tiny_config)
    assert "job a: 2 written" in result.stdout and "job b: 2 written, 0 already done" in result.stdout


def test_plan_counts_no_result_to_come_from_a_producer_item_whose_source_is_missing(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    manifest = write(
        tmp_path, "{name: a, sources: [img/x.png, img/gone.png], prompts: a}", "{name: b, sources: out/a, prompts: b}"
    )
    plan = command("plan", manifest, tiny_config)
    assert "missing: 1 of 2 source file(s)" in plan.stdout, plan.stdout
    assert "job b: 0 item(s) and 1 to come from job a's results still to make" in plan.stdout, plan.stdout
    result = command("run", manifest, tiny_config)
    assert "job a: 1 written" in result.stdout and "job b: 1 written" in result.stdout, result.stdout


def test_plan_limit_splits_a_chain_of_three_listed_readers_first_as_the_runs_rounds_do(tmp_path, tiny_config):
    for stem in ("x", "y"):
        image_file(tmp_path / "img" / f"{stem}.png")
    manifest = write(
        tmp_path,
        "{name: c, sources: out/b, prompts: c}",
        "{name: b, sources: out/a, prompts: b}",
        "{name: a, sources: img/, prompts: a}",
    )
    assert "total: 6 written" in command("run", manifest, tiny_config).stdout
    for stem in ("p", "q"):
        image_file(tmp_path / "img" / f"{stem}.png")
    # a run takes job a's 2 new items, then job b's first from their results, then (no limit left) none of c's
    plan = command("plan", manifest, tiny_config, "--limit", "3")
    assert "--limit 3: 3 of 6 pending item(s) would run" in plan.stdout, plan.stdout
    estimates = [line for line in plan.stdout.splitlines() if line.startswith("  estimate:")]
    assert "none of its 2 pending item(s) would run with --limit 3" in estimates[0], plan.stdout  # job c
    assert "the first 1 of 2 pending, which --limit 3 would run" in estimates[1], plan.stdout  # job b
    assert "the first 2 of 2 pending, which --limit 3 would run" in estimates[2], plan.stdout  # job a
    result = command("run", manifest, tiny_config, "--limit", "3")
    assert "job c: 0 written" in result.stdout and "job b: 1 written" in result.stdout, result.stdout
    assert "job a: 2 written" in result.stdout, result.stdout


def test_plan_and_run_refuse_a_csv_row_naming_a_job_folder_of_the_run_before_any_job_runs(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "job,source,prompt,width,height,num_inference_steps,strength\n"
        "a,img/x.png,a,16,16,2,0.5\nb,out/a,b,16,16,2,0.5\n"
    )
    plan = batch_edit("plan", str(manifest), "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "row 2: field 'source': source " in plan.stderr and "is job a's folder; a CSV row names one" in (
        plan.stderr
    ), plan.stderr
    assert "job a:" not in plan.stdout  # refused before any job is reported
    result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is job a's folder; a CSV row names one" in result.stderr, result.stderr  # before job a runs
    assert not (tmp_path / "out" / "a").exists()


def test_plan_says_whether_a_result_a_job_waits_for_is_not_made_yet_or_made_again(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    reader = "{name: b, sources: [out/a/x.png], prompts: b}"
    manifest = write(tmp_path, "{name: a, sources: img/, prompts: first, file_name: '{stem}'}", reader)
    waiting = f"waiting for job a's results: {tmp_path / 'out' / 'a' / 'x.png'}"
    assert f"{waiting} is not made yet" in command("plan", manifest, tiny_config).stdout
    assert "job b: 1 written" in command("run", manifest, tiny_config).stdout
    with (tmp_path / "out" / "a" / "x.png").open("ab") as result:  # edited by hand: job a makes it again
        result.write(b"edited")
    plan = command("plan", manifest, tiny_config)
    assert f"{waiting} is made again first" in plan.stdout and "holds none yet" not in plan.stdout, plan.stdout


def limited_counts(plan: str) -> dict[str, int]:
    """Per job of `plan --limit`: how many of its pending items its estimate says would run."""
    counts, job = {}, None
    for line in plan.splitlines():
        if line.startswith("job "):
            job = line.split(":")[0][4:]
        elif line.startswith("  estimate: none of its"):
            counts[job] = 0
        elif found := re.search(r"the first (\d+) of \d+ pending, which --limit", line):
            counts[job] = int(found.group(1))
    return counts


def test_plan_limit_releases_a_readers_items_in_the_round_after_the_one_making_their_results(tmp_path, tiny_config):
    image_file(tmp_path / "img" / "x.png")
    image_file(tmp_path / "more" / "z.png")
    manifest = write(  # job b runs in two rounds: its items from more/ at once, those from job a's results after
        tmp_path,
        "{name: c, sources: out/b, prompts: c}",
        "{name: b, sources: [out/a, more/], prompts: b}",
        "{name: a, sources: img/, prompts: a}",
    )
    assert "total: 5 written" in command("run", manifest, tiny_config).stdout  # every job has timed items
    image_file(tmp_path / "img" / "p.png")
    image_file(tmp_path / "more" / "w.png")
    # round 1: job b's item from more/w.png and job a's from img/p.png; round 2: job c's item from job b's first
    # result, then job b's from job a's; round 3: job c's from that one. --limit 4 ends in round 2.
    plan = command("plan", manifest, tiny_config, "--limit", "4")
    assert "--limit 4: 4 of 5 pending item(s) would run" in plan.stdout, plan.stdout
    counts = limited_counts(plan.stdout)
    assert counts == {"c": 1, "b": 2, "a": 1}, plan.stdout
    result = command("run", manifest, tiny_config, "--limit", "4")
    for job, count in counts.items():
        assert f"job {job}: {count} written" in result.stdout, result.stdout + plan.stdout


def test_plan_resolves_each_source_path_once_not_once_per_item(tmp_path, tiny_config, monkeypatch):
    """Placing items among the jobs' folders resolves links per distinct path: a 2,000-item grid of two sources
    (and a reader of the job's folder) costs a few dozen realpath calls, not some per item (it took 20 s on
    100,000 items)."""
    import os

    for stem in ("x", "y"):
        image_file(tmp_path / "img" / f"{stem}.png")
    seeds = list(range(1000))
    manifest = write(
        tmp_path, f"{{name: a, sources: img/, prompts: a, seed: {seeds}}}", "{name: b, sources: out/a, prompts: b}"
    )
    calls, resolve = [], os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path, **kw: calls.append(path) or resolve(path, **kw))
    plan = command("plan", manifest, tiny_config, cwd=tmp_path)
    assert "job a: 2000 item(s)" in plan.stdout and "2000 to come from job a" in plan.stdout, plan.stdout
    assert len(calls) < 100, f"{len(calls)} realpath calls for 2 sources"
