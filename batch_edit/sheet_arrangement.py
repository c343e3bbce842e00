"""Which of a source's finished items goes in which contact-sheet cell, and what the labels say.

Swept parameters become the sheet's axes (across, down, then titled sub-grids) when the items really form a grid
of them; parameters that always change together, like a CSV's strength and seed set row by row, are one axis
("strength / seed"). Where the axes would leave more than a quarter of the cells empty (rows of a CSV that
follow no grid, a sweep most of whose items failed) or make one long strip, the items are laid out in order on
a plain grid instead, each cell labelled with what differs. Pure: metadata rows in, positions and text out.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass, replace

from .parameters import MAX_VARIATIONS, labels
from .plan import derive_seed

# Parameters sharing a sheet label (width and height: "size") are one axis: label -> their metadata columns, the
# value asked for (requested_width: a `fit` result's own size follows the source, and would make no grid), else
# the result's, in a metadata.csv older than the asked-for columns.
_JOINED = {
    label: tuple((p.column, p.name) for p in shown) for label, (_, shown) in labels("sheet").items() if len(shown) > 1
}
# (metadata column, label), by priority: the first swept axis goes across, the second down, the rest outside
# (so a strength x seed x steps sweep reads strength across, seed down, one sub-grid per step count).
AXES = tuple(
    (column, label)
    for _, column, label in sorted(
        [(0, "prompt", "prompt"), (3, "variation", "variation"), (8, "mask", "mask"),  # what the plan adds
         *((at, label if label in _JOINED else shown[0].name, label) for label, (at, shown) in labels("sheet").items())],
        key=lambda entry: entry[0],
    )
)  # fmt: skip
# Columns telling results apart that are no item parameter: rows of one job differ in them only where results of
# another pipeline config are listed (a metadata.csv without positions, older than `index`). Swept, they are an axis
# of their own rather than numbered as variations the job does not have; fixed, they say nothing.
IDENTITY_AXES = (("pipeline_config", "pipeline config"),)
MAX_EMPTY = 0.25  # the largest share of empty cells an axis layout may have
MAX_STRIP = 12  # one axis with more values than this reads better wrapped onto a grid
PROMPT_LINES = 2  # a cell label's lines for the prompt, under what else differs
SINGLE_PROMPT_LINES = 4  # a sheet of one result: its prompt above it, where the banner has no room for it

Position = tuple[int, int, int, int]  # outer column, outer row, column, row


@dataclass(frozen=True)
class Axis:
    column: str
    label: str
    values: tuple[str, ...]  # naturally sorted; prompts in the order the manifest gives them (`first_seen`)

    @functools.cached_property
    def _ranks(self) -> dict[str, int]:
        return {value: at for at, value in enumerate(self.values)}

    def rank(self, value: str) -> int:
        return self._ranks[value]


@dataclass(frozen=True)
class AxisGroup:
    """Swept columns whose values change together over the rows: one axis of the sheet."""

    axes: tuple[Axis, ...]
    values: tuple[tuple[str, ...], ...]  # the combinations that occur, in their axes' order

    @property
    def label(self) -> str:
        return " / ".join(axis.label for axis in self.axes)

    def describe(self, value: tuple[str, ...]) -> str:
        """ "strength 0.5 / seed 1"; an axis with no value there (a row with no variation among rows with one)
        says nothing rather than "variation "."""
        return " / ".join(f"{axis.label} {distinct_part(axis, v)}" for axis, v in zip(self.axes, value) if v)


@dataclass(frozen=True)
class Arrangement:
    """outer_cols x outer_rows sub-grids of cols x rows cells, and the metadata row shown in each filled cell."""

    cols: int
    rows: int
    outer_cols: int
    outer_rows: int
    cells: dict[Position, dict]
    headers: tuple[str, ...] = ()  # per column, the same in every sub-grid; none when cells have their own labels
    row_labels: tuple[str, ...] = ()  # per row
    titles: tuple[tuple[str, ...], ...] = ()  # per outer column, per outer row
    cell_labels: dict[Position, str] | None = None  # what differs, for cells laid out in order
    cell_label_lines: int = 0
    header_lines: int = 1
    shared_prompt: str = ""  # what the swept prompts' labels leave out, "…" where they differ (for the banner)

    @property
    def fill(self) -> float:
        return len(self.cells) / (self.cols * self.rows * self.outer_cols * self.outer_rows)


def axis_value(row: dict, column: str) -> str:
    if column in _JOINED:
        return "x".join(str(row.get(asked) or row.get(name, "")) for asked, name in _JOINED[column])
    if column == "mask":  # the mask as given, or the fitted copy a job keeping its sources lists instead
        return str(row.get("mask") or row.get("mask_file_name") or "")
    if column == "seed" and str(row.get("seed_derived", "")).strip().lower() in ("true", "1"):
        return "derived"  # follows from the other parameters: all-derived seeds are no axis of their own
    return str(row.get(column) or "")


def natural_key(value: str) -> tuple:
    try:
        number = float(value)
        if math.isfinite(number):
            return (0, number, [], value)
    except ValueError:
        pass
    parts = re.split(r"([0-9]+)", value.lower())  # digit runs at odd indexes: "img10" after "img9"
    return (1, 0.0, [int(p) if i % 2 else p for i, p in enumerate(parts)], value)


def shown_rows(rows: list[dict], positioned: bool) -> tuple[list[dict], int]:
    """The rows of a source's sheet, and how many it leaves off. Where metadata.csv gives any row of the job a
    position (`positioned`), results of items the job no longer plans (listed last with a blank index until
    `prune` moves them out: another pipeline config's, a prompt or row since removed) are left off, so a sheet
    never mixes them with the current results; a metadata.csv with no position shows every row."""
    shown = [row for row in rows if not positioned or is_positioned(row)]
    return shown, len(rows) - len(shown)


def is_positioned(row: dict) -> bool:
    return bool(str(row.get("index") or "").strip())


def find_axes(rows: list[dict]) -> tuple[list[Axis], list[Axis]]:
    """(swept, fixed) in AXES order: swept axes have more than one value among the rows."""
    axes = [Axis(c, label, _ordered(rows, c)) for c, label in AXES]
    fixed = [a for a in axes if len(a.values) == 1 and a.values[0]]  # a column no row fills says nothing
    identity = [Axis(c, label, tuple(sorted({axis_value(r, c) for r in rows}))) for c, label in IDENTITY_AXES]
    return [a for a in axes + identity if len(a.values) > 1], fixed


def _ordered(rows: list[dict], column: str) -> tuple[str, ...]:
    """The column's values along an axis: prompts as the user wrote them (a caption template's renderings in
    the order of their templates), others in natural order ("0.5" before "0.75", "img9" before "img10")."""
    if column == "prompt":
        return first_seen(rows, column)
    return tuple(sorted({axis_value(row, column) for row in rows}, key=natural_key))


def first_seen(rows: list[dict], column: str) -> tuple[str, ...]:
    """The column's values in the order of the first position (metadata.csv's `index`, the item's place in the
    job's plan, which follows the manifest) each is seen at; rows without one (a metadata.csv older than
    positions) after those with one, in their order."""

    def position(at: int) -> tuple:
        index = str(rows[at].get("index", "")).strip()
        return (0, int(index), at) if index.isdigit() else (1, 0, at)

    return tuple(dict.fromkeys(axis_value(rows[at], column) for at in sorted(range(len(rows)), key=position)))


def _in_order(axes: list[Axis]):
    """A sort key for tuples of values of `axes` (in that order): each value by its place along its axis, the
    prompt's first, so a seed set row by row with each prompt ("seed / prompt") keeps the prompts' order."""
    at = sorted(range(len(axes)), key=lambda k: axes[k].column != "prompt")
    return lambda values: tuple(axes[k].rank(values[k]) for k in at)


def number_variations(rows: list[dict]) -> list[dict]:
    """Rows that no axis tells apart (derived seeds of several variations of one grid point) get a `variation`,
    so each keeps a cell of its own: the one metadata.csv gives, else the one its seed was derived for, numbered
    from 0 like the {variation} placeholder, else (a seed not derived by this version) their order by seed from
    0. Rows that an axis tells apart (explicit seeds s, s+1, ...; another pipeline config) show no variation:
    that axis says it."""
    columns = [column for column, _ in AXES + IDENTITY_AXES if column != "variation"]
    alike: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        alike.setdefault(tuple(axis_value(row, c) for c in columns), []).append(index)
    numbered = [{**row, "variation": ""} if row.get("variation") else row for row in rows]
    derived = _DerivedVariations()
    for indexes in (indexes for indexes in alike.values() if len(indexes) > 1):
        ordered = sorted(indexes, key=lambda i: (natural_key(str(rows[i].get("seed") or "")), i))
        found = [_listed_variation(rows[i]) for i in ordered]
        if None in found or len(set(found)) < len(found):
            found = [derived.of(rows[i]) for i in ordered]
        for rank, (index, variation) in enumerate(zip(ordered, found)):
            shown = variation if None not in found and len(set(found)) == len(found) else rank
            numbered[index] = {**rows[index], "variation": str(shown)}
    return numbered


def _listed_variation(row: dict) -> int | None:
    cell = str(row.get("variation") or "")
    return int(cell) if cell.isdigit() else None


class _DerivedVariations:
    """The variation a row's derived seed was made for (plan.derive_seed), per source and prompt: derived only as
    far as the seeds asked for, up to MAX_VARIATIONS."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[dict[int, int], list[int]]] = {}  # seed -> variation, next one

    def of(self, row: dict) -> int | None:
        seed, source, prompt = str(row.get("seed") or ""), str(row.get("source") or ""), str(row.get("prompt") or "")
        if not seed.isdigit() or axis_value(row, "seed") != "derived":  # an explicit seed was derived for none
            return None
        variations, next_one = self._known.setdefault((source, prompt), ({}, [0]))
        while int(seed) not in variations and next_one[0] < MAX_VARIATIONS:
            variations.setdefault(derive_seed(source, prompt, next_one[0]), next_one[0])
            next_one[0] += 1
        return variations.get(int(seed))


