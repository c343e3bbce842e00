"""Contact sheets: per job and source, `contact-sheet-<stem>.png` with the images on a grid of the swept parameters.

Reads only `metadata.csv` and the images it names, so it is cheap to call at the end of every job. The geometry
(`SheetLayout`, `plan_pages`) is pure arithmetic kept apart from drawing, so tests can check one against the other.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import OutputError
from .sources import DECODER_FORMATS, to_rgb

# (metadata column, label), by priority: the first swept axis goes across, the second down, the rest outside.
# Swept axes in this order: the first across, the second down, the rest as sub-grids (so a strength x seed x
# steps sweep reads strength across, seed down, one sub-grid per step count).
AXES = (
    ("prompt", "prompt"), ("strength", "strength"), ("seed", "seed"), ("num_inference_steps", "steps"),
    ("guidance_scale", "guidance"), ("size", "size"), ("resize", "resize"),
)  # fmt: skip
MIN_THUMB = 96  # smaller thumbnails stop being useful to judge an edit: paginate instead
MIN_CELL = 128  # outputs smaller than this are still enlarged to it, so a cell's labels have room
BACKGROUND, TEXT, LETTERBOX = (255, 255, 255), (20, 20, 20), (128, 128, 128)
EMPTY, PLACEHOLDER, FAINT = (232, 232, 232), (200, 200, 200), (120, 120, 120)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Axis:
    column: str
    label: str
    values: tuple[str, ...]  # naturally sorted


@dataclass(frozen=True)
class SheetLayout:
    """One page: a banner, the source column, then outer_cols x outer_rows sub-grids of cols x rows cells.
    Boxes are (x0, y0, x1, y1) with x1, y1 exclusive."""

    thumb: int
    cols: int = 1
    rows: int = 1
    outer_cols: int = 1
    outer_rows: int = 1
    row_labels: bool = False  # there is a down axis
    titled: bool = False  # there are outer axes: each sub-grid gets a title

    font_size = property(lambda self: max(11, min(20, self.thumb // 12)))
    pad = property(lambda self: max(4, self.thumb // 32))
    label_h = property(lambda self: self.font_size * 3 // 2)
    # wide enough for "guidance 3.5" even at the smallest thumbnails; prompts wrap over the cell's height
    row_label_w = property(lambda self: max(self.thumb * 2 // 3, 8 * self.font_size) if self.row_labels else 0)
    title_h = property(lambda self: self.label_h if self.titled else 0)
    _margin = property(lambda self: 2 * self.pad)
    _gap = property(lambda self: 3 * self.pad)  # between sub-grids, and between the source and the grid
    _top = property(lambda self: self._margin + 2 * self.label_h + self.pad)
    _grid_x = property(lambda self: self._margin + self.thumb + self._gap)
    panel_w = property(lambda self: self.row_label_w + self.cols * (self.thumb + self.pad) - self.pad)
    panel_h = property(lambda self: self.title_h + self.label_h + self.rows * (self.thumb + self.pad) - self.pad)

    @property
    def size(self) -> tuple[int, int]:
        width = self._grid_x + self.outer_cols * (self.panel_w + self._gap) - self._gap + self._margin
        return width, self._top + self.outer_rows * (self.panel_h + self._gap) - self._gap + self._margin

    @property
    def banner_box(self) -> tuple[int, int, int, int]:
        return self._margin, self._margin, self.size[0] - self._margin, self._margin + 2 * self.label_h

    @property
    def source_label_box(self) -> tuple[int, int, int, int]:
        y = self._top + self.title_h  # level with the first column headers
        return self._margin, y, self._margin + self.thumb, y + self.label_h

    @property
    def source_box(self) -> tuple[int, int, int, int]:
        y = self.source_label_box[3]  # level with the first row of cells
        return self._margin, y, self._margin + self.thumb, y + self.thumb

    def _origin(self, outer_col: int, outer_row: int) -> tuple[int, int]:
        return self._grid_x + outer_col * (self.panel_w + self._gap), self._top + outer_row * (self.panel_h + self._gap)

    def title_box(self, outer_col: int, outer_row: int) -> tuple[int, int, int, int]:
        x, y = self._origin(outer_col, outer_row)
        return x, y, x + self.panel_w, y + self.title_h

    def header_box(self, outer_col: int, outer_row: int, col: int) -> tuple[int, int, int, int]:
        x0, y0, _, _ = self.cell_box(outer_col, outer_row, col, 0)
        return x0, y0 - self.label_h, x0 + self.thumb, y0

    def row_label_box(self, outer_col: int, outer_row: int, row: int) -> tuple[int, int, int, int]:
        x, _ = self._origin(outer_col, outer_row)
        y0 = self.cell_box(outer_col, outer_row, 0, row)[1]
        return x, y0, x + self.row_label_w - self.pad, y0 + self.thumb

    def cell_box(self, outer_col: int, outer_row: int, col: int, row: int) -> tuple[int, int, int, int]:
        x, y = self._origin(outer_col, outer_row)
        x0 = x + self.row_label_w + col * (self.thumb + self.pad)
        y0 = y + self.title_h + self.label_h + row * (self.thumb + self.pad)
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
    row_labels: bool, titled: bool, thumb: int = 256, max_side: int = 8192,
) -> list[Page]:  # fmt: skip
    """Shrink thumbnails (down to MIN_THUMB) until everything fits in max_side; past that, split into pages:
    whole sub-grids per page while one fits, else blocks of one sub-grid's cells."""

    def layout(t: int, c: int = cols, r: int = rows, oc: int = outer_cols, orow: int = outer_rows) -> SheetLayout:
        return SheetLayout(t, c, r, oc, orow, row_labels, titled)

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


