"""Jobs reading each other's results (a reads b's, b reads a's, c reads b's): a run stops after as many rounds as
jobs, with the results of its last round not read yet; its summary counts what is left as `plan` does right after."""

from __future__ import annotations

import re

from .conftest import batch_edit, image_file

MANIFEST = """jobs:
  - {name: a, sources: [a.png, out/b], prompts: x, width: 32, height: 32, strength: 1.0, num_inference_steps: 1}
  - {name: b, sources: [b.png, out/a], prompts: 'b {stem}', width: 32, height: 32, strength: 1.0, num_inference_steps: 1}
  - {name: c, sources: 'out/b/*.png', prompts: 'c {stem}', width: 32, height: 32, strength: 1.0, num_inference_steps: 1}
"""


def _planned(stdout: str) -> dict[str, tuple[int, int]]:
    """Per job, as `plan` counts it: (items pending now, items to come from results still to make)."""
    counts = {}
    for name, items, to_come, done in re.findall(
        r"^job (\w+): (\d+) item\(s\)(?: and (\d+) to come[^,]*)?, (\d+) already done", stdout, re.MULTILINE
    ):
        counts[name] = (int(items) - int(done), int(to_come or 0))
    return counts


def _summed_up(stdout: str) -> dict[str, tuple[int, int]]:
    """Per job, as the run's summary counts it: (items left for later, items to come)."""
    counts = {}
    for line in re.findall(r"^job \w+: \d+ written.*$", stdout, re.MULTILINE):
        name = line.split(":")[0].split()[1]
        left = re.search(r"(\d+) left for later", line)
        to_come = re.search(r"(\d+) to come", line)
        counts[name] = (int(left[1]) if left else 0, int(to_come[1]) if to_come else 0)
    return counts


def test_a_run_ending_at_its_last_round_counts_what_plan_finds_left(tmp_path, tiny_config):
    image_file(tmp_path / "a.png", size=(32, 32), color=10)
    image_file(tmp_path / "b.png", size=(32, 32), color=200)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    command = ("m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    ran = batch_edit("run", *command, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    planned = batch_edit("plan", *command, cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    expected = _planned(planned.stdout)
    assert sorted(expected) == ["a", "b", "c"] and sum(sum(c) for c in expected.values()), planned.stdout
    assert _summed_up(ran.stdout) == expected, ran.stdout + planned.stdout
    left, to_come = (sum(counts[i] for counts in expected.values()) for i in (0, 1))
    total = f"left for later, {to_come} to come" if to_come else "left for later,"
    assert re.search(rf"^total: \d+ written, 0 failed, {left} {total}", ran.stdout, re.MULTILINE), ran.stdout
