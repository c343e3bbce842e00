"""Resuming a folder whose history is months long: sources deleted after their items were done, a format
changed and changed back, an image put back after `prune --rejected`."""

from __future__ import annotations

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
