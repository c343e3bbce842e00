"""Folder and glob sources -> the image files they name.

A walk never enters the run's output root, nor the job's own folder (a run would feed on its own results), and a
folder or glob that starts inside the job's own folder is refused. Another job's folder (one with `.batch-edit/`)
may be named on purpose, to edit its earlier results: it gives those results only, never its contact sheets,
its kept `sources/` or anything under `.batch-edit/` (records, pruned results).
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from .local_files import entry_kind, recursive_glob, walk_files

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
GLOB_CHARS = frozenset("*?[")
# A job folder's own files: the contact sheets' prefix (sheets.py names them with it) and records.py's folders
# (records imports this package's parameters, which import sources: those two are spelled here, not imported).
JOB_STATE_DIR, JOB_SOURCES_DIR, SHEET_PREFIX = ".batch-edit", "sources", "contact-sheet-"
RECORDS_FILE = "records.jsonl"  # in JOB_STATE_DIR: a job that has made or tried items


class OwnResults(ValueError):
    """A folder or glob that starts inside the job's own output folder; str() says why that cannot work."""


def folder_images(
    folder: Path, recursive: bool, output_root: Path | None, job_folder: Path | None, unlisted: list | None = None
) -> list[Path]:
    """The image files below `folder`; `unlisted` (a list) gets (path, what it is) for each entry with an image's
    name that is no regular file (a link to nothing, a FIFO, a device): never an item, but worth a word."""
    walk = _Walk(folder, output_root, job_folder)
    # Hidden files and folders are skipped; linked folders are followed, each folder entered once.
    return walk.images(walk_files(folder, recursive, skip=walk.is_excluded), unlisted)


def glob_images(
    spec: str,
    base_dir: Path,
    recursive: bool,
    output_root: Path | None,
    job_folder: Path | None,
    unlisted: list | None = None,
) -> list[Path]:
    # root_dir, not base_dir/spec: brackets or stars in the manifest's own folder name must stay literal.
    # glob itself skips dot-names unless the pattern spells the dot out (then the user asked for them).
    walk = _Walk(glob_root(spec, base_dir), output_root, job_folder)
    root = Path(os.path.abspath(Path(base_dir).expanduser()))
    pattern = os.path.expanduser(spec)
    if recursive and "**" in pattern:  # glob.glob would follow folder links round a loop, and never end
        matches = recursive_glob(pattern, root, skip=walk.is_excluded)
    else:  # one folder level per pattern part: a link loop cannot make this unbounded
        matches = glob.glob(pattern, root_dir=root)
    paths = [Path(os.path.abspath(root / m)) for m in matches]  # an absolute m replaces root in the join
    return walk.images(paths, unlisted)


def case_insensitive_matches(spec: str, base_dir: Path, most: int = 4) -> list[Path]:
    """Up to `most` image files a glob that matched none would match ignoring case (`*.jpg` and IMG_0001.JPG):
    for the message only; a glob matches as written."""
    root = Path(os.path.abspath(Path(base_dir).expanduser()))
    try:
        matches = glob.iglob(_either_case(os.path.expanduser(spec)), root_dir=root)
        found = (Path(os.path.abspath(root / m)) for m in matches)
        return sorted(itertools.islice((p for p in found if is_image_name(p) and p.is_file()), most))
    except (OSError, ValueError):
        return []


def _either_case(pattern: str) -> str:
    """A glob pattern whose letters outside brackets match either case."""
    out, in_class = [], False
    for char in pattern:
        if in_class:
            in_class = char != "]" or out[-1] == "["
        elif char == "[":
            in_class = True
        elif char.lower() != char.upper():
            char = f"[{char.lower()}{char.upper()}]"
        out.append(char)
    return "".join(out)


def is_job_folder(folder: Path) -> bool:
    """A batch-edit job's output folder: it holds `.batch-edit/`."""
    return os.path.isdir(folder / JOB_STATE_DIR)


