"""Files inside a job folder, opened, replaced and deleted without ever following a link.

A job folder is the user's, and anything may have been planted in it: a symbolic link in place of the record,
the lock's `owner` file or the `sources/` folder would make a naive `open(path, "a")` write wherever the link
points. Every write under the output root goes through these few calls: the last path component is opened with
O_NOFOLLOW and checked to be a regular file, folders are checked with lstat before anything is written into
them, and the stale-temp sweep deletes only regular files directly inside the folder it is given.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UnsafeOutputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer; no effect on regular files


def refuse_unsafe(path: Path, folder: bool = False) -> None:
    """Raise UnsafeOutputError if `path` exists as a link, or as something other than a regular file (a folder
    where `folder` is true). Absent is fine: it will be created as what it should be."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return  # a parent is a file: the write itself reports it
    expected, wanted = (stat.S_ISDIR, "a folder") if folder else (stat.S_ISREG, "a regular file")
    if expected(mode):
        return
    if stat.S_ISLNK(mode):
        found = "a symbolic link"
    else:
        found = "a folder" if stat.S_ISDIR(mode) else "a file" if stat.S_ISREG(mode) else "a FIFO, socket or device"
    raise UnsafeOutputError(
        f"{path} is {found}, not {wanted}: batch-edit writes only regular files really inside the job folder; "
        "move it away and re-run"
    )


def make_folder(path: Path) -> bool:
    """Create `path` (its parents must exist) unless it is already a real folder; True if it was created."""
    refuse_unsafe(path, folder=True)
    try:
        path.mkdir()
    except FileExistsError:
        refuse_unsafe(path, folder=True)  # appeared meanwhile: check again what it is
        return False
    return True


def open_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that never follows a link at the last component and accepts only a regular file."""
    descriptor = os.open(path, flags | _NOFOLLOW | _CLOEXEC | _NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafeOutputError(f"{path} is not a regular file: batch-edit reads and writes only regular files here")
    return descriptor


def open_append(path: Path):
    """The record, opened for unbuffered appending (created if absent; readable, to check its last byte)."""
    return os.fdopen(open_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT), "ab", buffering=0)


def open_new(path: Path, text: bool = False):
    """A temporary file that must not exist yet (a planted link or file under its name is refused, not used)."""
    descriptor = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    if text:
        return os.fdopen(descriptor, "w", encoding="utf-8", newline="")
    return os.fdopen(descriptor, "wb")


def read_bytes(path: Path) -> bytes:
    with os.fdopen(open_file(path, os.O_RDONLY), "rb") as handle:
        return handle.read()


def write_new(path: Path, data: bytes, sync: bool = False) -> None:
    """Write `data` as the new file `path` (one already there, or a link, is refused). `sync`: on disk before
    this returns, so what follows (a rename, a record) never reaches the disk first."""
    with open_new(path) as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def write_whole(path: Path, data: bytes, sync: bool = False) -> None:
    """Replace `path` with `data` atomically: a temporary beside it, then a rename (which replaces a link at
    `path` itself, never its target). `sync`: on disk before the rename, so a power cut leaves one or the other."""
    temporary = temporary_name(path)
    try:
        write_new(temporary, data, sync)
        os.replace(temporary, path)
    except BaseException:
        remove_file(temporary)
        raise


def lstat(path: Path) -> os.stat_result | None:
    """What is at `path` itself (a link is not followed), None where nothing can be found."""
    try:
        return os.lstat(path)
    except OSError:
        return None


def holds(path: Path, data: bytes) -> bool:
    """A regular file at `path` holding `data` (its size compared first: nothing is read where that differs)."""
    found = lstat(path)
    if found is None or not stat.S_ISREG(found.st_mode) or found.st_size != len(data):
        return False
    try:
        return read_bytes(path) == data
    except OSError:  # unreadable: not what it should hold
        return False


def temporary_name(path: Path) -> Path:
    """`.NAME.PID.tmp` beside `path`: hidden, and swept by `sweep_temporaries` after a crash."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def check_writable(folder: Path) -> None:
    """A file made and removed in `folder`: a folder that cannot take new files (read-only, another user's) is
    found now, not at the first result. OSError where it cannot (a crash between leaves a swept temporary)."""
    probe = temporary_name(folder / "write-check")
    write_new(probe, b"")
    remove_file(probe)


def remove_file(path: Path) -> None:
    """Delete `path` if it is a regular file or a link (unlink never touches a link's target); leave a folder."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def sweep_temporaries(folder: Path) -> None:
    """Delete the `.*.tmp` regular files a crash left directly in `folder` (a real folder, never a link)."""
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)


def ends_with_newline(descriptor: int) -> bool:
    return os.pread(descriptor, 1, os.fstat(descriptor).st_size - 1) == b"\n"


def fsync_folder(folder: Path) -> None:
    """Make the rename itself durable, so a power cut can't lose an image whose record is on disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
