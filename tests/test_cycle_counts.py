"""Jobs reading each other's results stop after as many rounds as there are jobs: what the summary counts as left
(and to come) is each item once, as `plan` counts it then and as the next run makes it, with `--overwrite` too."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import batch_edit, image_file

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"
JOBS = "  - {name: a, sources: [img/, out/b], prompts: a}\n  - {name: b, sources: out/a, prompts: b}\n"


def mutual(folder: Path) -> Path:
    """Job a edits two images and job b's results; job b edits job a's."""
    for stem in ("x", "y"):
        image_file(folder / "img" / f"{stem}.png")
    manifest = folder / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + JOBS)
    return manifest


def command(name: str, manifest: Path, config: Path, *extra: str) -> str:
    result = batch_edit(name, str(manifest), "--pipeline", str(config), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def line(output: str, job: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"job {job}: "))


def written(output: str, job: str) -> int:
    return int(re.match(rf"job {job}: (\d+) written", line(output, job)).group(1))


def pending(plan: str, job: str) -> int:
    """What `plan` counts for the job: its items not done yet and those to come."""
    found = re.match(rf"job {job}: (\d+) item\(s\)(?: and (\d+) to come.*?)?, (\d+) already done", line(plan, job))
    items, to_come, done = found.groups()
    return int(items) - int(done) + int(to_come or 0)


def test_an_overwrite_run_counts_no_item_it_redid_as_not_redone(tmp_path, tiny_config):
    """With --overwrite every item is pending: job b's items this run made are done, not left as waiting for job
    a's results (they were counted twice: 4 not redone where 2 are)."""
    manifest = mutual(tmp_path)
    first = command("run", manifest, tiny_config, "--overwrite")
    assert "job b: 2 written, 0 already done, 0 failed, 2 to come from job a's" in line(first, "b"), first
    assert "job a: 2 written, 0 already done, 0 failed, 2 not redone (waiting for job b's results" in first, first
    assert "total: 4 written, 0 failed, 2 not redone, 2 to come from results still to make" in first, first
    plan = command("plan", manifest, tiny_config)
    assert (pending(plan, "a"), pending(plan, "b")) == (2, 2), plan
    rest = command("run", manifest, tiny_config)  # and the next run makes as many
    assert (written(rest, "a"), written(rest, "b")) == (2, 2), rest


def test_an_item_left_waiting_for_a_result_made_again_counts_once(tmp_path, tiny_config):
    """A second --overwrite run: job a's items from job b's earlier results waited, and job b made those again
    (new bytes: new items, the earlier results moved out). Job a's items from the new results are what is left,
    not those as well as the ones they replace."""
    manifest = mutual(tmp_path)
    command("run", manifest, tiny_config)
    again = command("run", manifest, tiny_config, "--overwrite")
    assert "job a: 2 written, 0 already done, 0 failed, 2 not redone (waiting for job b's results" in again, again
    assert "total: 4 written, 0 failed, 2 not redone, 2 to come from results still to make" in again, again
    plan = command("plan", manifest, tiny_config)
    assert (pending(plan, "a"), pending(plan, "b")) == (2, 2), plan
    rest = command("run", manifest, tiny_config)
    assert (written(rest, "a"), written(rest, "b")) == (2, 2), rest


def test_a_run_without_overwrite_counts_as_before(tmp_path, tiny_config):
    """Without --overwrite the counts were right already: they stay so, run after run."""
    manifest = mutual(tmp_path)
    for _ in range(2):
        output = command("run", manifest, tiny_config)
        assert "total: 4 written, 0 failed, 2 left for later, 2 to come from results still to make" in output, output
        plan = command("plan", manifest, tiny_config)
        assert (pending(plan, "a"), pending(plan, "b")) == (2, 2), plan
