"""A job folder's lock (`flock` on `.batch-edit/lock`) and the removal of folders a run made but never used.

A run removes a folder it created and wrote no item to (it was refused, its model did not load) only while it
holds that folder's lock, and unlinks the lock file last: a folder another run holds is never removed. A run
trying the lock meanwhile may open the lock file just before it goes and lock it just after, so a lock counts
only while its file is still the one at its path (same device and inode); the caller then makes the folder
again and tries once more. What is removed is opened without following a link and only while it is still the
folder the run made (same device and inode): a folder swapped for a link, or for another folder, meanwhile is
left as it is, and so is what the link points to. On a file system without locks no run can lock (nor write
to) a folder, so a run refused there removes what it made without one: only an empty lock file, alone in a
`.batch-edit/` it made, and the folders it made that are empty then. `prune` locks only a folder that is there (`take_existing`):
it makes nothing, so it never brings back the folders such a run removes.

A holder that writes (a run, a prune, a run finishing an idle job) names itself in `owner` (pid and command)
while it holds the lock, and removes it before releasing: a refusal names only a holder whose process runs. A run
checks before it locks any folder that its locks leave OPEN_FILES_RESERVE open files free (a prune PRUNE_RESERVE).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from contextlib import suppress
from pathlib import Path

from . import job_files
from .errors import OutputBusyError, OutputError

LOCK_NAME = "lock"
OWNER_NAME = "owner"  # "PID COMMAND" of the run or prune holding the lock, for what a refusal says
_HELD_ELSEWHERE = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}
# flock refused by the file system itself: no lock service (ENOLCK: an NFS mount without its lock daemon, say), or
# no locks at all (EOPNOTSUPP / ENOTSUP / ENOSYS: some network and FUSE file systems)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_TRIES = 10  # take(): the folders made again this often, each time another run removed them first
# Open files a run keeps free beside its locks (one per job folder, held from start to end), checked before it locks
# any: loading the model (the libraries' imports, weight files, a GPU's device files, a compile's worker pipes),
# reading sources and writing results, Ray's connections. Loading the tiny model and running on a CPU in this process
# needs about 5 beyond those open when the run checks (10 in all with two jobs; a few short of that, quanto's
# extension check fails with a traceback): CPU_RESERVE leaves room for a download (the hub's connections and lock
# files) and URL sources besides. A GPU, a compile or Ray need more (not measured): OPEN_FILES_RESERVE leaves room
# for them while a default soft limit of 256 (macOS) still allows 100 jobs.
OPEN_FILES_RESERVE = 128
CPU_RESERVE = 32
PRUNE_RESERVE = 32  # a prune loads no model: reading records and writing CSVs and contact sheets needs a few
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

Made = dict[Path, tuple[int, int]]  # the folders a run made, each with its device and inode when made


class FolderLock:
    """The lock of one job folder (`folder`, its state folder `state`), and the folders taking it made."""

    def __init__(self, folder: Path, state: Path):
        self.folder, self.state = folder, state
        self._descriptor: int | None = None  # the lock file's, while this run holds the folder
        self._owner_written = False  # the owner file names this process: removed again as the lock is released
        self._created: Made = {}

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def take(self, by: str = "run") -> None:
        """Make the folders where absent and lock; OutputBusyError while another run holds the folder. `by`:
        the command taking it, for what a refusal advises."""
        for _ in range(_TRIES):  # a run removing a folder it made may take it from under this one
            if self._make_folders() and self.try_take(by):
                return
        raise OutputError(f"cannot lock {self.folder}: other runs keep removing it; run again")

    def _make_folders(self) -> bool:
        """The folders above the job folder that are absent (the output root, its parents), the job folder and
        its state folder; each noted (for discard_unused) only where this call made it: one that appears
        meanwhile is another run's. False where one went meanwhile (the run that made it removed it)."""
        for folder in (*_absent_above(self.folder), self.folder, self.state):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except FileNotFoundError:
                if job_files.lstat(folder.parent) is not None:
                    raise  # a link to nowhere, say: not a folder that went
                return False
            found = job_files.lstat(folder)
            if found is not None and stat.S_ISDIR(found.st_mode):
                self._created[folder] = (found.st_dev, found.st_ino)
        job_files.refuse_unsafe(self.state, folder=True)  # checked again: it may have appeared meanwhile
        return True

    def take_existing(self, by: str = "prune", write_owner: bool = True) -> bool:
        """Lock the folder where it is there, making nothing: no folder, and no lock file in a state folder a run
        is removing. False where the folder is not there, or went meanwhile (the run that made it removed it,
        refused): it holds nothing. OutputBusyError and OutputError as try_take."""
        if self.try_take(by, write_owner, create=False):
            return True
        # No lock file: a run removing the folders it made empties the state folder first and unlinks the lock
        # file last, so a state folder holding anything lost its lock file otherwise (by hand), and gets one.
        return _holds_anything(self.state) and self.try_take(by, write_owner)

    def try_take(self, by: str = "run", write_owner: bool = True, create: bool = True) -> bool:
        """True once this run holds the lock; False where the lock file went with its folder (or, without
        `create`, is not there). OutputBusyError while another run holds it; OutputError where it cannot be
        locked (a read-only folder, no descriptor left, a file system without locks)."""
        try:
            self._descriptor = try_lock(self.state / LOCK_NAME, create)
        except LockFileGone:
            return False
        except OSError as exc:
            raise cannot_lock(self.folder, exc, by) from exc
        if self._descriptor is None:
            raise OutputBusyError(
                f"{holder(self.state)} is writing to {self.folder}; wait for it to finish"
                + (", or give this run another --output-root" if by == "run" else f", then {by} again")
            )
        if write_owner:
            try:
                write_owner_file(self.state, by)
            except OSError as exc:  # a read-only `.batch-edit/`, no descriptor left: not held after all
                self.release()
                raise cannot_lock(self.folder, exc, by, verb="write to") from exc
            self._owner_written = True
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            written, self._owner_written = self._owner_written, False
            unlock(descriptor, self.state if written else None)

    def discard_unused(self, records: Path) -> None:
        """Remove the folders taking the lock made, where `records` is still empty or absent (no item written),
        then release the lock. Only under the lock (taken again where it was released; a folder another run
        holds stays), so a folder is never removed from under a run that locked it; on a file system without
        locks, only what no run there can have written (`remove_made_unlocked`). Folders it could not remove (out
        of descriptors) are tried again at the next call."""
        try:
            if not self._created:
                return
            try:
                held = self.held or self.try_take(write_owner=False)
            except LocksUnsupported:  # no run can lock here, so none wrote to a folder this one made
                self._created = remove_made_unlocked(self._created, self.folder, self.state)
                return
            if not held:
                # the lock file went: the job folder is gone already, or another run's; the folders above it
                # this run made go where empty (the output root, once an earlier call removed the job folder)
                own = (self.folder, self.state)
                self._created = remove_empty(
                    {path: made_as for path, made_as in self._created.items() if path not in own}
                )
                return
            found = job_files.lstat(records)
            if found is None or not found.st_size:
                self._created = remove_made(self._created, self.folder, self.state)
            else:  # another run wrote items here meanwhile: its folder now
                self._created = {}
        except (OutputBusyError, OutputError, OSError):  # another run holds it, or no descriptor is left
            pass
        finally:
            self.release()


