"""Contact sheets: geometry from SheetLayout/plan_pages, then pixels sampled where that geometry says they are."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageStat

from batch_edit.job_listing import METADATA_COLUMNS
from batch_edit.sheet_arrangement import SINGLE_PROMPT_LINES
from batch_edit.sheets import (
    BACKGROUND,
    EMPTY,
    LETTERBOX,
    MIN_CELL,
    MIN_THUMB,
    PLACEHOLDER,
    SheetLayout,
    _font,
    draw_label,
    find_axes,
    fit_lines,
    load_thumbnail,
    plan_pages,
    sheet_stems,
    write_contact_sheets,
)  # fmt: skip

PHOTOS = Path(__file__).resolve().parent.parent / "jobs" / "images"
CAT, COFFEE = (PHOTOS / "cat.jpg").as_posix(), (PHOTOS / "coffee.jpg").as_posix()
DEFAULTS = dict(
    job="job", source=CAT, prompt="a tiger", seed=1, seed_derived=False, strength=0.8, num_inference_steps=28,
    guidance_scale=3.5, width=256, height=256, requested_width=256, requested_height=256, resize="center-crop",
    model="tiny", revision="", dtype="float32", quantization="", device="cpu", batch_size=1, seconds=0.1,
    finished_at="2025-01-01T00:00:00+0000",
)  # fmt: skip


def colour(i: int) -> tuple[int, int, int]:
    """Distinct for i < 144 and never the sheet's own colours (background, letterbox, empty cells)."""
    return 20 + 19 * (i % 12), 20 + 19 * (i // 12 % 12), (37 * i) % 200 + 30


def make_job(folder: Path, combos: list[dict], size: tuple[int, int] = (32, 32)) -> list[dict]:
    """One solid-colour PNG per combo (the i-th gets colour(i)) and the metadata.csv that lists them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, combo in enumerate(combos):
        row = {**DEFAULTS, "item_id": f"{i:016x}", "file_name": f"img-{i}.png", **combo}
        Image.new("RGB", size, colour(i)).save(folder / row["file_name"], compress_level=1)  # fast to write
        rows.append(row)
    write_metadata(folder, rows)
    return rows


def write_metadata(folder: Path, rows: list[dict]) -> None:
    with (folder / "metadata.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def sweep(**axes: list) -> list[dict]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def centre(sheet: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    return sheet.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))


def close(a, b, tolerance: int = 2) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= tolerance


def blank(sheet: Image.Image, box) -> bool:
    return sheet.crop(box).getextrema() == ((255, 255), (255, 255), (255, 255))


def assert_label(sheet: Image.Image, box, text: str, font_size: int) -> None:
    """Something is written there, and it is `text`: the same pixels draw_label gives on a blank sheet."""
    assert not blank(sheet, box), f"no label where {text!r} goes"
    canvas = Image.new("RGB", (box[2], box[3]), BACKGROUND)
    draw_label(ImageDraw.Draw(canvas), box, text, font_size)
    assert sheet.crop(box).tobytes() == canvas.crop(box).tobytes(), f"the label there is not {text!r}"


def test_strength_by_seed_sweep_lands_each_image_in_its_cell(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, sweep(strength=[0.9, 0.5, 0.7], seed=[2, 1]))  # unsorted on purpose
    [path] = write_contact_sheets(job)
    assert path == job / "contact-sheet-cat.png"
    [page] = plan_pages(3, 2, row_labels=True, titled=False)
    lay = page.layout
    assert lay.thumb == 256 and lay.size[0] > 4 * 256 and lay.size[1] > 2 * 256  # source + 3 across, 2 down
    sheet = Image.open(path).convert("RGB")
    assert sheet.size == lay.size
    strengths, seeds = ["0.5", "0.7", "0.9"], ["1", "2"]  # across and down, sorted
    for i, row in enumerate(rows):
        col, down = strengths.index(str(row["strength"])), seeds.index(str(row["seed"]))
        assert close(centre(sheet, lay.cell_box(0, 0, col, down)), colour(i)), (row["strength"], row["seed"])
    for col, value in enumerate(strengths):
        assert_label(sheet, lay.header_box(0, 0, col), f"strength {value}", lay.font_size)
    for down, value in enumerate(seeds):
        assert_label(sheet, lay.row_label_box(0, 0, down), f"seed {value}", lay.font_size)
    # the source comes first: left of every cell, level with the first row, and it is the photo
    source = lay.source_box
    assert source[2] < lay.row_label_box(0, 0, 0)[0] and source[1] == lay.cell_box(0, 0, 0, 0)[1]
    assert sheet.crop(source).tobytes() == load_thumbnail(Path(CAT), 256).tobytes()
    photo = Image.open(CAT).convert("RGB")  # 451x300: letterboxed above and below, its colours in the middle
    top = (source[3] - source[1] - round(300 * 256 / 451)) // 2
    assert close(sheet.getpixel((source[0] + 128, source[1] + top // 2)), LETTERBOX, 0)
    middle = sheet.crop((source[0], source[1] + top + 2, source[2], source[3] - top - 2))
    assert close(ImageStat.Stat(middle).mean, ImageStat.Stat(photo).mean, 6)
    assert_label(sheet, lay.source_label_box, "source", lay.font_size)


def test_third_axis_makes_titled_sub_grids(tmp_path):
    job = tmp_path / "job"
    # by AXES priority: strength across, seed down, steps as the outer axis (one sub-grid per step count)
    rows = make_job(job, sweep(strength=[0.5, 0.9], num_inference_steps=[100, 8, 20], seed=[1, 2]))
    [path] = write_contact_sheets(job)
    [page] = plan_pages(2, 2, 3, 1, row_labels=True, titled=True)
    lay, sheet = page.layout, Image.open(path).convert("RGB")
    assert sheet.size == lay.size
    steps = ["8", "20", "100"]  # numerically, not as text
    for i, row in enumerate(rows):
        col, outer = [0.5, 0.9].index(row["strength"]), steps.index(str(row["num_inference_steps"]))
        assert close(centre(sheet, lay.cell_box(outer, 0, col, row["seed"] - 1)), colour(i))
    for outer, value in enumerate(steps):
        assert_label(sheet, lay.title_box(outer, 0), f"steps {value}", lay.font_size)
        for down, seed in enumerate([1, 2]):
            assert_label(sheet, lay.row_label_box(outer, 0, down), f"seed {seed}", lay.font_size)
        for col, strength in enumerate(["0.5", "0.9"]):
            assert_label(sheet, lay.header_box(outer, 0, col), f"strength {strength}", lay.font_size)
    assert lay.title_box(1, 0)[0] > lay.cell_box(0, 0, 1, 0)[2]  # the second sub-grid is right of the first


def test_fourth_axis_stacks_sub_grids_down_with_both_values_in_the_title(tmp_path):
    job = tmp_path / "job"
    make_job(job, sweep(strength=[0.5, 0.9], num_inference_steps=[8, 20], guidance_scale=[2.5, 3.5], seed=[1, 2]))
    [path] = write_contact_sheets(job)
    [page] = plan_pages(2, 2, 2, 2, row_labels=True, titled=True)
    lay, sheet = page.layout, Image.open(path).convert("RGB")
    assert sheet.size == lay.size
    # outer columns: steps (the 3rd axis); outer rows: guidance (the 4th)
    assert_label(sheet, lay.title_box(1, 1), "steps 20, guidance 3.5", lay.font_size)
    assert_label(sheet, lay.title_box(0, 1), "steps 8, guidance 3.5", lay.font_size)
    assert lay.title_box(0, 1)[1] > lay.cell_box(0, 0, 0, 1)[3]  # the guidance 3.5 row of sub-grids is below


def test_two_sources_give_two_sheets(tmp_path):
    job = tmp_path / "job"
    make_job(job, [{"source": CAT, "strength": 0.5}, {"source": COFFEE}, {"source": CAT, "strength": 0.9}])
    assert write_contact_sheets(job) == [job / "contact-sheet-cat.png", job / "contact-sheet-coffee.png"]
    cat = Image.open(job / "contact-sheet-cat.png").convert("RGB")
    lay = plan_pages(2, 1, row_labels=False, titled=False)[0].layout
    assert cat.size == lay.size
    assert [close(centre(cat, lay.cell_box(0, 0, c, 0)), colour(i)) for c, i in [(0, 0), (1, 2)]] == [True, True]
    coffee = Image.open(job / "contact-sheet-coffee.png").convert("RGB")
    one = SheetLayout(256, cell_label_lines=SINGLE_PROMPT_LINES)  # its one result has its prompt above it
    assert coffee.size == one.size
    assert coffee.crop(one.source_box).tobytes() == load_thumbnail(Path(COFFEE), 256).tobytes()


def test_same_stem_in_other_folders_gets_distinct_names_and_a_placeholder_source(tmp_path):
    job = tmp_path / "job"
    sources = [CAT, "/a/cat.jpg", "/b/Cat.png", "https://example.com/photos/cat.jpg"]
    make_job(job, [{"source": source} for source in sources])
    paths = write_contact_sheets(job)
    assert len(paths) == 4 and len({p.name.lower() for p in paths}) == 4  # distinct even where case is ignored
    for path in paths:  # the stem, then a short hash of the source key
        assert re.fullmatch(r"contact-sheet-[cC]at-[0-9a-f]{8}\.png", path.name), path.name
    assert sorted(job.glob("contact-sheet-*.png")) == sorted(paths)
    # a local source that no longer exists, or a URL, shows a placeholder where the source goes
    box = SheetLayout(256).source_box
    corner = (box[2] - 3, box[3] - 3)
    sheets = [Image.open(path).convert("RGB") for path in paths]
    assert [sheet.getpixel(corner) == PLACEHOLDER for sheet in sheets] == [False, True, True, True]
    assert not blank(sheets[1], box)


def test_stems_are_safe_and_only_clashing_ones_get_a_hash():
    stems = sheet_stems(["/x/my photo (1).jpg", "https://h.example/p/caf%C3%A9.jpg?x=1", "/x/a.png", "/y/a.png",
                         "/z/b.png", "/z/b-p2.png", "/z/...png"])  # fmt: skip
    assert stems["/x/my photo (1).jpg"] == "my_photo_1"
    assert stems["https://h.example/p/caf%C3%A9.jpg?x=1"] == "caf"
    assert stems["/x/a.png"] != stems["/y/a.png"] and stems["/x/a.png"].startswith("a-")
    assert stems["/z/b.png"].startswith("b-") and stems["/z/b-p2.png"].startswith("b-p2-")  # page names can't clash
    assert stems["/z/...png"] == "source"
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", stem) for stem in stems.values())


def test_big_grid_stays_within_max_side(tmp_path):
    job = tmp_path / "job"
    strengths = [round(0.05 + 0.075 * i, 3) for i in range(12)]
    rows = make_job(job, sweep(strength=strengths, seed=list(range(12))), size=(512, 512))
    where = {(strengths.index(row["strength"]), row["seed"]): colour(i) for i, row in enumerate(rows)}
    # 2048: one page of shrunk thumbnails; 1024: even 96 px ones don't fit, so pages; 2048 again: pages 2+ are stale
    for max_side, count in [(2048, 1), (1024, 4), (2048, 1)]:
        paths = write_contact_sheets(job, max_side=max_side)
        pages = plan_pages(12, 12, row_labels=True, titled=False, max_side=max_side)
        names = ["contact-sheet-cat.png"] + [f"contact-sheet-cat-p{n}.png" for n in range(2, count + 1)]
        assert [p.name for p in paths] == names and len(pages) == count
        assert sorted(job.glob("contact-sheet-*.png")) == sorted(paths)
        found = {}
        for path, page in zip(paths, pages):
            sheet = Image.open(path).convert("RGB")
            assert sheet.size == page.layout.size and max(sheet.size) <= max_side
            assert MIN_THUMB <= page.layout.thumb < 256 and (count == 1 or page.layout.thumb == MIN_THUMB)
            for (ci, c), (ri, r) in itertools.product(enumerate(page.cols), enumerate(page.rows)):
                found.setdefault((c, r), []).append(centre(sheet, page.layout.cell_box(0, 0, ci, ri)))
        assert sorted(found) == sorted(where) and all(len(v) == 1 for v in found.values())  # each cell once
        if count == 1:  # the largest thumbnail that fits: one pixel more would not
            assert max(SheetLayout(pages[0].layout.thumb + 1, 12, 12, row_labels=True).size) > max_side
        assert all(close(found[cell][0], expected) for cell, expected in where.items())


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, False, False), (3, 2, 1, 1, True, False), (3, 2, 2, 3, True, True)])
def test_layout_boxes_lie_inside_the_sheet_and_never_overlap(shape):
    cols, rows, outer_cols, outer_rows, row_labels, titled = shape
    lay = SheetLayout(100, cols, rows, outer_cols, outer_rows, row_labels, titled)
    boxes = [lay.banner_box, lay.source_label_box, lay.source_box]
    for oc, orow in itertools.product(range(outer_cols), range(outer_rows)):
        boxes += [lay.title_box(oc, orow)] if titled else []
        boxes += [lay.header_box(oc, orow, c) for c in range(cols)]
        boxes += [lay.row_label_box(oc, orow, r) for r in range(rows)] if row_labels else []
        boxes += [lay.cell_box(oc, orow, c, r) for c, r in itertools.product(range(cols), range(rows))]
    width, height = lay.size
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes)
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert all(x1 - x0 == y1 - y0 == 100 for x0, y0, x1, y1 in boxes[-cols * rows :])  # cells: thumb x thumb


def test_pages_cover_every_cell_once_and_fit():
    for shape in [(40, 3, 1, 1), (3, 40, 1, 1), (5, 5, 9, 4), (30, 30, 2, 2), (200, 1, 1, 1)]:
        pages = plan_pages(*shape, row_labels=True, titled=shape[2] > 1, max_side=2000)
        seen = [cell for p in pages for cell in itertools.product(p.outer_cols, p.outer_rows, p.cols, p.rows)]
        assert sorted(seen) == sorted(itertools.product(*(range(n) for n in (shape[2], shape[3], shape[0], shape[1]))))
        assert all(max(p.layout.size) <= 2000 for p in pages)
        assert len(pages) > 1 and pages[0].layout.thumb == MIN_THUMB
        for sizes in ({len(p.cols) for p in pages}, {len(p.rows) for p in pages}):
            assert max(sizes) - min(sizes) <= 1  # balanced: 12 in pages of at most 8 is 6 + 6, not 8 + 4
    # thumbnails asked smaller than MIN_THUMB are never enlarged; a max_side below one cell still ends, a cell a page
    tiny = plan_pages(2, 2, row_labels=True, titled=False, thumb=64, max_side=100)
    assert len(tiny) == 4 and {(p.layout.thumb, p.layout.cols, p.layout.rows) for p in tiny} == {(64, 1, 1)}


def test_missing_image_leaves_an_empty_cell(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, sweep(strength=[0.5, 0.9], seed=[1, 2]))
    (job / rows[1]["file_name"]).unlink()  # strength 0.5, seed 2
    (job / "notes.png").write_bytes(b"not an image")  # not in the metadata: never read
    [path] = write_contact_sheets(job)
    lay = plan_pages(2, 2, row_labels=True, titled=False)[0].layout
    sheet = Image.open(path).convert("RGB")
    empty = lay.cell_box(0, 0, 0, 1)
    assert sheet.getpixel((empty[2] - 3, empty[3] - 3)) == EMPTY
    assert not close(centre(sheet, empty), colour(1))
    for i, (col, down) in [(0, (0, 0)), (2, (1, 0)), (3, (1, 1))]:
        assert close(centre(sheet, lay.cell_box(0, 0, col, down)), colour(i))


def test_unreadable_image_is_an_empty_cell_too(tmp_path):
    job = tmp_path / "job"
    rows = make_job(job, sweep(strength=[0.5, 0.9]))
    (job / rows[0]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    [path] = write_contact_sheets(job)
    lay = plan_pages(2, 1, row_labels=False, titled=False)[0].layout
    box = lay.cell_box(0, 0, 0, 0)
    assert Image.open(path).convert("RGB").getpixel((box[2] - 3, box[3] - 3)) == EMPTY


def test_empty_or_absent_metadata_gives_no_sheets_and_removes_stale_ones(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    assert write_contact_sheets(job) == []
    for name in ("contact-sheet-old.png", "contact-sheet-old-p2.png", "other.png", "contact-sheet-notes.txt"):
        (job / name).write_bytes(b"x")
    write_metadata(job, [])
    assert write_contact_sheets(job) == []
    assert sorted(p.name for p in job.iterdir()) == ["contact-sheet-notes.txt", "metadata.csv", "other.png"]
    assert write_contact_sheets(tmp_path / "never-created") == []


def test_a_source_whose_images_are_all_gone_loses_its_sheet_and_no_temporaries_stay(tmp_path):
    job = tmp_path / "job"
    make_job(job, [{"source": CAT}, {"source": COFFEE}])
    assert len(write_contact_sheets(job)) == 2
    (job / "img-1.png").unlink()  # coffee's only image: its row is skipped, so coffee has no sheet any more
    assert write_contact_sheets(job) == [job / "contact-sheet-cat.png"]
    assert [p.name for p in job.iterdir() if "contact-sheet" in p.name] == ["contact-sheet-cat.png"]  # no .tmp


def test_single_image_and_single_axis_sheets(tmp_path):
    job = tmp_path / "one"
    make_job(job, [{}], size=(64, 32))  # wide: letterboxed above and below
    [path] = write_contact_sheets(job, thumb=128)
    lay = SheetLayout(128, cell_label_lines=SINGLE_PROMPT_LINES)
    sheet = Image.open(path).convert("RGB")
    assert sheet.size == lay.size
    box = lay.cell_box(0, 0, 0, 0)
    assert close(centre(sheet, box), colour(0)) and sheet.getpixel((box[0] + 64, box[1] + 4)) == LETTERBOX
    assert_label(sheet, lay.cell_label_box(0, 0, 0, 0), "prompt a tiger", lay.font_size)  # nothing swept but it
    job = tmp_path / "row"
    make_job(job, sweep(guidance_scale=[3.5, 10, 2]))
    [path] = write_contact_sheets(job, thumb=128)
    lay = plan_pages(3, 1, row_labels=False, titled=False, thumb=128)[0].layout
    sheet = Image.open(path).convert("RGB")
    assert sheet.size == lay.size and lay.rows == 1
    assert [close(centre(sheet, lay.cell_box(0, 0, c, 0)), colour(i)) for c, i in enumerate([2, 0, 1])] == [True] * 3


def test_small_outputs_get_small_cells_but_never_below_the_label_minimum(tmp_path):
    """A 64 px result drawn at 256 shows nothing more and makes the sheet 16 times the pixels: cells follow the
    outputs' recorded size, between MIN_CELL and the thumb asked for."""
    for side, expected in [(64, MIN_CELL), (160, 160), (1024, 256)]:
        job = tmp_path / f"side-{side}"
        rows = make_job(job, [{**combo, "width": side, "height": side // 2}
                              for combo in sweep(strength=[0.5, 0.9], seed=[1, 2])])  # fmt: skip
        [path] = write_contact_sheets(job)
        [page] = plan_pages(2, 2, row_labels=True, titled=False, thumb=expected)
        sheet = Image.open(path).convert("RGB")
        assert page.layout.thumb == expected and sheet.size == page.layout.size, side
        for i, row in enumerate(rows):
            box = page.layout.cell_box(0, 0, [0.5, 0.9].index(row["strength"]), row["seed"] - 1)
            assert box[2] - box[0] == expected and close(centre(sheet, box), colour(i)), (side, row)


def test_axes_priority_and_derived_seeds():
    rows = [{**DEFAULTS, "seed": 1000 + i, "seed_derived": "True", "strength": s, "width": w, "requested_width": w}
            for i, (s, w) in enumerate(itertools.product([0.5, 0.7], [512, 1024]))]  # fmt: skip
    swept, fixed = find_axes(rows)
    assert [a.label for a in swept] == ["strength", "size"]  # derived seeds follow the parameters: no axis
    assert swept[1].values == ("512x256", "1024x256")
    assert "seed" in [a.label for a in fixed]
    rows[0] = {**rows[0], "seed_derived": "False", "seed": 7}
    assert [a.values for a in find_axes(rows)[0] if a.label == "seed"] == [("7", "derived")]
    prompts = [{**DEFAULTS, "prompt": p, "guidance_scale": g} for p, g in [("b", 1), ("a", 2)]]  # as written
    assert [(a.label, a.values) for a in find_axes(prompts)[0]] == [("prompt", ("b", "a")), ("guidance", ("1", "2"))]


def test_long_labels_are_cut_with_an_ellipsis_and_stay_in_their_box(tmp_path):
    font = _font(20)
    prompt = "a very long prompt about a tabby cat turned into a tiger on a sofa in the afternoon light " * 4
    [line] = fit_lines(prompt, font, 200, 1)
    assert line.endswith("…") and font.getlength(line) <= 200 and line[:-1].strip() in prompt
    lines = fit_lines(prompt, font, 200, 3)
    assert len(lines) == 3 and lines[-1].endswith("…") and not lines[0].endswith("…")
    assert fit_lines("short", font, 200, 3) == ["short"]
    job = tmp_path / "job"
    # long, different from the first word to the last: nothing shared to leave out of the labels
    make_job(job, [{"prompt": f"{i} {prompt}{i}"} for i in range(3)])
    [path] = write_contact_sheets(job)
    lay = plan_pages(3, 1, row_labels=False, titled=False)[0].layout
    sheet = Image.open(path).convert("RGB")
    for col in range(3):
        header = lay.header_box(0, 0, col)
        assert_label(sheet, header, f"prompt {col} {prompt}{col}", lay.font_size)
        assert blank(sheet, (header[2], header[1], header[2] + lay.pad, header[3]))  # nothing spills over


def test_swept_prompts_are_labelled_by_what_differs(tmp_path):
    caption = "a tabby cat lying on a wooden table"
    job = tmp_path / "job"
    make_job(job, [{"prompt": f"{caption}, {style}"} for style in ("watercolor", "pencil sketch")])
    [path] = write_contact_sheets(job)
    lay = plan_pages(2, 1, row_labels=False, titled=False)[0].layout
    sheet = Image.open(path).convert("RGB")
    # in the order written
    assert_label(sheet, lay.header_box(0, 0, 0), "prompt …watercolor", lay.font_size)
    assert_label(sheet, lay.header_box(0, 0, 1), "prompt …pencil sketch", lay.font_size)
