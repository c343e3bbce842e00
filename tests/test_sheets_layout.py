"""Contact sheets for any manifest: co-varying columns as one axis, a labelled grid where no grid of axes exists,
and never more than about a quarter of a sheet's cells empty (counted on the sheet's own pixels)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from batch_edit.sheet_arrangement import MAX_EMPTY, arrange, grid_columns
from batch_edit.sheet_layout import SheetLayout, plan_pages
from batch_edit.sheets import BACKGROUND, EMPTY, write_contact_sheets

from .conftest import PHOTOS, batch_edit
from .test_sheets import DEFAULTS, assert_label, centre, close, colour, make_job, sweep

STYLES = ["watercolor painting", "pencil sketch", "at night", "in winter, snow", "oil painting", "vintage film"]


def pages_of(folder: Path, rows: list[dict], **options) -> list:
    """The pages write_contact_sheets draws for these rows (one source), as the sheet module plans them."""
    grid, _ = arrange([{**DEFAULTS, **row} for row in rows])
    return plan_pages(
        grid.cols, grid.rows, grid.outer_cols, grid.outer_rows, row_labels=bool(grid.row_labels),
        titled=bool(grid.titles), cell_label_lines=grid.cell_label_lines, header_lines=grid.header_lines, **options,
    )  # fmt: skip


def shown(sheet: Image.Image, page) -> list[tuple[int, int, int] | None]:
    """Per cell of the page's layout, the colour at its centre, or None where the cell is empty."""
    lay = page.layout
    every = itertools.product(range(lay.outer_cols), range(lay.outer_rows), range(lay.cols), range(lay.rows))
    colours = [centre(sheet, lay.cell_box(*cell)) for cell in every]
    return [None if c in (EMPTY, BACKGROUND) else c for c in colours]


def fill(colours: list) -> float:
    return sum(c is not None for c in colours) / len(colours)


def csv_like_rows(count: int = 60, sources: int = 10) -> list[dict]:
    """What a CSV job of `count` rows records: each row its own prompt and seed, strength and guidance set per row
    with no grid among them."""
    return [
        {
            "source": f"/data/photo{i % sources}.jpg",
            "prompt": f"photo {i % sources} of a thing on a table, {STYLES[i // sources % len(STYLES)]}",
            "seed": 100 + i,
            "strength": [0.6, 0.75, 0.9][i % 3],
            "guidance_scale": 3.5 if i // sources % 2 else 5.0,
        }
        for i in range(count)
    ]