def _holds_anything(folder: Path) -> bool:
    """Whether `folder` is a folder (not a link) with something in it."""
    found = job_files.lstat(folder)
    if found is None or not stat.S_ISDIR(found.st_mode):
        return False
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except (FileNotFoundError, NotADirectoryError):  # removed meanwhile
        return False


def _absent_above(folder: Path) -> list[Path]:
    """The folders above `folder` not there yet, the highest first (a link counts as there)."""
    absent = []
    for above in folder.parents:
        if job_files.lstat(above) is not None:
            break
        absent.append(above)
    return absent[::-1]


class LocksUnsupported(OutputError):
    """The job folder's file system gives no file locks: no writing there is safe, whatever its permissions."""


def cannot_lock(folder: Path, exc: OSError, by: str = "run", verb: str = "lock") -> OutputError:
    """What a job folder that cannot be locked (`verb`: or written to) or made says: its path and the system's
    reason. `by`: the command that tried ("run" or "prune"), for what a file system without locks advises."""
    if exc.errno in _NO_LOCKS:
        fix = (
            "give --output-root a folder on a local file system (or on a network mount with file locking enabled)"
            if by == "run"
            else f"{by} it on a file system with locks: copy the output root to a local file system, or enable "
            "file locking on its network mount"
        )
        return LocksUnsupported(
            f"cannot lock the output folder {folder}: its file system does not support file locks "
            f"({exc.strerror or exc}), which batch-edit needs so that no two commands write one job folder at once; {fix}"
        )
    if exc.errno == errno.EMFILE:  # a run (or prune) holds one lock per job folder until it ends
        return OutputError(too_many_open_files(f" at {folder}", by))
    return OutputError(f"cannot {verb} the output folder {folder}: {exc.strerror or exc}")


