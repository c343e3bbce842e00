"""Masks: which mask goes with each source, loading and fitting it with its source's geometry, and compositing
a result over its source through it, so that pixels outside the mask are the source's, exactly.

A mask is an image of any mode, read as luminance (or as its alpha channel where it has transparency, as
AUTOMATIC1111 reads one). The pipelines repaint where it is at least mid-grey and keep the rest; the composite
then blends result and source by its level. It is fitted as its source is (same resize mode, crop box, padding
and size) with nearest-neighbour resampling, so its edge stays where it was drawn.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageChops, ImageFilter

from .fetch_options import FetchOptions
from .local_files import entry_kind
from .parameters import named, needing
from .pipeline_config import MASKED_TASKS
from .prompts import placeholders
from .source_decoding import TRANSPOSES, SourceError, applied_orientation, to_rgb
from .source_folders import IMAGE_SUFFIXES, shown_entries
from .sources import SourceRef, SourceSpecError, expand_source, fit_geometry, load_image, source_ref
from .validation import printable

if TYPE_CHECKING:
    import numpy as np

_GLOB_CHARS = frozenset("*?[")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # a URL (source_ref refuses any but http and https)
# FluxInpaintPipeline and FluxFillPipeline binarize the mask at 0.5 (diffusers' VaeImageProcessor, do_binarize):
# a pixel at or above 128 is repainted, any darker one kept, so a mask with none repaints nothing.
REPAINT_LEVEL = 128
_NOT_FOUND = ".*"  # the key of a mask no file was found for: "<folder>/<stem>.*", what was looked for

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- manifest: pairing by stem


def pair_masks(spec: str, base: Path, sources: tuple[SourceRef, ...], recursive: bool = False) -> tuple[SourceRef, ...]:
    """Each source's mask, by file stem: `spec` is a template (`masks/{stem}.png`), a folder, a glob, or one
    file (the same mask for every source). A source without one gets a mask that fails to load, naming what
    was looked for: the file a glob like `masks/*.png` pairs (as its template would), else the folder and stem.
    A folder or glob finding no mask at all is no error here: planning gives back the masks of finished items
    deleted since, and refuses a job left with none (source_identity). SourceSpecError for a spec that can
    never work."""
    if "\0" in spec:
        raise SourceSpecError(f"{spec!r} holds a NUL byte (\\0), which no file name can")
    if "{" in spec:
        _check_template(spec)
        return tuple(_template_mask(spec.format(stem=ref.stem), base) for ref in sources)
    folder = _looked_in(spec, base)
    one = _SCHEME.match(spec) or os.path.isfile(Path(base).expanduser() / os.path.expanduser(spec))
    if one or (not _GLOB_CHARS & set(spec) and not os.path.isdir(folder)):  # one file or URL: the mask of all
        return (source_ref(spec, base),) * len(sources)  # a URL's query or a file name may hold '?' or '[
    try:
        refs = expand_source(spec, base, recursive=recursive)
    except SourceSpecError:  # finding no image (masks exclude no folder, so no other refusal comes from here)
        refs = []
    by_stem: dict[str, SourceRef] = {}
    for ref in refs:
        other = by_stem.setdefault(ref.stem, ref)
        if other is not ref:
            raise SourceSpecError(f"two masks have the stem '{ref.stem}': {other.key} and {ref.key}")
    suffix = _one_suffix(spec)
    if suffix is not None:  # `masks/*.png`: the file it would pair, as `masks/{stem}.png` names it
        template = os.path.join(os.path.dirname(os.path.expanduser(spec)), f"{{stem}}{suffix}")
        paired = tuple(by_stem.get(ref.stem) or _template_mask(template.format(stem=ref.stem), base) for ref in sources)
    else:
        paired = tuple(by_stem.get(ref.stem) or unpaired_mask(folder, ref.stem) for ref in sources)
    if refs or not _GLOB_CHARS & set(spec):
        return paired
    # A glob matching nothing may be a file's name (`mask [v1].png`) deleted since: planning reads it as that file
    # where the job's records name it (`recorded_literal`), else as the glob.
    literal = os.path.abspath(Path(base).expanduser() / os.path.expanduser(spec))
    return tuple(replace(mask, unmatched=literal) for mask in paired)


def recorded_literal(mask: SourceRef, known: dict) -> SourceRef:
    """A mask of a glob that matched nothing (`unmatched` holds the glob read as a file name): the file of that
    name, gone, where the records `known` hold content for it (its items keep their ids); else the mask the glob
    paired."""
    if not mask.unmatched:
        return mask
    if (mask.unmatched, "") in known:
        return source_ref(mask.unmatched, Path("/"))
    return replace(mask, unmatched="")


def without_masks_as_sources(grid):
    """The grid without the sources that are another source's mask (`photos/` holding `cat.png` and `cat_mask.png`,
    masks `photos/{stem}_mask.png`), unless listed by name (asked for as sources); their number in
    `masks_left_out`."""
    listed = {os.path.abspath(Path(base).expanduser() / os.path.expanduser(spec)) for base, spec in grid.specs}
    masks_of: dict[str, set[int]] = {}
    for n, mask in enumerate(grid.masks):
        if not mask.is_url:
            masks_of.setdefault(mask.key, set()).add(n)
    left_out = {
        n
        for n, ref in enumerate(grid.sources)
        if not ref.is_url and ref.key not in listed and masks_of.get(ref.key, set()) - {n}
    }
    if not left_out:
        return grid
    kept = [n for n in range(len(grid.sources)) if n not in left_out]
    return replace(
        grid,
        sources=tuple(grid.sources[n] for n in kept),
        masks=tuple(grid.masks[n] for n in kept),
        masks_left_out=len(left_out),
    )


def _one_suffix(spec: str) -> str | None:
    """The suffix of a glob whose only wildcard is the file name's stem (`masks/*.png`: '.png'), else None."""
    head, name = os.path.split(os.path.expanduser(spec))
    suffix = name[1:]
    if name.startswith("*") and suffix.startswith(".") and not _GLOB_CHARS & set(head + suffix):
        return suffix
    return None


