"""Contact sheets: per job and source, `contact-sheet-<stem>.png`: the source, then its results where
`sheet_arrangement` places them, drawn on the geometry of `sheet_layout`.

Reads only `metadata.csv` and the images it names, so it is cheap to call at the end of every job.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import job_files
from .errors import OutputError
from .sheet_arrangement import Arrangement, arrange, distinct_part, find_axes, is_positioned, shown_rows  # noqa: F401 - find_axes: importable beside the drawing
from .sheet_layout import MIN_THUMB, Page, SheetLayout, plan_pages  # noqa: F401 - so are MIN_THUMB, SheetLayout
from .source_decoding import SourceError, open_image, to_rgb
from .source_folders import SHEET_PREFIX

MIN_CELL = 128  # outputs smaller than this are still enlarged to it, so a cell's labels have room
BACKGROUND, TEXT, LETTERBOX = (255, 255, 255), (20, 20, 20), (128, 128, 128)
EMPTY, PLACEHOLDER, FAINT = (232, 232, 232), (200, 200, 200), (120, 120, 120)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PARAGRAPH_LINES = 2  # the lines a label's later paragraph (a prompt) keeps, however long the one before it


# ---------------------------------------------------------------- names


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
    """The image fitted inside thumb x thumb, letterboxed; None if it cannot be read. Opened as sources are (their
    decoders and pixel limit), so a source the run could use has its thumbnail."""
    try:
        with open(path, "rb") as handle, open_image(handle) as image:
            image.draft("RGB", (thumb, thumb))  # JPEG: decode at a reduced scale, far cheaper for big photos
            ImageOps.exif_transpose(image, in_place=True)  # as sources.py does: the camera's rotation applied
            return fit_thumbnail(to_rgb(image), thumb)
    except (SourceError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def fit_thumbnail(image: Image.Image, thumb: int) -> Image.Image:
    scale = min(thumb / image.width, thumb / image.height)  # up as well as down: every cell the same size
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: box-reduce before Lanczos when shrinking a lot (as Image.thumbnail does), several times faster
    small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    cell = Image.new("RGB", (thumb, thumb), LETTERBOX)
    cell.paste(small, ((thumb - size[0]) // 2, (thumb - size[1]) // 2))
    return cell


# Fonts with broad coverage where systems put them (Debian/Ubuntu, Fedora, Arch, macOS), tried after Pillow's own
# (Aileron: Latin letters without accents) for a label it cannot draw; fc-match's sans-serif is tried last.
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
)
_NO_GLYPH = "\uffff"  # a noncharacter: every font draws its "missing glyph" box for it


@functools.lru_cache(maxsize=1)
def _font_files() -> tuple[str | None, ...]:
    """None (Pillow's default), then the installed fonts of FONT_FILES and fc-match's sans-serif, each once."""
    found = [path for path in FONT_FILES if os.path.isfile(path)]
    try:
        command = ["fc-match", "-f", "%{file}", "sans-serif"]
        matched = subprocess.run(command, check=False, capture_output=True, text=True, timeout=5)
        found += [matched.stdout] if matched.returncode == 0 and os.path.isfile(matched.stdout) else []
    except (OSError, subprocess.SubprocessError):
        pass  # no fontconfig: the known places only
    return (None, *dict.fromkeys(found))


@functools.lru_cache(maxsize=64)
def _loaded(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont | None:
    try:
        return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)
    except OSError:
        return None  # unreadable font file: the next one


@functools.lru_cache(maxsize=16384)
def _has_glyph(path: str | None, char: str) -> bool:
    """Whether the font draws `char` as something other than its missing-glyph box (whitespace always counts)."""
    return _loaded(path, 24) is not None and (char.isspace() or _glyph(path, char) != _glyph(path, _NO_GLYPH))


@functools.lru_cache(maxsize=64)
def _glyph(path: str | None, char: str) -> tuple:
    font = _loaded(path, 24)
    box = font.getbbox(char)
    image = Image.new("L", (max(1, box[2]), max(1, box[3])))
    ImageDraw.Draw(image).text((0, 0), char, font=font, fill=255)
    return box, image.tobytes()


def _font(size: int, text: str = "") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The first font that draws every character of `text` (and the ellipsis a cut line ends with), else the one
    that draws the most: Latin labels keep Pillow's default font on every machine."""
    chars = set(text + "…")
    best, best_count = None, -1
    for path in _font_files():
        count = sum(_has_glyph(path, char) for char in chars)
        if count == len(chars):
            return _loaded(path, size)
        if count > best_count and _loaded(path, size) is not None:
            best, best_count = path, count
    return _loaded(best, size)


def draw_label(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font_size: int, fill=TEXT) -> None:
    """Text wrapped into as many lines as the box holds, the last cut with an ellipsis if it does not fit; each
    line of `text` (a paragraph) starts a line of its own."""
    font, line_h, inset = _font(font_size, text), font_size * 3 // 2, max(2, font_size // 4)
    x0, y0, x1, y1 = box
    if not text or x1 - x0 <= 2 * inset:
        return  # no axis there (or no room): nothing to say
    lines = fit_paragraphs(text.split("\n"), font, x1 - x0 - 2 * inset, max(1, (y1 - y0) // line_h))
    for i, line in enumerate(lines):
        draw.text((x0 + inset, y0 + i * line_h + line_h // 2), line, font=font, fill=fill, anchor="lm")


def fit_paragraphs(paragraphs: list[str], font, width: int, max_lines: int) -> list[str]:
    """Each paragraph wrapped, leaving every later one the lines it needs up to PARAGRAPH_LINES, so a long first
    one never crowds out the rest (a cell's parameters, then its prompt)."""
    paragraphs = [text for text in paragraphs if text.strip()]
    needs = [min(PARAGRAPH_LINES, len(fit_lines(text, font, width, max_lines))) for text in paragraphs]
    lines: list[str] = []
    for i, text in enumerate(paragraphs):
        if len(lines) == max_lines:
            break
        lines += fit_lines(text, font, width, max(1, max_lines - len(lines) - sum(needs[i + 1 :])))
    return lines


@functools.lru_cache(maxsize=65536)
def _length(font, text: str) -> float:
    """font.getlength, remembered: labels repeat over a job's sheets ("strength 0.5", a shared prompt), each
    measured again while wrapping, and measuring was most of drawing a sheet."""
    return font.getlength(text)


def fit_lines(text: str, font, width: int, max_lines: int) -> list[str]:
    lines, current, cut = [], "", False
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and _length(font, trial) > width:
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
    if not force and _length(font, text) <= width:
        return text
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if _length(font, text[:mid].rstrip() + "…") <= width else (low, mid - 1)
    return text[:low].rstrip() + "…"


# ---------------------------------------------------------------- sheets


def write_contact_sheets(
    job_folder: Path,
    *,
    thumb: int = 256,
    max_side: int = 8192,
    stopped: Callable[[], bool] = lambda: False,
    drawn: bool = True,
) -> list[Path] | None:
    """Write one sheet per source (more pages if needed) and delete this job's sheets no longer produced (every
    one where not `drawn`: a job with `contact_sheets: false`). Once `stopped()` is true (a run stopping by
    signal), no further sheet is drawn and None is returned: cut short.

    Cells are `thumb` pixels, or smaller where the outputs are: enlarging a 64 px result to 256 shows nothing more
    and makes the sheet 16 times the pixels to draw and compress. They never go below MIN_CELL, so labels fit."""
    folder = Path(job_folder)
    by_source = _finished_rows(folder) if drawn else {}
    stems = sheet_stems(list(by_source))
    written: list[Path] = []
    positioned = any(is_positioned(row) for rows in by_source.values() for row in rows)
    for key, listed in by_source.items():
        if stopped():
            return None
        rows, left_off = shown_rows(listed, positioned)
        if not rows:  # only results of items no longer planned: no sheet
            continue
        cell = min(thumb, max(MIN_CELL, _largest_side(rows)))
        for number, page in enumerate(_render(folder, key, rows, cell, max_side, left_off), 1):
            name = f"{SHEET_PREFIX}{stems[key]}{f'-p{number}' if number > 1 else ''}.png"
            written.append(_save(page, folder / name))
    for stale in set(folder.glob(f"{SHEET_PREFIX}*.png")) - set(written):
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


def _render(
    folder: Path, key: str, rows: list[dict], thumb: int, max_side: int, left_off: int = 0
) -> Iterator[Image.Image]:
    grid, fixed = arrange(rows)
    pages = plan_pages(
        grid.cols, grid.rows, grid.outer_cols, grid.outer_rows, row_labels=bool(grid.row_labels),
        titled=bool(grid.titles), thumb=thumb, max_side=max_side, cell_label_lines=grid.cell_label_lines,
        header_lines=grid.header_lines,
    )  # fmt: skip
    is_url = bool(_URL.match(key))
    source = None if is_url or not Path(key).is_file() else load_thumbnail(Path(key), pages[0].layout.thumb)
    name = key if is_url else "/".join(PurePosixPath(key).parts[-2:]).lstrip("/")  # its folder tells same stems apart
    params = ", ".join(f"{a.label} {distinct_part(a, a.values[0])}" for a in fixed if a.column != "prompt")
    prompt = "".join(f"prompt: {a.values[0]}" for a in fixed if a.column == "prompt")  # last: the longest
    prompt = prompt or (f"prompts: {grid.shared_prompt}" if grid.shared_prompt else "")  # what their labels leave out
    # a line of its own, kept when the rest is cut short
    results = f"{left_off} result{'s' if left_off > 1 else ''}"
    unplanned = f"\nnot shown: {results} no longer planned (batch-edit prune moves them out)" if left_off else ""
    for number, page in enumerate(pages, 1):
        where = f"{name} (page {number} of {len(pages)})" if len(pages) > 1 else name
        banner = " | ".join(filter(None, [where, params, prompt])) + unplanned
        yield _draw_page(folder, page, grid, source, banner)


def _draw_page(folder: Path, page: Page, grid: Arrangement, source: Image.Image | None, banner: str) -> Image.Image:
    lay, font_size = page.layout, page.layout.font_size
    canvas = Image.new("RGB", lay.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw_label(draw, lay.banner_box, banner, font_size)
    draw_label(draw, lay.source_label_box, "source", font_size)
    _draw_cell(canvas, draw, lay.source_box, source, "source not available", PLACEHOLDER, font_size)
    for (i, oc), (j, orow) in itertools.product(enumerate(page.outer_cols), enumerate(page.outer_rows)):
        if grid.titles:
            draw_label(draw, lay.title_box(i, j), grid.titles[oc][orow], font_size)
        for ci, c in enumerate(page.cols if grid.headers else ()):
            draw_label(draw, lay.header_box(i, j, ci), grid.headers[c], font_size)
        for ri, r in enumerate(page.rows):
            if grid.row_labels:
                draw_label(draw, lay.row_label_box(i, j, ri), grid.row_labels[r], font_size)
            for ci, c in enumerate(page.cols):
                row = grid.cells.get((oc, orow, c, r))
                if grid.cell_labels is not None:
                    if row is None:
                        continue  # past the last result laid out in order: the space stays blank
                    draw_label(draw, lay.cell_label_box(i, j, ci, ri), grid.cell_labels[(oc, orow, c, r)], font_size)
                image = load_thumbnail(folder / row["file_name"], lay.thumb) if row else None
                # failed, deleted or unreadable: the cell stays, labelled by its row and column
                _draw_cell(canvas, draw, lay.cell_box(i, j, ci, ri), image, "no image", EMPTY, font_size)
    return canvas


def _draw_cell(canvas, draw, box, image: Image.Image | None, missing: str, fill: tuple, font_size: int) -> None:
    if image is not None:
        canvas.paste(image, box[:2])
    else:
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)  # rectangle() includes x1, y1
        draw_label(draw, box, missing, font_size, fill=FAINT)


def _save(image: Image.Image, path: Path) -> Path:
    # Beside the target so the rename is atomic; JobOutput.open sweeps `.*.tmp` a crash leaves. No fsync: a sheet
    # is derived data, rewritten at the end of the next run.
    temporary = job_files.temporary_name(path)
    try:
        with job_files.open_new(temporary) as handle:  # never through a link planted under the temporary name
            # level 6: over twice as slow on big sheets, <10% smaller
            image.save(handle, format="PNG", compress_level=3)
        os.replace(temporary, path)  # replaces a link at `path` itself, never its target
    except OSError as exc:
        job_files.remove_file(temporary)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
