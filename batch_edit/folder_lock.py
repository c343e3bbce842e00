"""A job folder's lock (`flock` on `.batch-edit/lock`) and the removal of folders a run made but never used.

A run removes a folder it created and wrote no item to (it was refused, its model did not load) only while it
holds that folder's lock, and unlinks the lock file last: a folder another run holds is never removed. A run
trying the lock meanwhile may open the lock file just before it goes and lock it just after, so a lock counts
only while its file is still the one at its path (same device and inode); the caller then makes the folder
again and tries once more.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import suppress
from pathlib import Path

from . import job_files
from .errors import OutputBusyError, OutputError

LOCK_NAME = "lock"
OWNER_NAME = "owner"  # the pid of the run holding the lock, for what a refusal says
_HELD_ELSEWHERE = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}
_TRIES = 10  # take(): the folders made again this often, each time another run removed them first


class FolderLock:
    """The lock of one job folder (`folder`, its state folder `state`), and the folders taking it made."""

    def __init__(self, folder: Path, state: Path):
        self.folder, self.state = folder, state
        self._descriptor: int | None = None  # the lock file's, while this run holds the folder
        self._created: list[Path] = []

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def take(self, by: str = "run") -> None:
        """Make the folders where absent and lock; OutputBusyError while another run holds the folder. `by`:
        the command taking it, for what a refusal advises."""
        for _ in range(_TRIES):  # a run removing a folder it made may take it from under this one
            self._make_folders()
            if self.try_take(by):
                return
        raise OutputError(f"cannot lock {self.folder}: other runs keep removing it; run again")

    def _make_folders(self) -> None:
        """The output root, the job folder and its state folder; each noted (for discard_unused) only where
        this call made it: one that appears meanwhile is another run's."""
        for folder in (self.folder.parent, self.folder, self.state):
            try:
                folder.mkdir(parents=folder == self.folder.parent)
            except FileExistsError:
                continue
            if folder not in self._created:
                self._created.append(folder)
        job_files.refuse_unsafe(self.state, folder=True)  # checked again: it may have appeared meanwhile

    def try_take(self, by: str = "run", write_owner: bool = True) -> bool:
        """True once this run holds the lock; False where the lock file went with its folder. OutputBusyError
        while another run holds it."""
        try:
            self._descriptor = try_lock(self.state / LOCK_NAME)
        except LockFileGone:
            return False
        if self._descriptor is None:
            try:
                owner = job_files.read_bytes(self.state / OWNER_NAME).decode("utf-8", "replace").strip()[:20]
            except OSError:
                owner = "?"
            raise OutputBusyError(
                f"another batch-edit run (pid {owner}) is writing to {self.folder}; wait for it to finish"
                + (", or give this run another --output-root" if by == "run" else f", then {by} again")
            )
        if write_owner:
            job_files.write_whole(self.state / OWNER_NAME, str(os.getpid()).encode())
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            unlock(descriptor)

    def discard_unused(self, records: Path) -> None:
        """Remove the folders taking the lock made, where `records` is still empty or absent (no item written),
        then release the lock. Only under the lock (taken again where it was released; a folder another run
        holds stays), so a folder is never removed from under a run that locked it. Folders it could not
        remove (out of descriptors) are tried again at the next call."""
        try:
            if not self._created:
                return
            if not (self.held or self.try_take(write_owner=False)):
                self._created = []  # the lock file went: what this run made is gone already, or another run's
                return
            found = job_files.lstat(records)
            if found is None or not found.st_size:
                self._created = remove_made(self._created, self.folder, self.state)
            else:  # another run wrote items here meanwhile: its folder now
                self._created = []
        except (OutputBusyError, OutputError, OSError):  # another run holds it, or no descriptor is left
            pass
        finally:
            self.release()


class LockFileGone(Exception):
    """The lock file (or its folder) went before it could be locked: a run removed the folder it had made."""


def try_lock(path: Path) -> int | None:
    """A descriptor holding the lock at `path` (the file created if absent), None while another holds it.
    Raises LockFileGone where the file was removed (or replaced) before the lock was taken."""
    try:
        descriptor = job_files.open_file(path, os.O_RDWR | os.O_CREAT)
    except FileNotFoundError:
        raise LockFileGone(path) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = job_files.lstat(path)
        if current is None or not os.path.samestat(current, os.fstat(descriptor)):
            raise LockFileGone(path)  # unlinked between the open and the lock: it locks nothing any more
    except BaseException as exc:
        os.close(descriptor)
        if isinstance(exc, OSError) and exc.errno in _HELD_ELSEWHERE:
            return None
        raise
    return descriptor


def unlock(descriptor: int) -> None:
    """Release the lock (for every copy of the descriptor: a forked child's too), then close it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def remove_made(created: list[Path], folder: Path, state: Path) -> list[Path]:
    """Remove the folders of `created` (the output root, the job folder, its `.batch-edit/`: those a run made),
    with what is in them, the lock file last; the caller holds the lock. A folder something appears in
    meanwhile (another run's new lock file) stays, with the folders above it. Returns those still there."""
    emptied = _empty(folder, keep=state.name) if folder in created else True
    if emptied and (folder in created or state in created) and _empty(state, keep=LOCK_NAME):
        job_files.remove_file(state / LOCK_NAME)
    for made in sorted(created, key=lambda path: len(path.parts), reverse=True):  # the deepest first
        try:
            made.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break
    return [made for made in created if job_files.lstat(made) is not None]


def _empty(folder: Path, keep: str) -> bool:
    """Remove what `folder` holds but `keep` (a link is removed, never followed); False where it could not be
    listed (out of descriptors, say)."""
    try:
        with os.scandir(folder) as entries:  # listed first: a removal may need descriptors of its own
            found = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries if entry.name != keep]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for path, is_folder in found:
        if is_folder:
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(OSError):
                os.unlink(path)
    return True