def _check_template(template: str) -> None:
    """A mask template fills in {stem} as it is: no other placeholder, format spec or conversion (a spec would pad
    or cut the stem, so the mask looked for is not the file of that name)."""
    try:
        placeholders(template, ("stem",), "a mask template")
    except ValueError as exc:
        raise SourceSpecError(f"mask template '{printable(template)}': {exc}") from None


def _template_mask(rendered: str, base: Path) -> SourceRef:
    """The mask a template names for one source. A folder there is that source's missing mask, as a file not
    there is: its items fail at load, saying so; the job's other items run."""
    path = Path(os.path.abspath(Path(base).expanduser() / Path(rendered).expanduser()))
    if _SCHEME.match(rendered):
        return source_ref(rendered, base)
    if not os.path.isdir(path):
        try:
            return source_ref(rendered, base)
        except SourceSpecError:  # a name too long for the file system: a mask not there, as any other
            pass
    return SourceRef(key=path.as_posix(), is_url=False, stem=path.stem, fingerprint="", caption=None)


def _looked_in(spec: str, base: Path) -> str:
    """The folder a folder or glob spec looks in: its literal leading folders."""
    parts = Path(os.path.expanduser(spec)).parts
    literal = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        literal.append(part)
    return os.path.abspath(Path(base).expanduser().joinpath(*literal))


def unpaired_mask(folder: str, stem: str) -> SourceRef:
    """The mask of a source that a folder (or a glob from it) has none for: loading it fails, naming what was
    looked for."""
    return SourceRef(key=f"{Path(folder).as_posix()}/{stem}{_NOT_FOUND}", is_url=False, stem=stem, fingerprint="",
                     caption=None)  # fmt: skip


def searched_folder(mask: SourceRef) -> str | None:
    """The folder a folder or glob spec looked in for a mask it found none for (the mask's stem, under it, is what
    it looked for); None for a mask file or URL."""
    folder = mask.key.removesuffix(f"/{mask.stem}{_NOT_FOUND}")
    return folder if folder != mask.key and not mask.is_url and not mask.stat else None


