"""Local files read safely, and folders walked without loops.

Every local read (sources, captions, manifests, pipeline configs) goes through `read_capped`: only regular
files are read (a FIFO, a device or a socket would block or never end), and the cap is enforced while
reading, since `stat` says nothing true about /proc files or a file that grows. Folder sources and `**`
globs share `walk_files`, which never enters the same directory twice, so symlink loops end.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

_READ_CHUNK = 1024 * 1024
_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


class NotRegularFile(OSError):
    """The path (after symlinks) is a FIFO, a device, a socket or a folder; str() says which."""

    def __init__(self, kind: str):
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


class TooLarge(OSError):
    """More bytes than the cap allowed were read."""


def file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "regular file")


def entry_kind(path: Path) -> str | None:
    """What `path` is, symlinks followed: "regular file", "folder", "fifo", "socket", ..., "a link to nothing",
    "a link loop", "unreadable: why" (it cannot be looked at); None for a name gone meanwhile."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a link to nothing" if os.path.islink(path) else None
    except OSError as exc:
        return "a link loop" if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror or exc}"
    return file_kind(mode)


def missing_reason(path: str) -> str | None:
    """Why a local file cannot even be looked at: "not found" (nothing there, a link to nothing, a file where a
    folder should be), "a link loop", or what stops the lookup ("Permission denied" on a folder above it). None
    where it is there (reading it may still fail, as its item's failure)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name, never a file
        return "not found"
    except OSError as exc:
        return "a link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
    return None


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file (symlinks followed), at most max_bytes of them.

    Raises FileNotFoundError/PermissionError/... as open() does, NotRegularFile, or TooLarge."""
    fd = open_regular(path)
    try:
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"more than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)


def open_regular(path: Path) -> int:
    """A descriptor for reading a regular file (symlinks followed); NotRegularFile for anything else."""
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one; O_NOCTTY: a
    # terminal device never becomes our controlling terminal. Neither changes anything for a regular file.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        _raise_if_not_regular(path)  # a socket fails to open (ENXIO): name it for what it is
        raise exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(file_kind(mode))
    return fd


def _raise_if_not_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFile(file_kind(mode))


# ---------------------------------------------------------------- walking


def walk_files(
    top: Path, recursive: bool, hidden: bool = False, skip: Callable[[Path], bool] = lambda path: False
) -> Iterator[Path]:
    """Non-folder entries below `top` in sorted depth-first order, named through `top`.

    Folder symlinks are followed, but each folder is entered once, by (device, inode): a link loop ends and a
    folder linked twice adds its files once. Dot-names are skipped unless `hidden`; `skip(folder)` prunes."""
    entered: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in entered:
                continue
            entered.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:  # unreadable or vanished: nothing to list, as glob and rglob do
            continue
        folders = []
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            path = folder / entry.name
            if _is_dir(entry):
                if recursive and not skip(path):
                    folders.append(path)
            else:
                yield path
        stack.extend(reversed(folders))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def recursive_glob(pattern: str, root: Path, skip: Callable[[Path], bool] = lambda path: False) -> list[Path]:
    """glob.glob(pattern, root_dir=root, recursive=True) for files, walked by `walk_files` (no loops).

    Same rules as glob: `**` matches any number of folders, other parts one name each; a name starting with
    a dot matches only a part that spells the dot out, and never `**`."""
    parts = list(Path(pattern).parts)
    start = Path(root)
    while parts and not _has_magic(parts[0]) and len(parts) > 1:
        start = start / parts.pop(0)  # literal leading folders (or an absolute anchor) need no matching
    hidden = any(part.startswith(".") for part in parts)
    found = []
    for path in walk_files(start, recursive=True, hidden=hidden, skip=skip):
        if _matches(path.relative_to(start).parts, tuple(parts)):
            found.append(path)
    return found


def _has_magic(part: str) -> bool:
    return any(char in part for char in "*?[")


@functools.lru_cache(maxsize=65536)  # several `**` would otherwise retry the same suffixes exponentially
def _matches(names: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not parts:
        return not names
    head, rest = parts[0], parts[1:]
    if head == "**":
        # zero folders, or one non-hidden name more and still inside the `**`
        if _matches(names, rest):
            return True
        return bool(names) and not names[0].startswith(".") and _matches(names[1:], parts)
    if not names or (names[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _matches(names[1:], rest)
