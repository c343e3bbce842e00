"""Swept prompts on a contact sheet: each labelled by what tells it apart from the others (their shared start and
end left out), in the order the manifest gives them; masks that differ within a sheet by as much of their path as
tells them apart."""

from __future__ import annotations

import csv
import shutil

import pytest
from PIL import Image, ImageDraw

from batch_edit import sheets
from batch_edit.prompts import render_prompt
from batch_edit.sheet_arrangement import arrange, find_axes, first_seen, prompt_labels, shared_prompt
from batch_edit.sheet_layout import plan_pages
from batch_edit.sources import SourceRef

from . import test_sheet_unplanned_rows
from .conftest import PHOTOS, batch_edit
from .test_sheets import DEFAULTS, make_job
from .test_sheets2 import visible

drawn_labels = test_sheet_unplanned_rows.drawn_labels  # the fixture: every text the sheets draw
STYLES = ("oil painting style", "watercolor style", "charcoal sketch style")


@pytest.mark.parametrize(
    ("prompts", "labels"),
    [
        # a shared start and end: what is left, from the phrase's end (its "style" kept: "style," ends the phrase)
        ([f"a photo of a cat, {s}, highly detailed" for s in STYLES], [f"…{s}…" for s in STYLES]),
        # a shared start only, and a shared end only (their "style" with it: no phrase ends there)
        ([f"a photo of a tabby cat, {s}" for s in STYLES], [f"…{s}" for s in STYLES]),
        ([f"{s} of a tabby cat lying on a sofa" for s in STYLES], [f"{s.removesuffix(' style')}…" for s in STYLES]),
        # an end shared with no phrase end in it: left out whole where it is long ...
        (["a cat in oil painting style with lots of fine detail", "a cat in watercolor style with lots of fine detail"],
         ["a cat in oil painting…", "a cat in watercolor…"]),
        # ... kept where it is short, as a short start is: "a tiger", not "…tiger"
        (["a tiger", "a lion"], ["a tiger", "a lion"]),
        (["a cat in oil painting style", "a cat in watercolor style"],
         ["a cat in oil painting style", "a cat in watercolor style"]),
        # nothing shared: the whole prompts
        (["a photo of a cat at night", "the same cat by day, in the garden"],
         ["a photo of a cat at night", "the same cat by day, in the garden"]),
        # one prompt the start of the others: that one whole, the others by what they add
        (["a photo of a tabby cat", "a photo of a tabby cat in the rain", "a photo of a tabby cat in the snow"],
         ["a photo of a tabby cat", "…in the rain", "…in the snow"]),
        # a prompt ending in an ellipsis of its own: leaving out the shared end would label the other one the same
        # ("falling leaves…" twice), so the prompts as they are
        (["falling leaves…", "falling leaves falling leaves…"], ["falling leaves…", "falling leaves falling leaves…"]),
        # the same words but for a comma, or spacing: the prompts as they are
        (["a photo of a cat, green, by night", "a photo of a cat, green by night"],
         ["a photo of a cat, green, by night", "a photo of a cat, green by night"]),
        # told apart by spacing alone: the prompts as they are
        (["a photo of a cat,  by night", "a photo of a cat, by night"], ["a photo of a cat,  by night", "a photo of a cat, by night"]),
        # a single prompt, and a row without one, label nothing away
        (["a photo of a cat, oil painting style"], ["a photo of a cat, oil painting style"]),
        (["", "a photo of a cat, oil painting style"], ["", "a photo of a cat, oil painting style"]),
    ],
)  # fmt: skip
def test_prompts_are_labelled_by_what_tells_them_apart(prompts, labels):
    assert list(prompt_labels(tuple(prompts))) == labels
    assert len(set(labels)) == len(labels)