def _not_regular_namesakes(mask: SourceRef) -> list[tuple[str, str]]:
    """(path, what it is) of the entries in the folder an unpaired `mask` was looked for in that have its stem and
    an image's suffix but are no regular file (a link to a deleted mask, a FIFO): why the folder gave none."""
    folder, found = searched_folder(mask), []
    suffixes = sorted({case for suffix in IMAGE_SUFFIXES for case in (suffix, suffix.upper())}) if folder else ()
    for suffix in suffixes:
        path = f"{folder}/{mask.stem}{suffix}"
        if os.path.lexists(path) and (kind := entry_kind(Path(path))) not in (None, "regular file", "folder"):
            found.append((path, kind))
    return found


def is_missing(mask: SourceRef) -> bool:
    """A local mask file that is not there (`plan` lists their sources; each such item fails at load)."""
    return not mask.is_url and not os.path.isfile(mask.key)


# ---------------------------------------------------------------- manifest: what a job may ask


def parameter_problems(grid, where: str, masks_given: bool = False) -> list[str]:
    """Mask parameters that would change nothing, so items differing only in them would be one image under
    several ids: any set (off its default) without masks; mask_blur off its default with composite false.
    `masks_given`: the job gives masks that could not be paired (their own error says why), so it is no job
    without masks."""
    if grid.masks or masks_given:
        return _blur_problems(grid, where)
    return [
        f"{where}: field '{p.name}': applies only to masked items (give the job 'masks:', or the row a 'mask')"
        for p in needing("mask")
        if any(value != p.default_for() for value in getattr(grid, p.name))
    ]


def _blur_problems(grid, where: str) -> list[str]:
    """mask_blur only feathers the composite (and the check that a mask is wider than it): with composite false
    the pipeline's raw output is the result, whatever the blur."""
    default = named("mask_blur").default_for()
    if False not in grid.composite or all(blur == default for blur in grid.mask_blur):
        return []
    if len(grid.composite) > 1:  # a sweep: name the combination, as the grid gives it
        values = ", ".join(map(str, grid.mask_blur))
        problem = (
            f"the grid crosses composite [true, false] with mask_blur [{values}], but mask_blur has no effect with "
            "composite false (it only feathers the composite), so those items would be one image under several "
            "ids: give composite false its own job, without mask_blur"
        )
        return [f"{where}: field 'mask_blur': {problem}"]
    values = ", ".join(str(blur) for blur in grid.mask_blur if blur != default)
    problem = (
        f"{values} has no effect with composite false (it only feathers the composite), so the image would be the "
        f"one mask_blur {default} makes, under another id: leave mask_blur out"
    )
    return [f"{where}: field 'mask_blur': {problem}"]


def task_problems(jobs, task: str) -> list[str]:
    """Masks given to a task that takes none, and an inpainting task's job without masks."""
    problems = []
    for job in jobs:
        masked = [bool(grid.masks) for grid in job.grids]
        if task not in MASKED_TASKS and any(masked):
            problems.append(f"{job.origin}: masks are given but the pipeline task '{task}' takes none "
                            f"(masks go with task {' or '.join(MASKED_TASKS)})")  # fmt: skip
        elif task in MASKED_TASKS and not all(masked):
            rows = [str(grid.row) for grid in job.grids if not grid.masks and grid.row is not None]
            what = f"row(s) {', '.join(rows[:5])} have no 'mask'" if rows else "it has no 'masks:'"
            problems.append(f"{job.origin}: the pipeline task '{task}' repaints through a mask, but {what}")
        elif task == "fill" and any(padding for grid in job.grids for padding in grid.mask_padding):
            problems.append(f"{job.origin}: field 'mask_padding': the fill task takes none (FluxFillPipeline repaints "
                            "the whole image; inpaint takes it)")  # fmt: skip
    return problems


# ---------------------------------------------------------------- records