def covarying_groups(rows: list[dict], swept: list[Axis]) -> list[AxisGroup]:
    """Swept axes that split the rows the same way (each value of one always goes with one value of the other)
    grouped, in AXES order of their foremost axis; within a group the prompt comes last, being the longest."""
    by_split: dict[tuple[int, ...], list[Axis]] = {}
    for axis in swept:
        first: dict[str, int] = {}
        split = tuple(first.setdefault(axis_value(row, axis.column), i) for i, row in enumerate(rows))
        by_split.setdefault(split, []).append(axis)
    groups = []
    for axes in by_split.values():
        axes.sort(key=lambda a: a.column == "prompt")
        combos = {tuple(axis_value(row, a.column) for a in axes) for row in rows}
        groups.append(AxisGroup(tuple(axes), tuple(sorted(combos, key=_in_order(axes)))))
    return groups


def arrange(rows: list[dict]) -> tuple[Arrangement, list[Axis]]:
    """The arrangement of one source's rows, and the axes fixed over all of them (for the banner)."""
    rows = number_variations(rows)
    swept, fixed = find_axes(rows)
    if len(rows) == 1 and rows[0].get("prompt"):  # its prompt labels it, so the banner leaves it out
        at, label = (0, 0, 0, 0), f"prompt {rows[0]['prompt']}"
        grid = Arrangement(1, 1, 1, 1, {at: rows[0]}, cell_labels={at: label}, cell_label_lines=SINGLE_PROMPT_LINES)
        return grid, [axis for axis in fixed if axis.column != "prompt"]
    groups = covarying_groups(rows, swept)
    shared = next((shared_prompt(axis.values) for axis in swept if axis.column == "prompt"), "")
    if len(groups) != 1 or len(groups[0].values) <= MAX_STRIP:
        grid = _axis_grid(rows, groups)
        if grid.fill >= 1 - MAX_EMPTY and len(grid.cells) == len(rows):  # each row its own cell
            return replace(grid, shared_prompt=shared), fixed
    return replace(_labelled_grid(rows, groups), shared_prompt=shared), fixed