@pytest.mark.parametrize(
    "prompts, shared",
    [
        ([f"a photo of a cat sitting on a sofa, {s}, highly detailed, 4k" for s in STYLES],
         "a photo of a cat sitting on a sofa, … highly detailed, 4k"),
        (["a cat, oil painting style, highly detailed", "a cat, watercolor style, highly detailed"],
         "… highly detailed"),
        (["a photo of a tabby cat", "a photo of a tabby cat in the rain"], "a photo of a tabby cat …"),
        (["a photo of a cat at night", "the same cat by day, in the garden"], ""),  # nothing left out
        (["a photo of a cat, oil painting style"], ""),
    ],
)  # fmt: skip
def test_the_shared_prompt_is_what_the_labels_leave_out(prompts, shared):
    assert shared_prompt(tuple(prompts)) == shared


def test_a_sheet_of_swept_prompts_says_what_they_share_in_its_banner(tmp_path, monkeypatch):
    """The column headers read "…watercolor style…": the banner gives the rest of the prompt once."""
    drawn = []
    monkeypatch.setattr(sheets, "draw_label", lambda draw, box, text, *args, **kwargs: drawn.append(text))
    caption = "a photo of a cat sitting on a sofa"
    make_job(tmp_path, [{"prompt": f"{caption}, {s}, highly detailed, 4k"} for s in STYLES])
    assert sheets.write_contact_sheets(tmp_path)
    [banner] = [text for text in drawn if caption in text]
    assert banner.endswith(f" | prompts: {caption}, … highly detailed, 4k"), banner
    assert [text for text in drawn if text.startswith("prompt …")] == [f"prompt …{s}…" for s in STYLES]


def test_caption_templates_are_labelled_by_the_template_not_the_caption():
    """The caption is the long shared part of `{caption}` templates' prompts, commas and all."""
    ref = SourceRef(
        "/p/cat.jpg",
        is_url=False,
        stem="cat",
        fingerprint="",
        caption="a tabby cat, lying on a wooden table, soft light",
    )
    templates = ["{caption}, oil painting", "{caption}, watercolor", "pencil sketch of {caption}", "{caption}"]
    prompts = tuple(render_prompt(template, ref) for template in templates)
    assert prompt_labels(prompts[:2]) == ("…oil painting", "…watercolor")
    # no start shared by all: "pencil sketch of" starts one; the caption's end shared by the last two only
    assert prompt_labels(prompts[2:]) == ("pencil sketch of…", ref.caption)
    assert prompt_labels(prompts[:2] + prompts[3:]) == ("…oil painting", "…watercolor", ref.caption)


def test_the_labels_drawn_tell_the_prompts_apart_in_one_line():
    """What a reader sees in the column headers (cut to the cell's width): no two the same."""
    rows = [{**DEFAULTS, "prompt": f"a photo of a cat sitting on a sofa, {s}, highly detailed, 4k"} for s in STYLES]
    grid, _ = arrange(rows)
    assert grid.headers == tuple(f"prompt …{s}…" for s in STYLES)
    lay = plan_pages(grid.cols, grid.rows, row_labels=False, titled=False, thumb=128)[0].layout
    seen = [visible(lay.header_box(0, 0, col), grid.headers[col], lay.font_size) for col in range(grid.cols)]
    assert len(set(seen)) == len(seen) and all(s.startswith("prompt …") for s in seen)


# --- the order the manifest gives ----------------------------------------------------------------------------


def test_prompts_follow_the_first_position_each_is_seen_at_not_their_sort_order():
    """metadata.csv's `index` is the item's place in the job's plan (the manifest's order); rows listed in
    another order (a metadata.csv sorted by hand) still give the manifest's."""
    order = ["watercolor", "oil painting", "charcoal"]
    rows = [
        {"prompt": p, "index": str(i), "strength": s} for i, (p, s) in enumerate((p, s) for p in order for s in "12")
    ]
    assert first_seen(rows, "prompt") == tuple(order)
    assert first_seen(list(reversed(rows)), "prompt") == tuple(order)
    # CSV rows: a prompt seen again later keeps its first place
    csv_rows = [{"prompt": p, "index": str(i)} for i, p in enumerate(["b", "a", "b", "c", "a"])]
    assert first_seen(csv_rows, "prompt") == ("b", "a", "c")
    # a metadata.csv older than positions: the rows' order
    assert first_seen([{"prompt": p} for p in ["b", "a", "b"]], "prompt") == ("b", "a")
    # the prompt axis so, the other axes naturally sorted as before
    swept, _ = find_axes([{**DEFAULTS, **row, "strength": f"0.{10 - int(row['strength'])}"} for row in rows])
    assert [(a.label, a.values) for a in swept] == [("prompt", tuple(order)), ("strength", ("0.8", "0.9"))]