def mask_fields(item) -> dict:
    """The record fields naming an item's mask (none for an item without one): its path or URL, and, like the
    source's, the stat and content hash that let the next plan reuse the hash."""
    mask = item.mask
    if mask is None:
        return {}
    return {"mask": mask.key, "mask_stat": mask.stat, "mask_sha256": mask.fingerprint if len(mask.fingerprint) == 64 else "",
            **{p.column: getattr(item, p.name) for p in needing("mask")}}  # fmt: skip


# ---------------------------------------------------------------- loading and fitting


def to_mask(img: Image.Image) -> Image.Image:
    """Any mode -> "L": the alpha channel where the image has real transparency, else its luminance."""
    if "A" in img.getbands() or "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return to_rgb(img).convert("L")


def fit_mask(
    mask: Image.Image, source_size: tuple[int, int], width: int, height: int, mode: str, orientation: int = 1
) -> Image.Image:
    """The mask with the geometry its source gets: drawn on the stored pixels of a source its EXIF `orientation`
    turned by a quarter (the mask of the stored size, width and height swapped, not turned itself), turned alike;
    then stretched to the source's size if drawn at another."""
    if _turned(mask, source_size, orientation):
        mask = mask.transpose(TRANSPOSES[orientation])
    if mask.size != source_size:
        mask = mask.resize(source_size, Image.Resampling.NEAREST)
    return fit_geometry(mask, width, height, mode, Image.Resampling.NEAREST)


def _turned(mask: Image.Image, source_size: tuple[int, int], orientation: int) -> bool:
    """Whether the mask was drawn on the stored pixels of a source its EXIF orientation turns by a quarter."""
    stored = source_size[::-1] if orientation in (5, 6, 7, 8) else source_size
    return stored != source_size and mask.size == stored and applied_orientation(mask) == 1


def other_aspect(mask_size: tuple[int, int], source_size: tuple[int, int]) -> bool:
    """Whether stretching a mask of `mask_size` to `source_size` changes its shape: its sides are not the
    source's scaled alike, each to within the pixel a smaller mask's rounding allows."""
    (mw, mh), (sw, sh) = mask_size, source_size
    return abs(mh - mw * sh / sw) > 1 and abs(mw - mh * sw / sh) > 1


class MaskLoader:
    """Loads, checks and fits items' masks; a mask shared by many items (a sweep, one mask for all) is decoded
    once. Failures come back as SourceError naming the mask, so they are the item's "load" failure."""

    def __init__(self, fetch: FetchOptions, size: int = 16):
        self.fetch, self.size = fetch, size
        self.masks: OrderedDict[SourceRef, Image.Image | SourceError] = OrderedDict()
        self.warned: set[tuple[SourceRef, tuple[int, int]]] = set()  # masks stretched to another aspect, said once

    def fitted(self, item, source_size: tuple[int, int], orientation: int = 1) -> Image.Image | None:
        """The item's mask fitted to its source: `source_size` as decoded, turned by its EXIF `orientation`."""
        if item.mask is None:
            return None
        loaded = self._loaded(item.mask)
        drawn = loaded.size[::-1] if _turned(loaded, source_size, orientation) else loaded.size
        if other_aspect(drawn, source_size) and (item.mask, source_size) not in self.warned:
            self.warned.add((item.mask, source_size))
            log.warning(
                "mask %s is %dx%d, its source %s is %dx%d: stretched to the source's shape (another aspect ratio: "
                "is it the mask of another image?)", item.mask.key, *drawn, item.source.key, *source_size
            )  # fmt: skip
        mask = fit_mask(loaded, source_size, item.width, item.height, item.resize, orientation)
        repaints = repainted(mask)
        if not repaints.getbbox():
            raise SourceError("mask: its white part lies outside the fitted image (the crop leaves nothing to repaint)")
        # With the composite, a pixel changes only where the pipeline repaints AND the feathered alpha is above 0.
        if item.composite and not ImageChops.darker(feathered(mask, item.mask_blur), repaints).getbbox():
            raise SourceError(
                f"mask: narrower everywhere than mask_blur {item.mask_blur}, nothing would be repainted",
                "mask: narrower everywhere than mask_blur",
            )
        return mask

    def _loaded(self, ref: SourceRef) -> Image.Image:
        if ref not in self.masks:
            self.masks[ref] = _load(ref, self.fetch)
            while len(self.masks) > self.size:
                self.masks.popitem(last=False)
        self.masks.move_to_end(ref)
        found = self.masks[ref]
        if isinstance(found, SourceError):
            raise found
        return found