# ---------------------------------------------------------------- axes


def axis_value(row: dict, column: str) -> str:
    if column == "size":
        return f"{row.get('width', '')}x{row.get('height', '')}"
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


def find_axes(rows: list[dict]) -> tuple[list[Axis], list[Axis]]:
    """(swept, fixed) in AXES order: swept axes have more than one value among the rows."""
    axes = [Axis(c, label, tuple(sorted({axis_value(r, c) for r in rows}, key=natural_key))) for c, label in AXES]
    return [a for a in axes if len(a.values) > 1], [a for a in axes if len(a.values) == 1]


def sheet_stems(keys: list[str]) -> dict[str, str]:
    """Source key -> file-name-safe stem. Stems that clash (ignoring case, which some file systems ignore, and a
    trailing -pN, which page numbers use) get a short hash of their source key."""
    safe = {key: re.sub(r"[^A-Za-z0-9._-]+", "_", _stem(key)).strip("._-")[:48] or "source" for key in keys}
    norm = lambda stem: re.sub(r"-p[0-9]+$", "", stem.lower())  # noqa: E731
    clashes = Counter(norm(stem) for stem in safe.values())
    digest = lambda key: hashlib.sha256(key.encode()).hexdigest()[:8]  # noqa: E731
    return {key: f"{stem}-{digest(key)}" if clashes[norm(stem)] > 1 else stem for key, stem in safe.items()}


def _stem(key: str) -> str:
    return PurePosixPath(unquote(urlsplit(key).path) if _URL.match(key) else key).stem


# ---------------------------------------------------------------- images and text