def _axis_grid(rows: list[dict], groups: list[AxisGroup]) -> Arrangement:
    slots = [groups[2:3], groups[3:], groups[:1], groups[1:2]]  # outer column, outer rows, across, down

    def place(row: dict) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(axis_value(row, a.column) for g in slot for a in g.axes) for slot in slots)

    # Values per slot as they occur: for the outer rows only combinations that exist, not whole empty sub-grids.
    keys = [_in_order([a for g in slot for a in g.axes]) for slot in slots]
    coords = [sorted({place(r)[k] for r in rows}, key=keys[k]) for k in range(4)]
    index = [{value: i for i, value in enumerate(values)} for values in coords]
    cells = {}
    for row in rows:
        p = place(row)
        cells[(index[0][p[0]], index[1][p[1]], index[2][p[2]], index[3][p[3]])] = row
    titles = tuple(tuple(_label(slots[0] + slots[1], oc + orow) for orow in coords[1]) for oc in coords[0])
    return Arrangement(
        cols=len(coords[2]), rows=len(coords[3]), outer_cols=len(coords[0]), outer_rows=len(coords[1]),
        cells=cells, headers=tuple(_label(slots[2], v) for v in coords[2]),
        row_labels=tuple(_label(slots[3], v) for v in coords[3]) if slots[3] else (),
        titles=titles if slots[0] else (), header_lines=_header_lines(slots[2]),
    )  # fmt: skip