def test_a_60_row_csv_gets_labelled_grids_with_every_image_and_few_empty_cells(tmp_path):
    """Such a CSV gave, per source, an 8184x714 sheet of 108 cells holding 6 images."""
    job = tmp_path / "job"
    rows = make_job(job, csv_like_rows())
    paths = write_contact_sheets(job)
    assert len(paths) == 10
    for k, path in enumerate(paths):
        mine = [(i, row) for i, row in enumerate(rows) if row["source"] == f"/data/photo{k}.jpg"]
        [page] = pages_of(job, [row for _, row in mine])
        sheet = Image.open(path).convert("RGB")
        assert sheet.size == page.layout.size and max(sheet.size) < 2000
        colours = shown(sheet, page)
        assert fill(colours) >= 1 - MAX_EMPTY and len(colours) == 6  # 3 x 2: no empty cell at all
        # in the rows' order, each labelled with what differs: strength, guidance, then seed and the prompt's end
        for n, (i, row) in enumerate(mine):
            lay, cell = page.layout, (0, 0, n % 3, n // 3)
            assert close(centre(sheet, lay.cell_box(*cell)), colour(i))
            style = STYLES[n]
            params = f"strength {row['strength']}, guidance {row['guidance_scale']}"
            label = f"{params}\nseed {row['seed']} / prompt …{style}"  # the prompt, with what changes with it, below
            assert_label(sheet, lay.cell_label_box(*cell), label, lay.font_size)


def test_columns_that_change_together_are_one_axis(tmp_path):
    job = tmp_path / "job"
    pairs = [(0.5, 1), (0.7, 2), (0.9, 3)]  # strength and seed set row by row, always together
    rows = make_job(job, [{"prompt": p, "strength": s, "seed": d} for p in ("a tiger", "a lion") for s, d in pairs])
    grid, _ = arrange(rows)
    assert (grid.cols, grid.rows, grid.outer_cols, grid.fill) == (2, 3, 1, 1.0)
    [path] = write_contact_sheets(job)
    [page] = pages_of(job, rows)
    lay, sheet = page.layout, Image.open(path).convert("RGB")
    assert sheet.size == lay.size and fill(shown(sheet, page)) == 1
    for down, (strength, seed) in enumerate(pairs):
        assert_label(sheet, lay.row_label_box(0, 0, down), f"strength {strength} / seed {seed}", lay.font_size)
    for col, prompt in enumerate(["a tiger", "a lion"]):
        assert_label(sheet, lay.header_box(0, 0, col), f"prompt {prompt}", lay.font_size)
    for i, row in enumerate(rows):
        cell = (0, 0, ["a tiger", "a lion"].index(row["prompt"]), pairs.index((row["strength"], row["seed"])))
        assert close(centre(sheet, lay.cell_box(*cell)), colour(i))


def test_a_cartesian_sweep_keeps_its_axes_and_fills_its_cells(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, sweep(strength=[0.5, 0.9], seed=[1, 2, 3], num_inference_steps=[8, 20]))
    grid, _ = arrange(rows)
    assert (grid.cols, grid.rows, grid.outer_cols, grid.outer_rows, grid.cell_labels) == (2, 3, 2, 1, None)
    [path] = write_contact_sheets(job)
    [page] = pages_of(job, rows)
    assert fill(shown(Image.open(path).convert("RGB"), page)) == 1


def test_a_partly_failed_sweep_keeps_its_axes_until_a_quarter_is_missing(tmp_path):
    """Failed items leave "no image" cells in the sweep's grid while at most a quarter of it is missing; past
    that, the sheet lays out what finished, labelled, rather than a grid of holes."""
    combos = sweep(strength=[0.5, 0.7, 0.9], seed=[1, 2, 3])
    for failed, axes_kept in [({1, 5}, True), ({1, 2, 5, 7, 8}, False)]:
        job = tmp_path / f"failed-{len(failed)}"
        rows = [row for i, row in enumerate(make_job(job, combos)) if i not in failed]
        for i in failed:
            (job / f"img-{i}.png").unlink()
        [path] = write_contact_sheets(job)
        [page] = pages_of(job, rows)
        sheet = Image.open(path).convert("RGB")
        colours = shown(sheet, page)
        assert fill(colours) >= 1 - MAX_EMPTY and sheet.size == page.layout.size
        assert (page.layout.cols, page.layout.rows) == ((3, 3) if axes_kept else (4, 1))
        assert sorted(c for c in colours if c) == sorted(colour(i) for i in range(9) if i not in failed)


def test_variations_of_one_grid_point_each_get_a_cell(tmp_path):
    """Derived seeds are no axis, so variations of one grid point (same parameters, other derived seeds) used to
    land in one cell, the last drawn over the others."""
    job = tmp_path / "job"
    combos = [{"strength": s, "seed": 1000 + i, "seed_derived": True} for i, s in enumerate([0.5, 0.5, 0.9, 0.9])]
    rows = make_job(job, combos)
    [path] = write_contact_sheets(job)
    [page] = pages_of(job, rows)
    lay, sheet = page.layout, Image.open(path).convert("RGB")
    assert (lay.cols, lay.rows) == (2, 2)
    assert sorted(c for c in shown(sheet, page) if c) == sorted(colour(i) for i in range(4))
    assert_label(sheet, lay.row_label_box(0, 0, 1), "variation 1", lay.font_size)


def test_one_long_axis_wraps_onto_a_labelled_grid(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, [{"prompt": f"prompt number {i}"} for i in range(20)])
    [path] = write_contact_sheets(job)
    [page] = pages_of(job, rows)
    assert (page.layout.cols, page.layout.rows) == (5, 4)  # not a strip 20 cells wide
    assert fill(shown(Image.open(path).convert("RGB"), page)) == 1


@pytest.mark.slow  # the suite's default run stays short: `pytest -m slow` runs it
def test_no_arrangement_is_more_than_a_quarter_empty():
    """Random mixes: parts of grids, CSV-like rows, co-varying columns, derived seeds."""
    rng = random.Random(7)
    for _ in range(300):
        values = {name: rng.sample(choices, rng.randint(1, len(choices))) for name, choices in [
            ("strength", [0.3, 0.5, 0.7, 0.9]), ("seed", [1, 2, 3, 4, 5]), ("num_inference_steps", [4, 8, 28]),
            ("prompt", ["a", "b", "c"]), ("guidance_scale", [2.5, 3.5]),
        ]}  # fmt: skip
        rows = [{**DEFAULTS, **combo} for combo in sweep(**values)]
        rows = rng.sample(rows, rng.randint(1, len(rows)))
        if rng.random() < 0.3:  # seed and strength set together, row by row
            rows = [{**row, "seed": int(row["strength"] * 10)} for row in rows]
        if rng.random() < 0.3:
            rows = [{**row, "seed_derived": True} for row in rows]
        grid, _ = arrange(rows)
        assert grid.fill >= 1 - MAX_EMPTY, (len(rows), grid.cols, grid.rows, grid.outer_cols, grid.outer_rows)
        assert len(grid.cells) == len(rows)  # every row shown, once
    for count in range(1, 2000):
        cols = grid_columns(count)
        assert count / (cols * -(-count // cols)) >= 0.85 and (count > 4 or cols == count)


def test_labelled_cells_lie_inside_the_sheet_and_never_overlap():
    lay = SheetLayout(100, 3, 2, cell_label_lines=3)
    boxes = [lay.banner_box, lay.source_label_box, lay.source_box]
    for c, r in itertools.product(range(3), range(2)):
        boxes += [lay.cell_label_box(0, 0, c, r), lay.cell_box(0, 0, c, r)]
    width, height = lay.size
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes)
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert lay.cell_label_box(0, 0, 0, 0)[3] - lay.cell_label_box(0, 0, 0, 0)[1] == 3 * lay.label_h
    assert lay.source_box[1] == lay.cell_box(0, 0, 0, 0)[1]  # the source is level with the first row of cells


def test_a_large_labelled_grid_splits_into_pages_showing_each_item_once(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, csv_like_rows(count=40, sources=1))
    paths = write_contact_sheets(job, max_side=900)
    pages = pages_of(job, rows, max_side=900)
    assert len(paths) == len(pages) > 1
    found = [c for path, page in zip(paths, pages) for c in shown(Image.open(path).convert("RGB"), page) if c]
    assert sorted(found) == sorted(colour(i) for i in range(40))


def test_a_csv_job_run_end_to_end_has_full_sheets(tmp_path, tiny_config):
    """A semicolon CSV (decimal commas) with a prompt and seed per row and strengths set row by row."""
    cat = [
        ("cat", f"a cat, {style}", strength, seed)
        for seed, (style, strength) in enumerate(zip(STYLES, ["0,6", "0,9", "0,75", "0,6", "0,9", "0,75"]))
    ]
    coffee = [("coffee", f"a cup, {style}", "0,8", seed) for seed, style in enumerate(STYLES[:3])]
    lines = [
        f'{PHOTOS / name}.jpg;"{prompt}";{strength};{seed};4;64;64' for name, prompt, strength, seed in cat + coffee
    ]
    header = "Source;Prompt;Strength;Seed;Num_Inference_Steps;Width;Height\n"
    (tmp_path / "rows.csv").write_text(header + "\n".join(lines) + "\n")
    extra = ["--pipeline", str(tiny_config), "--output-root", "out"]
    result = batch_edit("run", "rows.csv", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "rows"
    metadata = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)
    for stem, count, shape in [("cat", 6, (3, 2)), ("coffee", 3, (3, 1))]:
        mine = [row for row in metadata.to_dict("records") if Path(row["source"]).stem == stem]
        [page] = pages_of(folder, mine, thumb=128)  # 64 px outputs: the smallest cells
        assert (page.layout.cols, page.layout.rows) == shape
        sheet = Image.open(folder / f"contact-sheet-{stem}.png").convert("RGB")
        assert sheet.size == page.layout.size
        assert sum(c is not None for c in shown(sheet, page)) == count == len(mine)


def test_items_that_differ_only_by_mask_are_a_mask_axis_not_numbered_variations():
    base = {"source": "/p/cat.png", "prompt": "a tiger", "strength": "0.5", "seed": "7", "seed_derived": "True"}
    rows = [{**base, "mask": f"/p/masks/{side}.png", "file_name": f"{side}.png"} for side in ("left", "right")]
    grid, fixed = arrange(rows)
    assert grid.headers == ("mask left.png", "mask right.png") and "variation" not in " ".join(grid.headers)
    kept = [{**base, "mask_file_name": f"sources/cat-mask-{h}.png", "file_name": f"{h}.png"} for h in ("a1", "b2")]
    assert arrange(kept)[0].headers == ("mask cat-mask-a1.png", "mask cat-mask-b2.png")
    same_name = [{**base, "mask": f"/p/{folder}/m.png", "file_name": f"{folder}.png"} for folder in ("x", "y")]
    # the name alone tells none apart: as much of the path as does
    assert arrange(same_name)[0].headers == ("mask x/m.png", "mask y/m.png")
