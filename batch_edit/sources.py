"""Sources: manifest source specs in, SourceRefs out; a SourceRef in, an RGB image of the item's size out.

Spec errors (a folder with no images, a bad scheme) are found while the manifest is read; load errors are
per item (`SourceError`, whose text goes straight into the item's record), so one bad photo never stops a run.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from PIL import Image

from .captions import CaptionFileRefused, read_caption
from .fetch_options import FetchError, FetchOptions, human_bytes
from .local_files import NotRegularFile, TooLarge, read_capped
from .source_decoding import SourceError, decode_image, to_rgb
from .source_folders import (
    GLOB_CHARS,
    IMAGE_SUFFIXES,
    JOB_STATE_DIR,
    RECORDS_FILE,
    ExcludesAll,
    Exclusions,
    OwnResults,
    case_insensitive_matches,
    folder_images,
    glob_images,
    glob_root,
    is_job_folder,
    shown_entries,
)

RESIZE_MODES = ("center-crop", "pad", "stretch", "fit")
MIN_SIDE, MAX_SIDE, SIDE_STEP = 16, 4096, 16
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FILE_NOT_FOUND = "file not found"  # a local source's load error where its file is not there
# a local source's load error where its bytes are not those planned: its failure record tells the next plan not to
# trust the size and mtime recorded with the old content (source_identity.recorded_hashes), so it reads the file
SOURCE_CHANGED = "source changed since the run was planned"


class SourceSpecError(ValueError):
    """A source spec that can never work; the message names the spec."""


@dataclass(frozen=True)
class SourceRef:
    key: str  # http(s) URL verbatim, or absolute local path as a posix string
    is_url: bool
    stem: str
    fingerprint: str  # the sha256 of a local file's content once planning has read it (source_identity), else ""
    caption: str | None
    stat: str = ""  # f"{size}-{mtime_ns}" of an existing local file: the cheap check that its content is unchanged
    caption_problem: str = ""  # why its caption file gives no caption (captions.py); "" where there is none
    # a folder or glob naming a job's folder that held no results when listed: it stands for the results that job
    # will make (planning: a job of the run, whose readers wait; else refused); not part of any id
    job_folder: bool = False
    # a folder or glob that matched no image when listed: why it is refused, unless the job's records show images
    # it gave before, gone since, whose finished items it stands for then (source_identity); not part of any id.
    # A mask paired by a glob that matched nothing: the glob read as a file name (masks.recorded_literal)
    unmatched: str = ""
    # a file a folder or glob of the job gave before and no longer finds (gone_sources), not one listed by name:
    # `prune` may retire its results where the file was renamed (source_identity.renamed_away); not in any id
    listed_gone: bool = field(default=False, compare=False)
    # an http(s) URL's credentials ("user:password" before its host's '@'): kept out of `key`, so out of every id,
    # record, result and message, and given back only to fetch it
    userinfo: str = field(default="", compare=False, repr=False)


# ---------------------------------------------------------------- specs -> refs


def expand_source(
    spec: str,
    base_dir: Path,
    recursive: bool = False,
    exclude: Path | None = None,
    job_folder: Path | None = None,
    skip: Exclusions | None = None,
    unlisted: list | None = None,
) -> list[SourceRef]:
    """A URL, a folder, a glob or one file, as refs sorted by path string.

    A folder or glob never walks into `exclude` (the run's output root) unless it starts there (edit earlier
    results), nor into `job_folder` (the job's own results); one that starts inside `job_folder` is refused.
    Another job's folder gives its results only (source_folders). The images a folder or glob finds that the
    job's `exclude` patterns (`skip`) name are left out (and noted there); a file named as such is never left
    out. Names a folder or glob finds with an image's name that are no regular file (a link to nothing, a FIFO)
    and that `skip` does not leave out are appended to `unlisted` (a list) as (path, what it is)."""
    if _SCHEME.match(spec):
        return [source_ref(spec, base_dir)]
    path = _local_path(spec, base_dir)
    refuse_impossible_path(spec, path, literal=not GLOB_CHARS & set(spec))
    try:
        if _is_dir(path):
            images = folder_images(path, recursive, exclude, job_folder, odd := [])
            odd = _unlisted(unlisted, odd, path, skip)
            images = skip.kept(spec, images, path) if skip else images
            if not images and is_job_folder(path):  # its job may make results in this very run (planning judges)
                return [_job_folder_ref(path)]
            return _refs_or_unmatched(spec, path, images, job_folder, odd=odd)
        # A literal name like "shot [1].jpg" that exists wins over reading it as a glob.
        if GLOB_CHARS & set(spec) and not os.path.exists(path):
            root = glob_root(spec, base_dir)
            images = glob_images(spec, base_dir, recursive, exclude, job_folder, odd := [])
            odd = _unlisted(unlisted, odd, root, skip)
            images = skip.kept(spec, images, root) if skip else images
            if not images and _unfilled_job_folder(root, exclude, job_folder):
                return [_job_folder_ref(root)]  # as a folder above; a glob matching none of its results is refused
            return _refs_or_unmatched(spec, path, images, job_folder, base_dir, odd)
    except OwnResults as exc:
        raise SourceSpecError(f"source {spec!r} {exc}") from None
    except ExcludesAll as exc:
        raise SourceSpecError(str(exc)) from None
    # A missing file is kept: loading it later records "file not found" against that one item.
    return [source_ref(spec, base_dir)]


def _unlisted(unlisted: list | None, odd: list, root: Path, skip: Exclusions | None) -> list:
    """The entries no regular file that `skip` does not leave out, also added to `unlisted` where it is a list."""
    odd = [entry for entry in odd if not (skip and skip.leaves_out(entry[0], root))]
    if unlisted is not None:
        unlisted.extend(odd)
    return odd


def source_ref(path_or_url: str, base_dir: Path) -> SourceRef:
    """One file or URL, no expansion (CSV rows name exactly one source)."""
    match = _SCHEME.match(path_or_url)
    if match:
        return _url_ref(path_or_url, match.group(1))
    path = _local_path(path_or_url, base_dir)
    refuse_impossible_path(path_or_url, path)
    if _is_dir(path):
        raise SourceSpecError(f"source {path_or_url!r} is a folder; a single image file or URL is expected here")
    return _file_ref(path)


def refuse_impossible_path(spec: str, path: Path, literal: bool = True) -> None:
    """SourceSpecError for a path no file system takes: a NUL byte in it, or (`literal`: not a glob, whose pattern
    may be longer than the names it matches) a name longer than the file system's limit."""
    if "\0" in spec:
        raise SourceSpecError(f"source {spec!r} holds a NUL byte (\\0), which no file name can")
    try:
        os.lstat(path)
    except OSError as exc:
        if literal and exc.errno == errno.ENAMETOOLONG:
            raise SourceSpecError(
                f"source {spec!r}: file name too long for the file system (most take 255 bytes a name)"
            ) from None


def _is_dir(path: Path) -> bool:
    """A folder there; False for anything the file system will not say (a folder without permission: the file
    fails as its item's load, saying why)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def row_source_ref(path_or_url: str, base_dir: Path) -> SourceRef:
    """A CSV cell's source: one file or URL. A folder, or a glob that no file is literally named, is refused
    here rather than becoming one item whose file is never found. Spaces around the cell are dropped
    (spreadsheets keep them after a delimiter), unless a file is named with them."""
    path_or_url = _trimmed_cell(path_or_url, base_dir)
    path = None if _SCHEME.match(path_or_url) else _local_path(path_or_url, base_dir)
    if path is not None:
        refuse_impossible_path(path_or_url, path)
    if path is not None and (_is_dir(path) or _matching_glob(path_or_url, path, base_dir)):
        raise SourceSpecError(
            f"source {path_or_url!r} is {'a folder' if _is_dir(path) else 'a glob'}; a CSV row names one image "
            "file or URL (folders and globs go in a YAML manifest's 'sources:')"
        )
    return source_ref(path_or_url, base_dir)


def _matching_glob(cell: str, path: Path, base_dir: Path) -> bool:
    """A cell that reads as a glob matching files (none literally of its name): a folder's worth, refused. One
    matching nothing is a file name (`pic [2].png`, deleted: its item is archived or fails as not found)."""
    if not GLOB_CHARS & set(cell) or os.path.lexists(path):
        return False
    try:
        return bool(glob_images(cell, base_dir, False, None, None))
    except (OSError, ValueError):
        return False


def _trimmed_cell(cell: str, base_dir: Path) -> str:
    trimmed = cell.strip()
    if trimmed == cell or not trimmed or os.path.lexists(_local_path(cell, base_dir)):
        return cell  # a cell without spaces around it keeps its key, and with it its items' ids
    return trimmed


def _url_ref(url: str, scheme: str) -> SourceRef:
    key, userinfo = without_userinfo(url)
    if scheme.lower() not in ("http", "https"):
        raise SourceSpecError(f"source {key!r}: scheme {scheme}:// is not supported (use http://, https:// or a path)")
    parts = urlsplit(key)
    if not parts.hostname:
        raise SourceSpecError(f"source {key!r}: URL has no host")
    stem = PurePosixPath(unquote(parts.path.rsplit("/", 1)[-1])).stem
    return SourceRef(key=key, is_url=True, stem=stem or "image", fingerprint="", caption=None, userinfo=userinfo)


def without_userinfo(url: str) -> tuple[str, str]:
    """(the URL without the credentials before its host's '@', the credentials): a URL without them comes back
    verbatim, so its items keep their ids."""
    head, sep, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    return (f"{head}{sep}{host}{rest[end:]}", userinfo) if at else (url, "")


def _with_userinfo(ref: SourceRef) -> str:
    """The URL to fetch: its key with its credentials put back."""
    if not ref.userinfo:
        return ref.key
    head, sep, rest = ref.key.partition("://")
    return f"{head}{sep}{ref.userinfo}@{rest}"


def _local_path(spec: str, base_dir: Path) -> Path:
    # abspath, not resolve(): symlinks keep the name the user gave them (a folder of links into a hash-named
    # store must not turn every stem into a hash), and a missing file still gets a stable absolute key.
    return Path(os.path.abspath(Path(base_dir).expanduser() / Path(spec).expanduser()))


def _file_ref(path: Path) -> SourceRef:
    try:
        st = path.stat()
        file_stat = f"{st.st_size}-{st.st_mtime_ns}" if path.is_file() else ""
    except (OSError, ValueError):
        file_stat = ""
    try:
        caption = read_caption(path)
    except CaptionFileRefused as exc:
        raise SourceSpecError(str(exc)) from None
    return SourceRef(
        key=path.as_posix(), is_url=False, stem=path.stem, fingerprint="", caption=caption.text, stat=file_stat,
        caption_problem=caption.problem,
    )  # fmt: skip


def _unfilled_job_folder(folder: Path, output_root: Path | None, job_folder: Path | None) -> bool:
    """A job's folder (one under the output root, both where they really are: either may be named through a link)
    not made yet, or holding no results."""
    if output_root is None or os.path.realpath(folder.parent) != os.path.realpath(output_root):
        return False
    return not folder.exists() or (is_job_folder(folder) and not folder_images(folder, False, output_root, job_folder))


def _job_folder_ref(folder: Path) -> SourceRef:
    return replace(_file_ref(folder), job_folder=True)


def _refs_or_unmatched(
    spec: str,
    path: Path,
    paths: list[Path],
    job_folder: Path | None,
    glob_base: Path | None = None,
    odd: list[tuple[Path, str]] | None = None,
) -> list[SourceRef]:
    """The images found, sorted by path. None found: SourceSpecError, but for a job with records (`job_folder`
    holds them), one `unmatched` ref saying why, which planning refuses unless the records show images this
    folder or glob gave before, gone since (gone_sources). The why names the entries `odd` with an image's name
    that are no regular file (links to deleted photos)."""
    if paths:
        return [_file_ref(p) for p in sorted(paths, key=lambda p: p.as_posix())]
    looked_for = ", ".join(sorted(IMAGE_SUFFIXES))
    problem = f"source {spec!r} matches no image (looked for {looked_for})"
    if odd:
        problem += f"; with an image's name it finds only what is not a regular file: {shown_entries(odd)}"
    if glob_base is not None and (other_case := case_insensitive_matches(spec, glob_base)):
        shown = ", ".join(p.name for p in other_case[:3]) + (
            f" and {len(other_case) - 3} more" if len(other_case) > 3 else ""
        )
        problem += (
            f"; globs are case-sensitive, and it would match {shown} ignoring case: write the glob as the files are "
            "named (or a character class such as [jJ][pP][gG]), or name their folder"
        )
    if job_folder is None or not os.path.isfile(job_folder / JOB_STATE_DIR / RECORDS_FILE):
        raise SourceSpecError(problem)
    return [
        SourceRef(key=path.as_posix(), is_url=False, stem=path.stem, fingerprint="", caption=None, unmatched=problem)
    ]


# ---------------------------------------------------------------- loading


def load_image(ref: SourceRef, fetch: FetchOptions = FetchOptions(), convert=None) -> Image.Image:
    """A fully loaded RGB image (or what `convert` makes of the decoded one), or SourceError with a reason."""
    return decode_image(source_bytes(ref, fetch), convert or to_rgb)


def source_bytes(ref: SourceRef, fetch: FetchOptions = FetchOptions()) -> bytes:
    """A source's bytes, read or downloaded (a URL's content is hashed from these), or SourceError."""
    data = _download(_with_userinfo(ref), fetch) if ref.is_url else _read_file(Path(ref.key), fetch.max_bytes)
    _check_content(ref, data)
    return data


def _check_content(ref: SourceRef, data: bytes) -> None:
    """The bytes decoded must be those the item's id was planned from: a file replaced since is not recorded
    under the old content's id."""
    if len(ref.fingerprint) == 64 and hashlib.sha256(data).hexdigest() != ref.fingerprint:
        raise SourceError(
            f"{SOURCE_CHANGED}: the next plan reads it again, so a re-run makes its items from the new content",
            SOURCE_CHANGED,
        )


def _read_file(path: Path, max_bytes: int) -> bytes:
    """A local source's bytes under the same cap as a download (--max-download-mb), counted while reading."""
    try:
        data = read_capped(path, max_bytes)
    except FileNotFoundError:
        raise SourceError(f"{FILE_NOT_FOUND}: {path.as_posix()}", FILE_NOT_FOUND) from None
    except NotRegularFile as exc:
        raise SourceError("is a folder" if exc.kind == "folder" else str(exc)) from None
    except TooLarge:
        raise SourceError(f"larger than {human_bytes(max_bytes)}") from None
    except OSError as exc:
        raise SourceError(f"could not read file: {exc.strerror or exc}") from exc
    if not data:
        raise SourceError("empty file")
    return data


def _download(url: str, fetch: FetchOptions) -> bytes:
    # fetch.py owns the network hazards (deadline, size cap, redirects, retries, private addresses).
    from .fetch import fetch_url  # here: requests and urllib3 are imported for a URL only (plan reads none)

    try:
        return fetch_url(url, fetch)
    except FetchError as exc:
        raise SourceError(str(exc), exc.reason) from exc


# ---------------------------------------------------------------- sizing


def fit_size(src_w: int, src_h: int, width: int, height: int, mode: str) -> tuple[int, int]:
    """Output size: (width, height), except "fit": the source aspect ratio at about width*height pixels."""
    _check_mode(mode)
    if mode != "fit":
        return width, height
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source size must be positive, got {src_w}x{src_h}")
    area, aspect = width * height, src_w / src_h
    return _snap(math.sqrt(area * aspect)), _snap(math.sqrt(area / aspect))


def _snap(side: float) -> int:
    # Nearest multiple of 16 (halves round up), kept inside what the pipeline accepts.
    return min(MAX_SIDE, max(MIN_SIDE, int(side / SIDE_STEP + 0.5) * SIDE_STEP))


def center_crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    """The largest centered (left, top, right, bottom) box of dst's aspect ratio; floats, for resize(box=)."""
    if src_w * dst_h > dst_w * src_h:  # source is wider: trim the sides
        crop_w = src_h * dst_w / dst_h
        left = (src_w - crop_w) / 2
        return left, 0.0, left + crop_w, float(src_h)
    crop_h = src_w * dst_h / dst_w  # taller (or equal): trim top and bottom
    top = (src_h - crop_h) / 2
    return 0.0, top, float(src_w), top + crop_h


def pad_layout(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """(scaled_w, scaled_h, x, y): the source scaled to fit inside dst, and where it sits, centered."""
    scale = min(dst_w / src_w, dst_h / src_h)
    new_w = min(dst_w, max(1, round(src_w * scale)))
    new_h = min(dst_h, max(1, round(src_h * scale)))
    return new_w, new_h, (dst_w - new_w) // 2, (dst_h - new_h) // 2


def fit_image(img: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """An RGB image of exactly fit_size(img.width, img.height, width, height, mode)."""
    return fit_geometry(to_rgb(img), width, height, mode, Image.Resampling.LANCZOS)


def fit_geometry(img: Image.Image, width: int, height: int, mode: str, resample: Image.Resampling) -> Image.Image:
    """`img` (any mode) resized, cropped or padded (with black) as `mode` does it: the one geometry that both
    a source and its mask (NEAREST, so it stays sharp) go through."""
    out_w, out_h = fit_size(img.width, img.height, width, height, mode)
    if mode == "stretch":
        return img.resize((out_w, out_h), resample)
    if mode == "pad":
        new_w, new_h, x, y = pad_layout(img.width, img.height, out_w, out_h)
        canvas = Image.new(img.mode, (out_w, out_h), 0)
        canvas.paste(img.resize((new_w, new_h), resample), (x, y))
        return canvas
    # center-crop, and fit (whose size already has the source's aspect: the crop only absorbs the rounding)
    box = center_crop_box(img.width, img.height, out_w, out_h)
    return img.resize((out_w, out_h), resample, box=box)


def _check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}: expected one of {', '.join(RESIZE_MODES)}")
