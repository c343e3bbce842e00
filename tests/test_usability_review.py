"""The three workflows a new user runs from the README (augmentation, a sweep, an overnight CSV, then curating),
checked where the messages or the job folder did not yet say the truth."""

from __future__ import annotations

import shutil
import textwrap

import pandas as pd
import pytest

from .conftest import PHOTOS, batch_edit

SMALL = "num_inference_steps,width,height"


@pytest.fixture
def photos(tmp_path):
    shutil.copytree(PHOTOS, tmp_path / "photos")
    return tmp_path


def csv_rows(*rows: str) -> str:
    return "source,prompt,strength,seed," + SMALL + "\n" + "".join(f"{row},2,32,32\n" for row in rows)


def run(folder, config, *args):
    return batch_edit("run", *args, "--pipeline", str(config), "--output-root", "out", cwd=folder)


def test_a_csv_edited_after_a_run_keeps_row_and_index_true_to_the_manifest(photos, tiny_config):
    manifest = photos / "night.csv"
    manifest.write_text(csv_rows("photos/cat.jpg,a,0.5,1", "photos/coffee.jpg,b,0.5,2"))
    assert run(photos, tiny_config, "night.csv").returncode == 0
    # A row inserted at the top in a spreadsheet: the old results are now rows 2 and 3 of the file.
    manifest.write_text(csv_rows("photos/rocket.jpg,new,0.5,3", "photos/cat.jpg,a,0.5,1", "photos/coffee.jpg,b,0.5,2"))
    result = run(photos, tiny_config, "night.csv")
    assert result.returncode == 0, result.stderr
    metadata = pd.read_csv(photos / "out" / "night" / "metadata.csv")
    assert list(metadata["prompt"]) == ["new", "a", "b"]
    assert list(metadata["row"]) == [1, 2, 3] and list(metadata["index"]) == [0, 1, 2]


def test_rejected_items_are_not_counted_as_done(photos, tiny_config):
    (photos / "aug.csv").write_text(csv_rows("photos/cat.jpg,a,0.5,1", "photos/coffee.jpg,b,0.5,2"))
    assert run(photos, tiny_config, "aug.csv").returncode == 0
    (photos / "out" / "aug" / pd.read_csv(photos / "out" / "aug" / "metadata.csv")["file_name"][0]).unlink()
    dry = batch_edit("prune", "aug.csv", "--pipeline", str(tiny_config), "--output-root", "out", cwd=photos)
    assert "1 deleted (the next run makes them again; --rejected marks them unwanted)" in dry.stdout
    prune = batch_edit("prune", "aug.csv", "--rejected", "--pipeline", str(tiny_config), "--output-root", "out",
                       cwd=photos)  # fmt: skip
    assert prune.returncode == 0 and "rejected 1" in prune.stdout
    again = run(photos, tiny_config, "aug.csv")
    assert "0 written, 1 already done, 1 rejected, 0 failed" in again.stdout
    assert "nothing to do: every item is already done or rejected" in again.stdout


def test_plan_shows_an_empty_seed_cell_as_derived(photos, tiny_config):
    (photos / "rows.csv").write_text(csv_rows("photos/cat.jpg,a,0.5,7", "photos/cat.jpg,a,0.5,"))
    result = batch_edit("plan", "rows.csv", "--pipeline", str(tiny_config), cwd=photos)
    assert result.returncode == 0 and "  seed: 7, derived\n" in result.stdout and "None" not in result.stdout


def test_every_merged_csv_row_is_accounted_for(photos, tiny_config):
    (photos / "rows.csv").write_text(csv_rows(*["photos/cat.jpg,a,0.5,1"] * 6))
    result = batch_edit("plan", "rows.csv", "--pipeline", str(tiny_config), cwd=photos)
    assert result.stderr.count("gives the same item(s) as row 1") == 3
    assert "... and 2 more row(s) merged the same way" in result.stderr
    assert "5 duplicate(s) merged" in result.stdout


def test_reproduce_given_the_input_csv_says_it_is_not_a_metadata_csv(photos, tiny_config):
    (photos / "night.csv").write_text(csv_rows("photos/cat.jpg,a,0.5,1"))
    result = batch_edit("reproduce", "night.csv", "--item", "0123456789abcdef", cwd=photos)
    assert result.returncode == 2
    assert "night.csv: not a batch-edit metadata.csv: it lacks the column(s) file_name, item_id" in result.stderr


def test_readme_lists_every_metadata_column(tmp_path):
    from batch_edit.job_listing import METADATA_COLUMNS

    readme = (PHOTOS.parent.parent / "README.md").read_text()
    outputs = readme[readme.index("## Outputs") :]
    listed = textwrap.dedent(outputs[outputs.index("metadata.csv") : outputs.index("failures.csv")])
    words = set(listed.replace(",", " ").replace("(", " ").replace(")", " ").split())
    assert {*METADATA_COLUMNS, "row"} <= words