def shown_entries(entries: list[tuple[Path | str, str]], most: int = 5) -> str:
    """(path, what it is) entries as `path (kind), ...`, the first `most` of them and how many more."""
    more = f" and {len(entries) - most} more" if len(entries) > most else ""
    return ", ".join(f"{path} ({kind})" for path, kind in entries[:most]) + more


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def glob_root(spec: str, base_dir: Path) -> Path:
    """The folder a glob starts from: its literal leading folders."""
    return glob_split(spec, base_dir)[0]


def glob_split(spec: str, base_dir: Path) -> tuple[Path, tuple[str, ...]]:
    """The folder a glob starts from (its literal leading folders) and the pattern's parts after it."""
    parts = Path(os.path.expanduser(spec)).parts
    literal = len(list(itertools.takewhile(lambda part: not GLOB_CHARS & set(part), parts[:-1])))
    return Path(os.path.abspath(Path(base_dir).expanduser().joinpath(*parts[:literal]))), parts[literal:]


def glob_parts_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """As `glob` matches path parts on Linux: `**` any number of folders (hidden ones not), a dot-name only by a
    pattern spelling the dot."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return glob_parts_match(parts, pattern[1:]) or (
            bool(parts) and not parts[0].startswith(".") and glob_parts_match(parts[1:], pattern)
        )
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatchcase(parts[0], pattern[0]) and glob_parts_match(parts[1:], pattern[1:])


def excluded_by(path: Path, root: Path, patterns: tuple[str, ...]) -> str | None:
    """The first of a job's `exclude` patterns that leaves out `path`, an image a folder or glob starting at
    `root` found; None if none does. A pattern without `/` names a file or folder at any depth (`*_thumb.jpg`,
    `rejects`); one with `/` a path from `root`, `**` any number of folders (`old/**/*.gif`), a folder matched
    leaving out everything below it (`2019/raw`)."""
    try:
        parts = PurePosixPath(path.relative_to(root).as_posix()).parts
    except ValueError:  # a walk's link out of its root: by its name only
        parts = (path.name,)
    for pattern in patterns:
        if "/" not in pattern:
            if any(fnmatchcase(part, pattern) for part in parts):
                return pattern
        elif any(glob_parts_match(parts[:end], PurePosixPath(pattern).parts) for end in range(1, len(parts) + 1)):
            return pattern
    return None


class ExcludesAll(ValueError):
    """A job's `exclude` leaves out every image a folder or glob finds; str() says which."""


@dataclass
class Exclusions:
    """A job's `exclude` patterns, and what they left out of its folders and globs."""

    patterns: tuple[str, ...]
    left_out: list[tuple[Path, str]] = field(default_factory=list)  # (image, the pattern leaving it out)
    listed: bool = False  # a folder or glob of the job was listed with them
    silencing: set[str] = field(default_factory=set)  # patterns leaving out entries that are no regular file

    def kept(self, spec: str, images: list[Path], root: Path) -> list[Path]:
        """The images a folder or glob starting at `root` found less those the patterns leave out; refused
        (ExcludesAll) where they leave out every one (a pattern wider than meant)."""
        self.listed = True
        kept = []
        for image in images:
            if (pattern := excluded_by(image, root, self.patterns)) is None:
                kept.append(image)
            else:
                self.left_out.append((image, pattern))
        if images and not kept:
            shown = ", ".join(repr(p) for p in self.patterns)
            raise ExcludesAll(f"source {spec!r}: exclude leaves out every image it finds ({len(images)}): {shown}")
        return kept

    def leaves_out(self, path: Path, root: Path) -> bool:
        """Whether the patterns leave out `path`, an entry with an image's name that is no regular file (a link
        to nothing) found by a folder or glob starting at `root`: not counted as an image left out, but such a
        pattern is in use."""
        if (pattern := excluded_by(path, root, self.patterns)) is None:
            return False
        self.silencing.add(pattern)
        return True

    def unused(self) -> tuple[str, ...]:
        """The patterns that left out nothing, where a folder or glob was listed."""
        used = {pattern for _, pattern in self.left_out} | self.silencing
        return tuple(p for p in self.patterns if p not in used) if self.listed else ()


