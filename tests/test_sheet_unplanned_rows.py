"""Contact sheets show the items the job plans now: results of items no longer planned (another pipeline config's,
listed in metadata.csv with a blank index until `prune`) are left off and counted in the banner, never numbered as
variations the job does not have."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from batch_edit import sheets
from batch_edit.sheet_arrangement import arrange
from batch_edit.sheet_layout import plan_pages
from .conftest import PHOTOS, batch_edit, write_pipeline_config
from .test_sheets import make_job


@pytest.fixture
def drawn_labels(monkeypatch) -> list[str]:
    """Every text the sheets draw (drawn as before: only recorded on the way)."""
    texts: list[str] = []
    draw = sheets.draw_label

    def recording(drawing, box, text, font_size, fill=sheets.TEXT):
        texts.append(text)
        draw(drawing, box, text, font_size, fill)

    monkeypatch.setattr(sheets, "draw_label", recording)
    return texts


def rows_of_two_configs() -> list[dict]:
    """Two prompts made with config b (planned: positions 0 and 1), then with config a (no longer planned)."""
    planned = [dict(prompt=p, index=i, pipeline_config="b" * 16) for i, p in enumerate(["cat", "dog"])]
    return planned + [dict(prompt=p, index="", pipeline_config="a" * 16) for p in ["cat", "dog"]]


def test_results_no_longer_planned_are_left_off_the_sheet_and_counted_in_its_banner(tmp_path, drawn_labels):
    job = tmp_path / "job"
    make_job(job, rows_of_two_configs())
    [path] = sheets.write_contact_sheets(job)
    assert not any("variation" in text for text in drawn_labels)
    assert "prompt cat" in drawn_labels and "prompt dog" in drawn_labels
    [banner] = [text for text in drawn_labels if "not shown" in text]
    assert banner.endswith("\nnot shown: 2 results no longer planned (batch-edit prune moves them out)")
    [page] = plan_pages(2, 1, row_labels=False, titled=False, thumb=256)  # the two planned results, one row
    assert Image.open(path).size == page.layout.size


def test_one_result_no_longer_planned_is_said_in_the_singular(tmp_path, drawn_labels):
    job = tmp_path / "job"
    make_job(job, rows_of_two_configs()[:3])
    sheets.write_contact_sheets(job)
    assert any(
        text.endswith("not shown: 1 result no longer planned (batch-edit prune moves them out)")
        for text in drawn_labels
    )


def test_a_source_with_only_results_no_longer_planned_gets_no_sheet(tmp_path, drawn_labels):
    job = tmp_path / "job"
    coffee = (PHOTOS / "coffee.jpg").as_posix()
    make_job(job, [dict(index=0), dict(index="", source=coffee)])
    assert [path.name for path in sheets.write_contact_sheets(job)] == ["contact-sheet-cat.png"]
    assert not any("not shown" in text for text in drawn_labels)  # the cat sheet leaves nothing off


def test_rows_of_two_configs_without_positions_are_told_apart_by_config_not_numbered_as_variations():
    base = dict(source="s", seed="7", seed_derived="True", strength="0.5")
    rows = [{**base, "prompt": p, "pipeline_config": c} for c in ("a" * 16, "b" * 16) for p in ("cat", "dog")]
    grid, _ = arrange(rows)
    labels = [*grid.headers, *grid.row_labels, *(grid.cell_labels or {}).values()]
    assert not any("variation" in label for label in labels)
    assert sorted(grid.row_labels) == [f"pipeline config {'a' * 16}", f"pipeline config {'b' * 16}"]
    assert len(grid.cells) == 4


def test_a_job_run_again_with_another_config_shows_the_new_results_only(tmp_path, tiny_model, drawn_labels):
    (tmp_path / "rows.csv").write_text(
        "source,prompt,strength,width,height,num_inference_steps\n"
        f"{PHOTOS / 'cat.jpg'},a cat,0.5,64,64,2\n{PHOTOS / 'cat.jpg'},a dog,0.5,64,64,2\n"
    )
    first = write_pipeline_config(tmp_path / "first.yaml", tiny_model)
    quantization = "{backend: quanto, transformer: qint4, text_encoder: qint4, text_encoder_2: qint4}"
    second = write_pipeline_config(tmp_path / "second.yaml", tiny_model, quantization=quantization)
    for config in (first, second):
        drawn_labels.clear()
        done = batch_edit("run", "rows.csv", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert not any("variation" in text for text in drawn_labels)
    assert any(
        text.endswith("not shown: 2 results no longer planned (batch-edit prune moves them out)")
        for text in drawn_labels
    )
    assert (
        batch_edit("prune", "rows.csv", "--pipeline", str(second), "--output-root", "out", cwd=tmp_path).returncode == 0
    )
    drawn_labels.clear()
    Path(tmp_path / "out" / "rows" / ".batch-edit" / "sheets").unlink(missing_ok=True)
    sheets.write_contact_sheets(tmp_path / "out" / "rows")
    assert drawn_labels and not any("not shown" in text for text in drawn_labels)  # prune moved them out
