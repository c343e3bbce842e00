"""What the outputs and `plan` show: the variation of each item in metadata.csv and failures.csv, the variations
and every source in `plan`, contact-sheet text beyond Pillow's Latin font."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont

from batch_edit.job_listing import FAILURE_COLUMNS, METADATA_COLUMNS
from batch_edit.sheet_arrangement import arrange
from batch_edit.sheets import BACKGROUND, _font, draw_label

from .conftest import PHOTOS, batch_edit


def read_rows(path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def same_stem_photos(tmp_path) -> None:
    """a/cat.jpg, a/cat.png and b/cat.jpg: three sources with one stem."""
    for folder, name in (("a", "cat.jpg"), ("a", "cat.png"), ("b", "cat.jpg")):
        (tmp_path / folder).mkdir(exist_ok=True)
        with Image.open(PHOTOS / "cat.jpg") as image:
            image.convert("RGB").save(tmp_path / folder / name)


# ---------------------------------------------------------------- metadata.csv and failures.csv

VARIED = """
  - {name: varied, sources: [a/cat.jpg, a/cat.png], prompts: a tiger, variations: 2, num_inference_steps: 2,
     width: 32, height: 32, strength: 0.5, file_name: "{stem}-v{variation}-{id}"}
"""
OTHERS = """
  - {name: failing, sources: [missing.jpg, a/cat.jpg], prompts: a tiger, variations: 2, num_inference_steps: 2,
     width: 32, height: 32, strength: 0.5}
  - {name: single, sources: a/cat.jpg, prompts: a tiger, num_inference_steps: 2, width: 32, height: 32,
     strength: 0.5}
"""


def test_variation_column_in_jobs_with_variations_rebuilt_for_folders_recorded_without_it(tmp_path, tiny_config):
    same_stem_photos(tmp_path)
    (tmp_path / "m.yaml").write_text("jobs:" + VARIED + OTHERS)
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # missing.jpg's items failed
    out = tmp_path / "out"

    # each item's variation, as {variation} numbered it in its file name; two sources of one stem both ran
    columns, rows = read_rows(out / "varied" / "metadata.csv")
    assert columns == [*METADATA_COLUMNS, "variation"]
    assert [(row["file_name"].split("-")[1], row["variation"]) for row in rows] == [
        ("v0", "0"), ("v1", "1"), ("v0", "0"), ("v1", "1"),
    ]  # fmt: skip
    assert len({row["source"] for row in rows}) == 2
    columns, failed = read_rows(out / "failing" / "failures.csv")
    assert columns == [*FAILURE_COLUMNS, "variation"] and [row["variation"] for row in failed] == ["0", "1"]
    assert read_rows(out / "failing" / "metadata.csv")[0] == [*METADATA_COLUMNS, "variation"]
    # a job of one variation keeps the columns it always had
    assert read_rows(out / "single" / "metadata.csv")[0] == METADATA_COLUMNS
    assert read_rows(out / "single" / "failures.csv")[0] == FAILURE_COLUMNS

    # A folder whose records were written before they carried the variation: a run with nothing to do lists it
    listed = (out / "varied" / "metadata.csv").read_bytes()
    records = out / "varied" / ".batch-edit" / "records.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [line.pop("variation") for line in lines] == [0, 1, 0, 1]
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / "varied" / "metadata.csv").unlink()
    (tmp_path / "varied.yaml").write_text("jobs:" + VARIED)
    again = batch_edit("run", "varied.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert again.returncode == 0 and "loading" not in again.stderr, again.stderr
    assert (out / "varied" / "metadata.csv").read_bytes() == listed


def test_variation_column_is_there_from_the_first_result_of_a_job_with_variations(tmp_path, tiny_config):
    """The manifest decides the columns, not how far the run got: a sample (`--limit 1`) of a job of two
    variations already lists the column its full run will have."""
    same_stem_photos(tmp_path)
    (tmp_path / "varied.yaml").write_text("jobs:" + VARIED)
    run = ("run", "varied.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    assert batch_edit(*run, "--limit", "1", cwd=tmp_path).returncode == 0
    columns, rows = read_rows(tmp_path / "out" / "varied" / "metadata.csv")
    assert columns == [*METADATA_COLUMNS, "variation"] and [row["variation"] for row in rows] == ["0"]


def test_sheet_of_explicit_seeds_with_variations_shows_the_seed_axis_alone():
    """Explicit seeds s, s+1, ... tell the variations apart already: the metadata's variation column does not
    join them as "seed / variation"."""
    rows = [
        {"source": "/p/cat.jpg", "prompt": "a tiger", "seed": str(10 + i), "seed_derived": "False",
         "strength": "0.5", "variation": str(i), "file_name": f"cat-{i}.png"}
        for i in range(3)
    ]  # fmt: skip
    grid, fixed = arrange(rows)
    assert grid.headers == ("seed 10", "seed 11", "seed 12")
    assert not any(axis.column == "variation" for axis in fixed)


# ---------------------------------------------------------------- plan


def test_plan_shows_variations_per_grid_point(tmp_path, tiny_config):
    same_stem_photos(tmp_path)
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: three, sources: a/cat.jpg, prompts: x, variations: 3}\n"
        "  - {name: one, sources: a/cat.jpg, prompts: x}\n"
    )
    (tmp_path / "rows.csv").write_text("source,prompt,variations\na/cat.jpg,x,1\na/cat.jpg,y,2\n")
    result = batch_edit("plan", "m.yaml", "rows.csv", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = result.stdout.split("job ")[1:]
    assert "  variations: 3 per grid point\n" in jobs[0] and jobs[0].startswith("three: 3 item(s)")
    assert "  variations:" not in jobs[1]
    assert "  variations: 1, 2 per grid point\n" in jobs[2] and jobs[2].startswith("rows: 3 item(s)")


def test_plan_lists_every_source_of_a_shared_stem(tmp_path, tiny_config):
    same_stem_photos(tmp_path)
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "a" / "coffee.jpg")
    (tmp_path / "m.yaml").write_text(
        "jobs: [{name: cats, sources: [a/cat.jpg, a/cat.png, b/cat.jpg, a/coffee.jpg], prompts: x}]\n"
    )
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "job cats: 4 item(s)" in result.stdout
    assert "  sources: a/cat.jpg, cat.png, b/cat.jpg, coffee\n" in result.stdout


# ---------------------------------------------------------------- contact-sheet text


def rendered(text: str, font=None) -> bytes:
    canvas = Image.new("RGB", (400, 40), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if font is None:
        draw_label(draw, (0, 0, 400, 40), text, 16)
    else:
        draw.text((4, 12), text, font=font, fill=(0, 0, 0))
    return canvas.tobytes()


def test_labels_beyond_latin_use_a_font_that_has_their_letters():
    text = "кот на диване"
    default = ImageFont.load_default(size=16)
    font = _font(16, text)
    if font.getname() == default.getname():
        pytest.skip("no installed font with Cyrillic letters (such as DejaVu Sans) on this machine")
    # Pillow's own font draws every one of these letters as the same box; the chosen font draws the letters
    assert rendered(text, default) == rendered("ккк кк кккккк", default)
    assert rendered(text) != rendered("ккк кк кккккк")
    assert _font(16, "a tiger").getname() == default.getname()  # Latin labels keep the font they always had