def run_reserve(device: str, compiled: object, in_process: bool = True) -> int:
    """The open files a run keeps free to load the model and write: CPU_RESERVE on a CPU, in this process and not
    compiled; OPEN_FILES_RESERVE otherwise (a GPU, a compile, Ray)."""
    return CPU_RESERVE if device == "cpu" and not compiled and in_process else OPEN_FILES_RESERVE


def too_many_open_files(where: str = "", by: str = "run", reserve: int | None = None, jobs: int | None = None) -> str:
    """What a run or prune (`by`) out of open files says (`where`: " at PATH", " while loading the pipeline";
    `reserve`: the files it keeps free, its default where not given; `jobs`: how many, where known)."""
    limit = open_file_limit()
    reserve = reserve if reserve is not None else OPEN_FILES_RESERVE if by == "run" else PRUNE_RESERVE
    needs = f"{reserve} more to load the model and write" if by == "run" else f"{reserve} more"
    these = "this one's jobs" if jobs is None else f"this one's {jobs} job(s)"
    return (
        f"too many open files{where}: a {by} holds one open file per job until it ends and needs {needs}, and the "
        f"open-file limit{f' ({limit})' if limit is not None else ''} is too low for {these}; raise it "
        f"(ulimit -Hn) or {by} the jobs in parts"
    )


def check_open_files(folders: int, by: str = "run", reserve: int | None = None) -> None:
    """Refuse (OutputError) a run whose locks on `folders` job folders, with the files open already, would leave
    fewer than `reserve` open files of the limit free (default OPEN_FILES_RESERVE; a prune, `by`, PRUNE_RESERVE):
    before it locks any."""
    limit = open_file_limit()
    reserve = reserve if reserve is not None else OPEN_FILES_RESERVE if by == "run" else PRUNE_RESERVE
    if limit is not None and _open_now() + folders + reserve > limit:
        raise OutputError(too_many_open_files(by=by, reserve=reserve, jobs=folders))


def open_file_limit() -> int | None:
    """This process's (soft) open-file limit; None where it has none or it cannot be read."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _open_now() -> int:
    """The files this process has open, where the system lists them (0 where it does not)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        with suppress(OSError):
            return len(os.listdir(listing)) - 1  # the listing's own descriptor aside
    return 0


class LockFileGone(Exception):
    """The lock file (or its folder) went before it could be locked: a run removed the folder it had made."""


def try_lock(path: Path, create: bool = True) -> int | None:
    """A descriptor holding the lock at `path` (the file created if absent, where `create`), None while another
    holds it. Raises LockFileGone where the file is not there (without `create`), or was removed (or replaced)
    before the lock was taken."""
    try:
        descriptor = job_files.open_file(path, os.O_RDWR | (os.O_CREAT if create else 0))
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


def unlock(descriptor: int, state: Path | None = None) -> None:
    """Release the lock (for every copy of the descriptor: a forked child's too), then close it. `state`: the
    folder of the owner file this holder wrote, removed first (while the lock file at its path is still the one
    held: once that went, the owner file may be another run's)."""
    try:
        if state is not None and _same_file(job_files.lstat(state / LOCK_NAME), descriptor):
            with suppress(OSError):
                job_files.remove_file(state / OWNER_NAME)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _same_file(found: os.stat_result | None, descriptor: int) -> bool:
    try:
        return found is not None and os.path.samestat(found, os.fstat(descriptor))
    except OSError:
        return False


def write_owner_file(state: Path, by: str) -> None:
    """Name this process (its pid and `by`, the command: "run" or "prune") as the lock's holder, for what a
    command refused meanwhile says; written by every holder but a dry run, removed as the lock is released."""
    job_files.write_whole(state / OWNER_NAME, f"{os.getpid()} {by}\n".encode())


def holder(state: Path) -> str:
    """Who holds the lock, as the owner file says: "another batch-edit run (pid N)" while that process is
    running here; "another batch-edit process" where no owner file names one (a dry run, or a run removing the
    folder it made, writes none; a killed one leaves its pid behind, which may be reused)."""
    try:
        words = job_files.read_bytes(state / OWNER_NAME)[:64].decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        words = []
    pid = int(words[0]) if words and words[0].isdigit() and len(words[0]) < 10 else 0
    if not running(pid):
        return "another batch-edit process"
    command = words[1] if len(words) > 1 and words[1] in ("run", "prune") else "process"
    return f"another batch-edit {command} (pid {pid})"