def _load(ref: SourceRef, fetch: FetchOptions) -> Image.Image | SourceError:
    if ref.key.endswith(_NOT_FOUND):
        odd = _not_regular_namesakes(ref)
        also = f"; found there, not a regular file: {shown_entries(odd)}" if odd else ""
        return SourceError(f"mask: none found for this source (looked for {ref.key}{also})", "mask: none found")
    if not ref.is_url and os.path.isdir(ref.key):  # where a template names a folder
        return SourceError(f"mask: {ref.key} is a folder, not an image file", "mask: a folder")
    try:
        mask = load_image(ref, fetch, convert=to_mask)
    except SourceError as exc:
        return SourceError(f"mask: {exc}", f"mask: {exc.reason}")
    brightest = mask.getextrema()[1]
    if brightest == 0:
        return SourceError(f"mask: all black, nothing to repaint ({ref.key})", "mask: all black")
    if brightest < REPAINT_LEVEL:
        return SourceError(f"mask: no pixel at or above mid-grey (brightest {brightest}/255): nothing to repaint "
                           f"({ref.key})", "mask: no pixel at or above mid-grey")  # fmt: skip
    return mask


def repainted(mask: Image.Image) -> Image.Image:
    """Where the pipeline repaints: the mask binarized as the pipelines do it (white at or above REPAINT_LEVEL)."""
    return mask.point(lambda level: 255 if level >= REPAINT_LEVEL else 0)


# ---------------------------------------------------------------- compositing


def composited(item, result: Image.Image, source: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The result over the fitted source through the (feathered) mask: outside the mask, the source's pixels
    exactly (the pipeline's VAE round trip changes them all a little). Unchanged without a mask or compositing."""
    if mask is None or not item.composite:
        return result
    if result.size != source.size:
        raise ValueError(
            f"the result is {result.size[0]}x{result.size[1]}, its source {source.size[0]}x{source.size[1]}"
        )
    return Image.composite(result.convert("RGB"), source, feathered(mask, item.mask_blur))


def feathered(mask: Image.Image, blur: int) -> Image.Image:
    """The blend's alpha: the mask, its edge softened over about `blur` pixels INSIDE the mask, so the alpha is
    still 0 wherever the mask is (AUTOMATIC1111 blurs both ways, which changes pixels outside the mask)."""
    if blur == 0:
        return mask
    import numpy as np  # here: `plan` never blends, and numpy's import is a tenth of its start

    shrunk = Image.fromarray(_eroded(np.asarray(mask), (blur + 1) // 2))
    return ImageChops.darker(shrunk.filter(ImageFilter.GaussianBlur(blur / 4)), mask)


def _eroded(pixels: np.ndarray, radius: int) -> np.ndarray:
    """The minimum over a (2 radius + 1)-pixel square around each pixel (beyond the border: the border's),
    in log(radius) passes per axis."""
    for axis in (0, 1):
        pixels = _window_min(pixels, radius, axis)
    return pixels


def _window_min(pixels: np.ndarray, radius: int, axis: int) -> np.ndarray:
    import numpy as np

    width = 2 * radius + 1
    padded = np.pad(pixels, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
    length = pixels.shape[axis]
    span, mins = 1, padded  # mins[i] = min(padded[i : i + span]) along the axis
    while span * 2 <= width:
        shifted = np.take(mins, np.arange(span, mins.shape[axis]), axis=axis)
        mins = np.minimum(np.take(mins, np.arange(shifted.shape[axis]), axis=axis), shifted)
        span *= 2
    head = np.take(mins, np.arange(length), axis=axis)
    tail = np.take(mins, np.arange(width - span, width - span + length), axis=axis)
    return np.minimum(head, tail)
