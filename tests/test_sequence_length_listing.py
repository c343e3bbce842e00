"""A pipeline config's `max_sequence_length` is part of what an item is (its id): results made with another length
are other items, listed in metadata.csv beside the new ones (no longer planned, a blank index, until `prune`) as
those of another quantization are, not replaced by them in the listing while their files stay in the folder."""

from __future__ import annotations

import csv

from .conftest import PHOTOS, batch_edit, write_pipeline_config


def listed(folder) -> list[dict]:
    with (folder / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_of_another_sequence_length_stay_listed_until_prune(tmp_path, tiny_model):
    (tmp_path / "rows.csv").write_text(
        f"source,prompt,strength,width,height,num_inference_steps\n{PHOTOS / 'cat.jpg'},a cat,0.5,64,64,2\n"
    )
    first = write_pipeline_config(tmp_path / "first.yaml", tiny_model)
    second = write_pipeline_config(tmp_path / "second.yaml", tiny_model, max_sequence_length=64)
    for config in (first, second):
        done = batch_edit("run", "rows.csv", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    job = tmp_path / "out" / "rows"
    rows = listed(job)
    assert len(rows) == 2, rows
    assert sorted(row["index"] for row in rows) == ["", "0"]  # the new result planned, the earlier one not
    assert all((job / row["file_name"]).is_file() for row in rows)
    pruned = batch_edit("prune", "rows.csv", "--pipeline", str(second), "--output-root", "out", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    [kept] = listed(job)
    assert kept["index"] == "0"