def test_the_sheet_columns_and_a_covarying_seed_follow_the_prompts_order():
    rows = [{**DEFAULTS, "prompt": p, "strength": s, "index": i} for i, (p, s) in enumerate(
        [("zebra", 0.5), ("zebra", 0.7), ("ant", 0.5), ("ant", 0.7), ("moth", 0.5), ("moth", 0.7)])]  # fmt: skip
    grid, _ = arrange(rows)
    assert grid.headers == ("prompt zebra", "prompt ant", "prompt moth")
    assert grid.row_labels == ("strength 0.5", "strength 0.7")
    assert grid.cells[(0, 0, 1, 1)]["prompt"] == "ant" and grid.cells[(0, 0, 1, 1)]["strength"] == 0.7
    # each prompt with its own seed, row by row: one axis, in the prompts' order rather than the seeds'
    paired = [
        {**DEFAULTS, "prompt": p, "seed": s, "index": i} for i, (p, s) in enumerate([("b", 9), ("a", 1), ("c", 5)])
    ]
    grid, _ = arrange(paired)
    assert grid.headers == ("seed 9 / prompt b", "seed 1 / prompt a", "seed 5 / prompt c")


def test_a_run_labels_and_orders_caption_template_prompts_as_written(tmp_path, tiny_config, drawn_labels):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS / "cat.jpg", photos / "cat.jpg")
    (photos / "cat.txt").write_text("a tabby cat lying on a wooden table", encoding="utf-8")
    templates = [f"{{caption}}, {style}, highly detailed" for style in STYLES]
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - name: j\n    sources: photos/cat.jpg\n"
        f"    prompts: [{', '.join(repr(t) for t in templates)}]\n"
        "    width: 32\n    height: 32\n    num_inference_steps: 2\n    strength: 0.5\n",
        encoding="utf-8",
    )
    done = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "j" / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["index"] for row in rows] == ["0", "1", "2"]
    headers = [text for text in drawn_labels if text.startswith("prompt ")]
    assert headers == [f"prompt …{style}…" for style in STYLES]  # "oil", "watercolor", "charcoal": as written


# --- masks -------------------------------------------------------------------------------------------------------


def test_a_csv_inpaint_job_with_a_mask_per_row_labels_each_cell_by_its_mask(tmp_path, tiny_task_config, drawn_labels):
    """Rows of one source with masks of one name in two folders: the mask is an axis, labelled by the folders."""
    for side, box in (("left", (0, 0, 225, 300)), ("right", (226, 0, 451, 300))):
        (tmp_path / side).mkdir()
        mask = Image.new("L", (451, 300))
        ImageDraw.Draw(mask).rectangle(box, fill=255)
        mask.save(tmp_path / side / "cat.png")
    cat = (PHOTOS / "cat.jpg").as_posix()
    lines = [f"{cat},{prompt},{side}/cat.png,32,32,2" for prompt in ("a tiger", "a lion") for side in ("left", "right")]
    (tmp_path / "rows.csv").write_text("source,prompt,mask,width,height,num_inference_steps\n" + "\n".join(lines))
    config = str(tiny_task_config("inpaint"))
    done = batch_edit("run", "rows.csv", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "rows" / "metadata.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    grid, _ = arrange(rows)
    assert grid.headers == ("prompt a tiger", "prompt a lion")  # the rows' order
    assert grid.row_labels == ("mask left/cat.png", "mask right/cat.png")
    assert {"mask left/cat.png", "mask right/cat.png", "prompt a tiger", "prompt a lion"} <= set(drawn_labels)
