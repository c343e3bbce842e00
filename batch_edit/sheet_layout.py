"""Contact-sheet geometry: where the banner, the source, labels and cells go, and how a big grid splits into pages.

Pure arithmetic kept apart from drawing, so tests can check one against the other.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

MIN_THUMB = 96  # smaller thumbnails stop being useful to judge an edit: paginate instead


@dataclass(frozen=True)
class SheetLayout:
    """One page: a banner, the source column, then outer_cols x outer_rows sub-grids of cols x rows cells.
    Cells get column headers (and row labels, sub-grid titles) from the axes; or, where items are laid out in
    order, each cell gets its own label of `cell_label_lines` lines above it instead of column headers.
    Boxes are (x0, y0, x1, y1) with x1, y1 exclusive."""

    thumb: int
    cols: int = 1
    rows: int = 1
    outer_cols: int = 1
    outer_rows: int = 1
    row_labels: bool = False  # there is a down axis
    titled: bool = False  # there are outer axes: each sub-grid gets a title
    cell_label_lines: int = 0
    header_lines: int = 1  # more where the axis across is several parameters that change together

    font_size = property(lambda self: max(11, min(20, self.thumb // 12)))
    pad = property(lambda self: max(4, self.thumb // 32))
    label_h = property(lambda self: self.font_size * 3 // 2)
    # wide enough for "guidance 3.5" even at the smallest thumbnails; prompts wrap over the cell's height
    row_label_w = property(lambda self: max(self.thumb * 2 // 3, 8 * self.font_size) if self.row_labels else 0)
    title_h = property(lambda self: self.label_h if self.titled else 0)
    cell_label_h = property(lambda self: self.cell_label_lines * self.label_h)
    header_h = property(lambda self: self.header_lines * self.label_h)
    _head_h = property(lambda self: self.cell_label_h or self.header_h)  # above the first row of cells
    _pitch = property(lambda self: self.thumb + self.pad + self.cell_label_h)  # from one row of cells to the next
    _margin = property(lambda self: 2 * self.pad)
    _gap = property(lambda self: 3 * self.pad)  # between sub-grids, and between the source and the grid
    _top = property(lambda self: self._margin + 2 * self.label_h + self.pad)
    _grid_x = property(lambda self: self._margin + self.thumb + self._gap)
    panel_w = property(lambda self: self.row_label_w + self.cols * (self.thumb + self.pad) - self.pad)
    panel_h = property(
        lambda self: self.title_h + self._head_h + self.rows * self._pitch - self.pad - self.cell_label_h
    )

    @property
    def size(self) -> tuple[int, int]:
        width = self._grid_x + self.outer_cols * (self.panel_w + self._gap) - self._gap + self._margin
        return width, self._top + self.outer_rows * (self.panel_h + self._gap) - self._gap + self._margin

    @property
    def banner_box(self) -> tuple[int, int, int, int]:
        return self._margin, self._margin, self.size[0] - self._margin, self._margin + 2 * self.label_h

    @property
    def source_label_box(self) -> tuple[int, int, int, int]:
        y = self.source_box[1]  # just above the source, which is level with the first row of cells
        return self._margin, y - self.label_h, self._margin + self.thumb, y

    @property
    def source_box(self) -> tuple[int, int, int, int]:
        y = self.cell_box(0, 0, 0, 0)[1]
        return self._margin, y, self._margin + self.thumb, y + self.thumb

    def _origin(self, outer_col: int, outer_row: int) -> tuple[int, int]:
        return self._grid_x + outer_col * (self.panel_w + self._gap), self._top + outer_row * (self.panel_h + self._gap)

    def title_box(self, outer_col: int, outer_row: int) -> tuple[int, int, int, int]:
        x, y = self._origin(outer_col, outer_row)
        return x, y, x + self.panel_w, y + self.title_h

    def header_box(self, outer_col: int, outer_row: int, col: int) -> tuple[int, int, int, int]:
        x0, y0, _, _ = self.cell_box(outer_col, outer_row, col, 0)
        return x0, y0 - self.header_h, x0 + self.thumb, y0

    def cell_label_box(self, outer_col: int, outer_row: int, col: int, row: int) -> tuple[int, int, int, int]:
        x0, y0, x1, _ = self.cell_box(outer_col, outer_row, col, row)
        return x0, y0 - self.cell_label_h, x1, y0

    def row_label_box(self, outer_col: int, outer_row: int, row: int) -> tuple[int, int, int, int]:
        x, _ = self._origin(outer_col, outer_row)
        y0 = self.cell_box(outer_col, outer_row, 0, row)[1]
        return x, y0, x + self.row_label_w - self.pad, y0 + self.thumb

    def cell_box(self, outer_col: int, outer_row: int, col: int, row: int) -> tuple[int, int, int, int]:
        x, y = self._origin(outer_col, outer_row)
        x0 = x + self.row_label_w + col * (self.thumb + self.pad)
        y0 = y + self.title_h + self._head_h + row * self._pitch
        return x0, y0, x0 + self.thumb, y0 + self.thumb


@dataclass(frozen=True)
class Page:
    layout: SheetLayout
    outer_cols: range  # which sub-grids (outer values) and which cells of each this page shows
    outer_rows: range
    cols: range
    rows: range


def plan_pages(
    cols: int, rows: int, outer_cols: int = 1, outer_rows: int = 1, *,
    row_labels: bool, titled: bool, thumb: int = 256, max_side: int = 8192, cell_label_lines: int = 0,
    header_lines: int = 1,
) -> list[Page]:  # fmt: skip
    """Shrink thumbnails (down to MIN_THUMB) until everything fits in max_side; past that, split into pages:
    whole sub-grids per page while one fits, else blocks of one sub-grid's cells."""

    def layout(t: int, c: int = cols, r: int = rows, oc: int = outer_cols, orow: int = outer_rows) -> SheetLayout:
        return SheetLayout(t, c, r, oc, orow, row_labels, titled, cell_label_lines, header_lines)

    floor = min(thumb, MIN_THUMB)
    for t in range(thumb, floor - 1, -1):  # one page reads better than several
        if max(layout(t).size) <= max_side:
            return [Page(layout(t), range(outer_cols), range(outer_rows), range(cols), range(rows))]
    wide = lambda lay: lay.size[0] <= max_side  # noqa: E731 - width depends only on column counts
    high = lambda lay: lay.size[1] <= max_side  # noqa: E731 - height only on row counts
    one = layout(floor, oc=1, orow=1)
    if wide(one) and high(one):
        oc_chunks = _chunks(outer_cols, _most(outer_cols, lambda k: wide(layout(floor, oc=k))))
        or_chunks = _chunks(outer_rows, _most(outer_rows, lambda k: high(layout(floor, orow=k))))
        blocks = [(oc, orow, range(cols), range(rows)) for orow in or_chunks for oc in oc_chunks]
    else:
        c_chunks = _chunks(cols, _most(cols, lambda k: wide(layout(floor, c=k, oc=1))))
        r_chunks = _chunks(rows, _most(rows, lambda k: high(layout(floor, r=k, orow=1))))
        each = itertools.product(range(outer_rows), range(outer_cols), r_chunks, c_chunks)
        blocks = [(range(oc, oc + 1), range(orow, orow + 1), c, r) for orow, oc, r, c in each]
    return [Page(layout(floor, len(c), len(r), len(oc), len(orow)), oc, orow, c, r) for oc, orow, c, r in blocks]


def _most(n: int, fits) -> int:
    return next((k for k in range(n, 0, -1) if fits(k)), 1)  # 1 even if nothing fits: never loop forever


def _chunks(n: int, most: int) -> list[range]:
    count = math.ceil(n / most)  # balanced: 12 in pages of at most 8 gives 6 + 6, not 8 + 4
    return [range(n * i // count, n * (i + 1) // count) for i in range(count)]