def running(pid: int) -> bool:
    """A process `pid` runs on this machine (perhaps another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def remove_made(created: Made, folder: Path, state: Path) -> Made:
    """Remove the folders of `created` (the output root and those above it, the job folder, its `.batch-edit/`:
    those a run made), with what is in them, the lock file last; the caller holds the lock. A folder something
    appears in meanwhile (another run's new lock file) stays, with the folders above it; so does one no longer
    the folder made. Returns those still there."""
    if folder in created or state in created:
        _empty_made(created, folder, state)
    return remove_empty(created)


def remove_made_unlocked(created: Made, folder: Path, state: Path) -> Made:
    """Remove the folders of `created` on a file system without locks, where none can be taken: a run there is
    refused at its first lock, before it writes anything but the folders and the (empty) lock file, so nothing
    but those can be a run's. The lock file goes only where `.batch-edit/` is a folder this run made (device and
    inode, opened without following a link) and holds nothing else, and it is an empty regular file; then the
    folders that are empty and still the ones made (`remove_empty`). Anything else in them (a file put there by
    hand, another tool's) keeps them, with the folders above. Returns those still there."""
    if state in created:
        with suppress(OSError):  # gone, a link, or no descriptor left: left as it is
            _unlink_bare_lock(folder, state, created)
    return remove_empty(created)


def _unlink_bare_lock(folder: Path, state: Path, created: Made) -> None:
    """Unlink `.batch-edit/lock` where `.batch-edit/` is the folder made and holds only that empty regular file."""
    outer = _open_made(folder, created.get(folder))
    if outer is None:
        return
    try:
        inner = _open_made(state.name, created[state], parent=outer)
        if inner is None:
            return
        try:
            with os.scandir(inner) as entries:
                names = [entry.name for entry in entries]
            found = os.stat(LOCK_NAME, dir_fd=inner, follow_symlinks=False) if names == [LOCK_NAME] else None
            if found is not None and stat.S_ISREG(found.st_mode) and not found.st_size:
                os.unlink(LOCK_NAME, dir_fd=inner)
        finally:
            os.close(inner)
    finally:
        os.close(outer)


def remove_empty(created: Made) -> Made:
    """Remove the folders of `created` that are empty and still the ones made (device and inode), the deepest
    first; those still there are returned. Checked, then removed by path: rmdir removes only an empty folder
    and never follows a link, so a swap in between costs at most an empty folder."""
    for made in sorted(created, key=lambda path: len(path.parts), reverse=True):
        if not _same(job_files.lstat(made), created[made]):
            continue  # gone, or another folder (or a link) in its place: not this run's to remove
        try:
            made.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break
    return {made: made_as for made, made_as in created.items() if _same(job_files.lstat(made), made_as)}


def _empty_made(created: Made, folder: Path, state: Path) -> None:
    """Empty the job folder where this run made it (all but `.batch-edit/`), then `.batch-edit/` (all but the
    lock file), then remove the lock file. Each folder is opened without following a link and emptied only
    while it is the folder made; its entries are removed through that descriptor, so a folder or link swapped
    in meanwhile is never entered. Stops at the first that cannot be opened or listed (out of descriptors)."""
    try:
        outer = _open_made(folder, created.get(folder))
    except OSError:  # gone, a link, or no descriptor left
        return
    try:
        if outer is None or (folder in created and not _empty_at(outer, keep=state.name)):
            return
        inner = _open_made(state.name, created.get(state), parent=outer)
        if inner is None:
            return
        try:
            if _empty_at(inner, keep=LOCK_NAME):
                os.unlink(LOCK_NAME, dir_fd=inner)
        finally:
            os.close(inner)
    except OSError:
        return
    finally:
        if outer is not None:
            os.close(outer)


def _open_made(path: Path | str, made_as: tuple[int, int] | None, parent: int | None = None) -> int | None:
    """A descriptor of the folder at `path` (relative to the folder `parent` where given), never through a link
    at its last component; None where it is not the folder made (`made_as`: its device and inode, None where
    this run did not make it). Raises OSError where it cannot be opened."""
    descriptor = os.open(path, _OPEN_FOLDER, dir_fd=parent)
    if made_as is None or _same(os.fstat(descriptor), made_as):
        return descriptor
    os.close(descriptor)
    return None


def _same(found: os.stat_result | None, made_as: tuple[int, int]) -> bool:
    return found is not None and stat.S_ISDIR(found.st_mode) and (found.st_dev, found.st_ino) == made_as


def _empty_at(descriptor: int, keep: str) -> bool:
    """Remove what the folder open at `descriptor` holds but `keep`, through that descriptor (a link is removed,
    never followed); False where it could not be listed (out of descriptors, say)."""
    try:
        with os.scandir(descriptor) as entries:  # listed first: a removal may need descriptors of its own
            found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries if entry.name != keep]
    except OSError:
        return False
    for name, is_folder in found:
        if is_folder:
            shutil.rmtree(name, ignore_errors=True, dir_fd=descriptor)
        else:
            with suppress(OSError):
                os.unlink(name, dir_fd=descriptor)
    return True