def exclude_problem(pattern: str) -> str | None:
    """Why an `exclude` pattern cannot work, or None: patterns are relative to each folder or glob's start."""
    if not pattern.strip():
        return "is empty"
    if "\0" in pattern:
        return "holds a NUL byte"
    if pattern.startswith(("/", "~")) or "\\" in pattern:
        return "must be relative to the folder or glob it applies to, with / between folders"
    if ".." in PurePosixPath(pattern).parts:
        return "may not go up (..): it applies inside each folder or glob of the job's sources"
    return None


class _Walk:
    """One folder or glob walk from `top`: which folders it keeps out of (by resolved path), and which of the
    files it found are results rather than a job folder's own files.

    The output root is kept out unless the walk starts inside it (earlier results named on purpose); the job's
    own folder always, and a walk starting inside it is refused (OwnResults)."""

    def __init__(self, top: Path, output_root: Path | None, job_folder: Path | None):
        self.top, real_top = top, os.path.realpath(top)
        own = os.path.realpath(job_folder) if job_folder is not None else None
        if own is not None and _within(real_top, own):
            raise OwnResults(
                f"{'is' if real_top == own else 'lies inside'} this job's own output folder "
                f"({Path(job_folder).as_posix()}), so every run would take its own results as new sources: name "
                "another folder (another job's folder of earlier results is fine)"
            )
        root = os.path.realpath(output_root) if output_root is not None else None
        self.excluded = [folder for folder in (root, own) if folder is not None and not _within(real_top, folder)]
        self._excluded_parents: dict[Path, bool] = {}
        self._job_folders: dict[Path, bool] = {}

    def is_excluded(self, folder: Path) -> bool:
        real = os.path.realpath(folder)
        return any(_within(real, excluded) for excluded in self.excluded)

    def results(self, paths: list[Path]) -> list[Path]:
        return [path for path in paths if not self._in_excluded(path.parent) and not self._job_file(path)]

    def images(self, paths: Iterable[Path], unlisted: list | None) -> list[Path]:
        """`results` of the paths with an image's name that are regular files (or links to one); the others
        with such a name (no folder), where `unlisted` is a list, appended to it as (path, what it is)."""
        images, odd = [], []
        for path in filter(is_image_name, paths):
            kind = entry_kind(path)
            if kind == "regular file":
                images.append(path)
            elif kind not in (None, "folder"):
                odd.append((path, kind))
        if unlisted is not None:
            kept = set(self.results([path for path, _ in odd]))
            unlisted.extend(sorted((entry for entry in odd if entry[0] in kept), key=lambda e: e[0].as_posix()))
        return self.results(images)

    def _in_excluded(self, folder: Path) -> bool:
        if folder not in self._excluded_parents:
            self._excluded_parents[folder] = self.is_excluded(folder)
        return self._excluded_parents[folder]

    def _job_file(self, path: Path) -> bool:
        """A job folder's contact sheet, or a file in its `sources/` or `.batch-edit/`, reached from `top`."""
        try:
            parts = path.relative_to(self.top).parts
        except ValueError:  # not named through top (an absolute glob elsewhere): judge its own folder only
            top, parts = path.parent, (path.name,)
        else:
            top = self.top
        folder = top
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if self._is_job_folder(folder) and (
                (last and part.startswith(SHEET_PREFIX) and part.endswith(".png"))
                or (not last and part in (JOB_STATE_DIR, JOB_SOURCES_DIR))
            ):
                return True
            folder = folder / part
        return False

    def _is_job_folder(self, folder: Path) -> bool:
        if folder not in self._job_folders:
            self._job_folders[folder] = is_job_folder(folder)
        return self._job_folders[folder]


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