def _header_lines(across: list[AxisGroup]) -> int:
    """One line for one parameter, as sweeps always had; parameters that change together get two, a prompt
    among them a third."""
    if not across or len(across[0].axes) == 1:
        return 1
    return 3 if any(a.column == "prompt" for a in across[0].axes) else 2


def _label(groups: list[AxisGroup], values: tuple[str, ...]) -> str:
    parts, start = [], 0
    for group in groups:
        parts.append(group.describe(values[start : start + len(group.axes)]))
        start += len(group.axes)
    return ", ".join(filter(None, parts))


def _labelled_grid(rows: list[dict], groups: list[AxisGroup]) -> Arrangement:
    """The rows in their order, wrapped onto a grid, each labelled with its values of the swept axes; a swept
    prompt (with what changes along with it) on lines of its own below the rest, so prompts that start alike are
    told apart rather than cut off at the end of the other values."""
    cols, count = grid_columns(len(rows)), len(rows)
    prompted = [g for g in groups if any(a.column == "prompt" for a in g.axes)]
    others = [g for g in groups if g not in prompted]

    def label(row: dict, groups: list[AxisGroup]) -> str:
        return _label(groups, tuple(axis_value(row, a.column) for g in groups for a in g.axes))

    positions = [(0, 0, i % cols, i // cols) for i in range(count)]
    labels = {p: "\n".join(filter(None, [label(row, others), label(row, prompted)])) for p, row in zip(positions, rows)}
    lines = max(1, min(3, len(others)) + (PROMPT_LINES if prompted else 0))
    return Arrangement(
        cols=cols, rows=math.ceil(count / cols), outer_cols=1, outer_rows=1, cells=dict(zip(positions, rows)),
        cell_labels=labels, cell_label_lines=lines,
    )  # fmt: skip


def grid_columns(count: int) -> int:
    """Columns for `count` cells in order: a single row up to 4; else from about square to twice as wide, the
    fewest empty cells in the last row (ties: the squarer)."""
    if count <= 4:
        return max(1, count)
    square = math.isqrt(count - 1) + 1  # ceil(sqrt(count))
    return min(range(square, 2 * square + 1), key=lambda c: (c * math.ceil(count / c) - count, c))


def distinct_part(axis: Axis, value: str) -> str:
    """Prompts swept over one source often share a long start (a caption) and end ("highly detailed"): label them
    by what differs (`prompt_labels`). Masks by their file name, or as much of their path as tells it apart
    (`mask_labels`)."""
    if axis.column == "mask":
        return mask_labels(axis.values)[axis.rank(value)]
    if axis.column != "prompt" or len(axis.values) < 2:
        return value
    return prompt_labels(axis.values)[axis.rank(value)]


@functools.lru_cache(maxsize=64)
def mask_labels(masks: tuple[str, ...]) -> tuple[str, ...]:
    """Each mask's label among `masks` (distinct paths, or kept copies' names): its file name where no other mask
    has it, else the fewest last parts of its path that no other mask's path ends with ("left/cat.png" and
    "right/cat.png", not two full paths that a cell's width cuts to the same start)."""
    parts = [mask.rstrip("/").split("/") for mask in masks]

    def tail(path: list[str], count: int) -> str:
        return "/".join(path[-count:])

    # per count of last parts, how many masks end so (a shorter path: all of it), counted once, not per pair
    ending = [Counter(tail(path, count) for path in parts) for count in range(1, max(map(len, parts)))]
    labels = [
        tail(path, next((n for n in range(1, len(path)) if ending[n - 1][tail(path, n)] == 1), len(path)))
        for path in parts
    ]
    return tuple(labels) if len(set(labels)) == len(labels) else masks


MIN_SHARED = 12  # the fewest characters of a shared start or end worth leaving out ("a cat, " stays)
PHRASE_TAIL = 2  # the most shared words a label keeps to end on a phrase's end ("watercolor style…")
_PHRASE_END = (",", ";", ":", "|")  # a word ending so ends a phrase of a comma-separated prompt


@functools.lru_cache(maxsize=64)
def prompt_labels(prompts: tuple[str, ...]) -> tuple[str, ...]:
    """Each prompt's label among `prompts` (distinct): without the words all of them start with, and those they
    all end with, where that is at least MIN_SHARED characters, an ellipsis in their place. A shared end is left
    out from a phrase's end where one is ("a cat, oil painting style, highly detailed" and "a cat, watercolor
    style, highly detailed": "…oil painting style…" and "…watercolor style…"). A prompt that is no more than what
    they share (the start of the others) keeps all of it. Labels are never alike: where leaving out both ends would
    make two so, one end is kept, else the whole prompts are the labels."""
    cut = _prompt_cut(prompts)
    if cut is None:
        return prompts
    return tuple(_cut(prompt, _spans(prompt), *cut) for prompt in prompts)


def shared_prompt(prompts: tuple[str, ...]) -> str:
    """What `prompt_labels` leaves out of every prompt, an ellipsis for the part they differ in ("a photo of a cat
    on a sofa, … highly detailed"), for the sheet's banner; "" where they leave out nothing."""
    cut = _prompt_cut(prompts) if len(prompts) > 1 else None
    if cut is None or cut == (0, 0):
        return ""
    start, end = cut
    prompt, spans = prompts[0], _spans(prompts[0])
    head = prompt[: spans[start - 1][1]] if start else ""
    tail = prompt[spans[len(spans) - end][0] :] if end else ""
    return " ".join(filter(None, [head, "…", tail]))


@functools.lru_cache(maxsize=64)
def _prompt_cut(prompts: tuple[str, ...]) -> tuple[int, int] | None:
    """(words left out at the start, at the end) of every prompt's label; None where the whole prompts are the
    labels (fewer than two, or leaving out their shared ends would make two labels alike)."""
    if len(prompts) < 2:
        return None
    spans = [_spans(prompt) for prompt in prompts]
    words = [[prompt[a:b] for a, b in at] for prompt, at in zip(prompts, spans)]
    # a word the same where one ends a phrase ("{caption}" and "{caption}, at night": "light" and "light,")
    bare = [[word.rstrip("".join(_PHRASE_END)) for word in w] for w in words]
    start = _shared_count(bare)
    start = start if len(" ".join(words[0][:start])) >= MIN_SHARED else 0
    end = _end_left_out(words, min(_shared_count([w[::-1] for w in bare]), min(map(len, words)) - start))
    for cut_start, cut_end in ((start, end), (start, 0), (0, end)):
        labels = tuple(_cut(prompt, at, cut_start, cut_end) for prompt, at in zip(prompts, spans))
        if len(set(labels)) == len(labels):
            return cut_start, cut_end
    return None


def _spans(prompt: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]


def _shared_count(words: list[list[str]]) -> int:
    """How many words every list starts with."""
    return next((k for k, column in enumerate(zip(*words)) if len(set(column)) > 1), min(map(len, words)))


def _end_left_out(words: list[list[str]], shared: int) -> int:
    """How many of the `shared` last words to leave out: those after a phrase end among their first PHRASE_TAIL
    (or just before them) where that is MIN_SHARED characters, else all of them where that is, else none."""
    length = lambda count: len(" ".join(words[0][len(words[0]) - count :])) + 1  # and its space
    ends = [
        count for count in range(shared, max(0, shared - PHRASE_TAIL - 1), -1)
        if all(w[len(w) - count - 1].endswith(_PHRASE_END) for w in words if len(w) > count)
    ]  # fmt: skip
    if ends and length(ends[0]) >= MIN_SHARED:
        return ends[0]
    return shared if shared and length(shared) >= MIN_SHARED else 0


def _cut(prompt: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """The prompt without its first `start` and last `end` words, an ellipsis for each end left out (the comma
    or colon closing the phrase dropped before it); all of it where nothing would be left."""
    if start + end >= len(spans):
        return prompt
    middle = prompt[spans[start][0] : spans[len(spans) - end - 1][1]]
    if end:
        middle = middle.rstrip("".join(_PHRASE_END))
    return f"{'…' * bool(start)}{middle}{'…' * bool(end)}" if middle.strip() else prompt
