"""What a run stopped by `--limit` says is left of a chain of jobs: a reader of a producer's folder counts the
items the results still to make will give, as `plan` counts them."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import batch_edit, image_file

SMALL = "defaults: {width: 16, height: 16, num_inference_steps: 2, strength: 0.5}\n"


def write(folder: Path, *jobs: str) -> Path:
    manifest = folder / "m.yaml"
    manifest.write_text("output_root: out\n" + SMALL + "jobs:\n" + "".join(f"  - {job}\n" for job in jobs))
    return manifest


def command(name: str, manifest: Path, config: Path, *extra: str):
    result = batch_edit(name, str(manifest), "--pipeline", str(config), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def to_come(output: str, job: str) -> int:
    """The N of "N to come from ..." on the job's line."""
    line = next(line for line in output.splitlines() if line.startswith(f"job {job}: "))
    found = re.search(r"(\d+) to come from job \w+'s results still to make", line)
    assert found, line
    return int(found.group(1))


def test_a_limited_run_counts_a_readers_items_to_come_from_results_still_to_make_as_plan_does(tmp_path, tiny_config):
    for stem in ("x", "y"):
        image_file(tmp_path / "img" / f"{stem}.png")
    manifest = write(
        tmp_path,
        "{name: a, sources: img/, prompts: a}",
        "{name: b, sources: out/a, prompts: [b, bb]}",
        "{name: c, sources: out/b, prompts: c}",
    )
    result = command("run", manifest, tiny_config, "--limit", "1")
    # job a made 1 of its 2 results; job b's 2 items from it were held back, 2 more come from job a's other result;
    # job c's folder holds nothing yet: job b's 4 results give it 4 items (not the 1 its folder stood for)
    assert "job b: 0 written, 0 already done, 0 failed, 2 left for later (--limit), 2 to come from job a's" in (
        result.stdout
    ), result.stdout
    assert "job c: 0 written, 0 already done, 0 failed, 4 to come from job b's results still to make (run again)" in (
        result.stdout
    ), result.stdout
    assert "total: 1 written, 0 failed, 3 left for later, 6 to come from results still to make" in result.stdout
    plan = command("plan", manifest, tiny_config)
    for job in ("b", "c"):
        assert to_come(result.stdout, job) == to_come(plan.stdout, job), plan.stdout
    rest = command("run", manifest, tiny_config)  # and the next run makes as many
    assert "job b: 4 written" in rest.stdout and "job c: 4 written" in rest.stdout, rest.stdout
