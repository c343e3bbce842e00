"""Contact sheets that tell their cells apart: sizes by what was asked, no empty axis values, prompts given room
(their own lines in a plain grid, above a sheet's only result), sub-grid titles worded like every other label;
and result names that the job's contact sheets would overwrite refused before anything runs."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from PIL import Image

from batch_edit.plan import derive_seed
from batch_edit.sheet_arrangement import arrange
from batch_edit.sheets import _font, fit_paragraphs, plan_pages, write_contact_sheets

from .conftest import PHOTOS, batch_edit
from .test_sheets import CAT, DEFAULTS, assert_label, blank, centre, close, colour, make_job, sweep


def pages_of(rows: list[dict]):
    """The pages of these rows' sheet, at the cell size of 32 px results."""
    grid, _ = arrange(rows)
    return grid, plan_pages(
        grid.cols, grid.rows, grid.outer_cols, grid.outer_rows, row_labels=bool(grid.row_labels),
        titled=bool(grid.titles), cell_label_lines=grid.cell_label_lines, header_lines=grid.header_lines, thumb=128,
    )  # fmt: skip


def visible(box, text: str, font_size: int) -> str:
    """The words draw_label puts in `box` (what a reader sees, ellipses included), one line after another."""
    font, line_h, inset = _font(font_size, text), font_size * 3 // 2, max(2, font_size // 4)
    lines = fit_paragraphs(text.split("\n"), font, box[2] - box[0] - 2 * inset, max(1, (box[3] - box[1]) // line_h))
    return " ".join(lines)


# --- names the job's contact sheets use ------------------------------------------------------------------------


def run_manifest(tmp_path, config, text: str, command: str) -> tuple[int, str]:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(textwrap.dedent(text))
    result = batch_edit(command, str(manifest), "--pipeline", str(config), "--output-root", str(tmp_path / "out"))
    return result.returncode, result.stderr


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_file_name_the_contact_sheets_use_is_refused_before_anything_runs(tmp_path, tiny_config, command):
    code, stderr = run_manifest(tmp_path, tiny_config, f"""
        jobs:
          - {{name: j, sources: {CAT}, prompts: x, width: 32, height: 32, num_inference_steps: 2,
             file_name: "Contact-Sheet-{{stem}}"}}
    """, command)  # fmt: skip
    assert code == 2 and "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "('j'): field 'file_name':" in line and "'Contact-Sheet-cat.png'" in line and "contact sheets" in line
    assert not (tmp_path / "out" / "j").exists()  # nothing ran, no folder made


def test_a_source_whose_stem_makes_a_default_name_of_a_contact_sheet_is_refused(tmp_path, tiny_config):
    """`{stem}-{id}` of contact-sheet-old.jpg would be deleted as a stale sheet at the end of the job."""
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "contact-sheet-old.jpg")
    code, stderr = run_manifest(tmp_path, tiny_config, f"""
        jobs:
          - {{name: j, sources: [{CAT}, {tmp_path / "contact-sheet-old.jpg"}], prompts: x}}
    """, "plan")  # fmt: skip
    assert code == 2
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "source 'contact-sheet-old.jpg': the default result name 'contact-sheet-old-" in line
    assert "rename the source file or set a 'file_name' that starts otherwise" in line


def test_names_that_only_contain_contact_sheet_are_fine(tmp_path, tiny_config):
    code, stderr = run_manifest(tmp_path, tiny_config, f"""
        jobs: [{{name: j, sources: {CAT}, prompts: x, file_name: "my-contact-sheet-{{stem}}"}}]
    """, "plan")  # fmt: skip
    assert code == 0, stderr


# --- sizes as asked, no empty axis values ------------------------------------------------------------------


def test_a_fit_size_sweep_is_labelled_by_the_sizes_asked_for(tmp_path):
    """`fit` keeps the source's shape: 48x64 asked gives 64x48, and 32x64 and 48x32 asked both give 48x32. The
    axis reads what was asked, so the sweep stays a grid, with no invented "variation 0/1"."""
    written = {("32", "32"): (32, 32), ("32", "64"): (48, 32), ("48", "32"): (48, 32), ("48", "64"): (64, 48)}
    combos = [
        {"requested_width": w, "requested_height": h, "resize": mode, "seed": 7, "seed_derived": True,
         "width": written[(w, h)][0] if mode == "fit" else w, "height": written[(w, h)][1] if mode == "fit" else h}
        for (w, h) in written for mode in ("fit", "pad")
    ]  # fmt: skip
    job = tmp_path / "job"
    rows = make_job(job, combos)
    [path] = write_contact_sheets(job)
    grid, [page] = pages_of(rows)
    sheet, lay = Image.open(path).convert("RGB"), page.layout
    assert sheet.size == lay.size and grid.cell_labels is None
    sizes = ["32x32", "32x64", "48x32", "48x64"]
    for col, size in enumerate(sizes):
        assert_label(sheet, lay.header_box(0, 0, col), f"size {size}", lay.font_size)
    for down, mode in enumerate(["fit", "pad"]):
        assert_label(sheet, lay.row_label_box(0, 0, down), f"resize {mode}", lay.font_size)
    for i, row in enumerate(rows):
        box = lay.cell_box(0, 0, sizes.index(f"{row['requested_width']}x{row['requested_height']}"), ["fit", "pad"].index(row["resize"]))  # fmt: skip
        assert close(centre(sheet, box), colour(i))


def test_an_axis_value_missing_from_a_row_is_left_out_of_its_label():
    """Two items alike but for their derived seeds get variations 0 and 1; the item beside them has none, and
    its label says nothing of variations (it read "variation ," before)."""
    seeds = [derive_seed(CAT, "a tiger", v) for v in (0, 1)]
    rows = [
        {**DEFAULTS, "strength": 0.5, "seed": 5, "seed_derived": True},
        *({**DEFAULTS, "strength": 0.7, "seed": seed, "seed_derived": True} for seed in seeds),
    ]
    grid, _ = arrange(rows)
    labels = sorted([*(grid.cell_labels or {}).values(), *grid.headers, *grid.row_labels])
    assert "strength 0.5" in labels and all(label.strip() for label in labels)
    assert not [label for label in labels if "variation ," in label or label.rstrip().endswith("variation")]
    assert {"variation 0", "variation 1"} <= {part for label in labels for part in label.split(", ")}


# --- prompts given room --------------------------------------------------------------------------------------


def test_a_plain_grid_shows_each_cells_prompt_on_lines_of_its_own(tmp_path):
    """CSV rows that form no grid: five other values differ too, and the prompts used to come last, cut to
    "prompt a…" for both "a dog" and the long one."""
    long = "a very long prompt about a cat sitting on a chair in the garden"
    rows_in = [
        {"prompt": "a cat", "strength": 0.3, "seed": 1}, {"prompt": "a cat", "strength": 0.5, "seed": 2},
        {"prompt": "a cat", "strength": 0.6, "seed": 3},
        {"prompt": "a dog", "strength": 0.3, "seed": 1, "num_inference_steps": 4, "guidance_scale": 1},
        {"prompt": "a dog", "strength": 0.5, "seed": 5, "width": 48, "requested_width": 48},
        {"prompt": long, "strength": 0.5, "seed": 5, "height": 48, "requested_height": 48},
    ]  # fmt: skip
    job = tmp_path / "job"
    rows = make_job(job, [{"num_inference_steps": 2, "width": 32, "height": 32, "requested_width": 32,
                           "requested_height": 32, **row} for row in rows_in])  # fmt: skip
    [path] = write_contact_sheets(job, thumb=128)
    grid, [page] = pages_of(rows)
    sheet, lay = Image.open(path).convert("RGB"), page.layout
    assert sheet.size == lay.size
    seen = []
    for position, label in grid.cell_labels.items():
        box = lay.cell_label_box(*position)
        assert_label(sheet, box, label, lay.font_size)
        seen.append(visible(box, label, lay.font_size))
    assert "prompt a dog" in seen[3] and "prompt a dog" in seen[4] and "prompt a very long prompt" in seen[5]
    assert seen[3].startswith("strength 0.3, seed 1")  # the other values still come first


def test_a_sheet_of_one_result_shows_its_prompt_above_it(tmp_path):
    """Augmentation: one result per source, and its prompt the only thing chosen for it."""
    prompt = "a portrait of an astronaut in a spacesuit, oil painting"
    job = tmp_path / "job"
    make_job(job, [{"prompt": prompt, "requested_width": 32, "requested_height": 32}])
    [path] = write_contact_sheets(job, thumb=128)
    _, [page] = pages_of([{**DEFAULTS, "prompt": prompt}])
    sheet, lay = Image.open(path).convert("RGB"), page.layout
    box = lay.cell_label_box(0, 0, 0, 0)
    assert sheet.size == lay.size and close(centre(sheet, lay.cell_box(0, 0, 0, 0)), colour(0))
    assert_label(sheet, box, f"prompt {prompt}", lay.font_size)
    assert visible(box, f"prompt {prompt}", lay.font_size) == f"prompt {prompt}"  # the whole of it
    _, fixed = arrange([{**DEFAULTS, "prompt": prompt}])
    assert "prompt" not in [axis.column for axis in fixed]  # the banner leaves it to the cell
    assert not blank(sheet, lay.banner_box)


def test_sub_grid_titles_read_like_every_other_label():
    rows = [{**DEFAULTS, **combo} for combo in sweep(strength=[0.5, 0.9], seed=[1, 2], num_inference_steps=[8, 20],
                                                       guidance_scale=[2.5, 3.5])]  # fmt: skip
    grid, _ = arrange(rows)
    assert grid.titles == (("steps 8, guidance 2.5", "steps 8, guidance 3.5"),
                           ("steps 20, guidance 2.5", "steps 20, guidance 3.5"))  # fmt: skip
