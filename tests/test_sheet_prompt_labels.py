"""Swept prompts on a contact sheet, in the order the manifest gives them."""

from __future__ import annotations

from batch_edit.sheet_arrangement import arrange, find_axes, first_seen

from .test_sheets import DEFAULTS

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