def load_thumbnail(path: Path, thumb: int) -> Image.Image | None:
    """The image fitted inside thumb x thumb, letterboxed; None if it cannot be read."""
    try:
        with Image.open(path, formats=list(DECODER_FORMATS)) as image:
            image.draft("RGB", (thumb, thumb))  # JPEG: decode at a reduced scale, far cheaper for big photos
            ImageOps.exif_transpose(image, in_place=True)  # as sources.py does: the camera's rotation applied
            return fit_thumbnail(to_rgb(image), thumb)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def fit_thumbnail(image: Image.Image, thumb: int) -> Image.Image:
    scale = min(thumb / image.width, thumb / image.height)  # up as well as down: every cell the same size
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: box-reduce before Lanczos when shrinking a lot (as Image.thumbnail does), several times faster
    small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    cell = Image.new("RGB", (thumb, thumb), LETTERBOX)
    cell.paste(small, ((thumb - size[0]) // 2, (thumb - size[1]) // 2))
    return cell


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # scalable since Pillow 10.1; nothing to ship or find


def draw_label(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font_size: int, fill=TEXT) -> None:
    """Text wrapped into as many lines as the box holds, the last cut with an ellipsis if it does not fit."""
    font, line_h, inset = _font(font_size), font_size * 3 // 2, max(2, font_size // 4)
    x0, y0, x1, y1 = box
    if not text or x1 - x0 <= 2 * inset:
        return  # no axis there (or no room): nothing to say
    for i, line in enumerate(fit_lines(text, font, x1 - x0 - 2 * inset, max(1, (y1 - y0) // line_h))):
        draw.text((x0 + inset, y0 + i * line_h + line_h // 2), line, font=font, fill=fill, anchor="lm")


def fit_lines(text: str, font, width: int, max_lines: int) -> list[str]:
    lines, current, cut = [], "", False
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
            if len(lines) == max_lines:
                cut = True  # more words follow: the last line says so
                break
        else:
            current = trial
    if not cut:
        lines.append(current)
    return [_ellipsize(line, font, width, force=cut and i == len(lines) - 1) for i, line in enumerate(lines)]


def _ellipsize(text: str, font, width: int, force: bool = False) -> str:
    if not force and font.getlength(text) <= width:
        return text
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if font.getlength(text[:mid].rstrip() + "…") <= width else (low, mid - 1)
    return text[:low].rstrip() + "…"


# ---------------------------------------------------------------- sheets


def write_contact_sheets(job_folder: Path, *, thumb: int = 256, max_side: int = 8192) -> list[Path]:
    """Write one sheet per source (more pages if needed) and delete this job's sheets no longer produced.

    Cells are `thumb` pixels, or smaller where the outputs are: enlarging a 64 px result to 256 shows nothing more
    and makes the sheet 16 times the pixels to draw and compress. They never go below MIN_CELL, so labels fit."""
    folder = Path(job_folder)
    by_source = _finished_rows(folder)
    stems = sheet_stems(list(by_source))
    written: list[Path] = []
    for key, rows in by_source.items():
        cell = min(thumb, max(MIN_CELL, _largest_side(rows)))
        for number, page in enumerate(_render(folder, key, rows, cell, max_side), 1):
            name = f"contact-sheet-{stems[key]}{f'-p{number}' if number > 1 else ''}.png"
            written.append(_save(page, folder / name))
    for stale in set(folder.glob("contact-sheet-*.png")) - set(written):
        try:
            stale.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot remove the stale {stale}: {exc.strerror or exc}") from exc
    return written


def _largest_side(rows: list[dict]) -> int:
    """The largest output side recorded in these rows (0 where none is readable)."""
    sides = [int(row[key]) for row in rows for key in ("width", "height") if str(row.get(key) or "").isdigit()]
    return max(sides, default=0)


def _finished_rows(folder: Path) -> dict[str, list[dict]]:
    """metadata.csv rows whose image is still there, by source key in first-seen order."""
    try:
        with (folder / "metadata.csv").open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return {}
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        name = row.get("file_name") or ""
        if name and name == Path(name).name and (folder / name).is_file():  # a bare name: never read elsewhere
            by_source.setdefault(row.get("source") or "", []).append(row)
    return by_source


def _render(folder: Path, key: str, rows: list[dict], thumb: int, max_side: int) -> Iterator[Image.Image]:
    swept, fixed = find_axes(rows)
    slots = [swept[2:3], swept[3:], swept[:1], swept[1:2]]  # outer column, outer rows, across, down
    place = lambda row: tuple(tuple(axis_value(row, a.column) for a in axes) for axes in slots)  # noqa: E731
    # Values per slot as they occur: for the outer rows only combinations that exist, not whole empty sub-grids.
    coords = [sorted({place(r)[k] for r in rows}, key=lambda v: [natural_key(x) for x in v]) for k in range(4)]
    cells = {place(r): folder / r["file_name"] for r in rows}  # the same parameters twice: the last row wins
    pages = plan_pages(
        len(coords[2]), len(coords[3]), len(coords[0]), len(coords[1]),
        row_labels=bool(slots[3]), titled=bool(slots[0]), thumb=thumb, max_side=max_side,
    )  # fmt: skip
    is_url = bool(_URL.match(key))
    source = None if is_url or not Path(key).is_file() else load_thumbnail(Path(key), pages[0].layout.thumb)
    name = key if is_url else "/".join(PurePosixPath(key).parts[-2:]).lstrip("/")  # its folder tells same stems apart
    params = ", ".join(f"{a.label} {a.values[0]}" for a in fixed if a.column != "prompt")
    prompt = "".join(f"prompt: {a.values[0]}" for a in fixed if a.column == "prompt")  # last: the longest
    for number, page in enumerate(pages, 1):
        where = f"{name} (page {number} of {len(pages)})" if len(pages) > 1 else name
        banner = " | ".join(filter(None, [where, params, prompt]))
        yield _draw_page(page, slots, coords, cells, source, banner)


def _draw_page(page: Page, slots: list, coords: list, cells: dict, source: Image.Image | None, banner: str):
    lay, font_size = page.layout, page.layout.font_size
    canvas = Image.new("RGB", lay.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw_label(draw, lay.banner_box, banner, font_size)
    draw_label(draw, lay.source_label_box, "source", font_size)
    _draw_cell(canvas, draw, lay.source_box, source, "source not available", PLACEHOLDER, font_size)
    for (i, oc), (j, orow) in itertools.product(enumerate(page.outer_cols), enumerate(page.outer_rows)):
        outer = (coords[0][oc], coords[1][orow])
        draw_label(draw, lay.title_box(i, j), _label(slots[0] + slots[1], outer[0] + outer[1], "="), font_size)
        for ci, c in enumerate(page.cols):
            draw_label(draw, lay.header_box(i, j, ci), _label(slots[2], coords[2][c]), font_size)
        for ri, r in enumerate(page.rows):
            draw_label(draw, lay.row_label_box(i, j, ri), _label(slots[3], coords[3][r]), font_size)
            for ci, c in enumerate(page.cols):
                path = cells.get((*outer, coords[2][c], coords[3][r]))
                image = load_thumbnail(path, lay.thumb) if path else None
                # failed, deleted or unreadable: the cell stays, labelled by its row and column
                _draw_cell(canvas, draw, lay.cell_box(i, j, ci, ri), image, "no image", EMPTY, font_size)
    return canvas


def _label(axes: list[Axis], values: tuple[str, ...], separator: str = " ") -> str:
    return ", ".join(f"{axis.label}{separator}{_distinct_part(axis, value)}" for axis, value in zip(axes, values))


def _distinct_part(axis: Axis, value: str) -> str:
    """Prompts swept over one source often share a long start (its caption): label them by what differs."""
    if axis.column != "prompt" or len(axis.values) < 2:
        return value
    cut = os.path.commonprefix(list(axis.values)).rfind(" ") + 1  # back to a whole word
    return f"…{value[cut:]}" if cut > 12 else value


def _draw_cell(canvas, draw, box, image: Image.Image | None, missing: str, fill: tuple, font_size: int) -> None:
    if image is not None:
        canvas.paste(image, box[:2])
    else:
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)  # rectangle() includes x1, y1
        draw_label(draw, box, missing, font_size, fill=FAINT)


def _save(image: Image.Image, path: Path) -> Path:
    # Beside the target so the rename is atomic; JobOutput.open sweeps `.*.tmp` a crash leaves. No fsync: a sheet
    # is derived data, rewritten at the end of the next run.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(temporary, format="PNG", compress_level=3)  # level 6: over twice as slow on big sheets, <10% smaller
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
