"""The only module that writes under the output root (with `job_listing`, whose CSVs `JobOutput` inherits).

Per job folder: the images and their caption files (written to a temporary name, then renamed into place),
moves into `.batch-edit/pruned/` (nothing is deleted), an append-only record of every finished or failed item
(`.batch-edit/records.jsonl`, flushed per item), the pipeline configs the records name
(`.batch-edit/pipelines/<hash>.yaml`), `metadata.csv` / `failures.csv`, rebuilt from the records atomically, and
the contact sheets. Every file is opened through `job_files`: no link is followed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Callable

from PIL import Image

from . import folder_lock, job_files
from .brief_holders import IDLE, wait_for_brief_holder
from .errors import OutputBusyError, OutputError, ResultPathTaken
from .finish_pass import UNCOPIED, finish_files
from .folder_lock import LOCK_NAME, OWNER_NAME, FolderLock, LockFileGone, cannot_lock, try_lock, unlock
from .formats import caption_name, embedded_record
from .job_listing import JobListing
from .metadata_edits import WRITTEN_DIGESTS
from .plan import WorkItem
from .records import RESULT_MTIME, RESULT_SHA256, SOURCES_DIR, STATE_DIR, is_bare_name
from .result_files import EncodedResult, Failure, encode_result, item_fields
from .result_files import now as _now
from .signals import deferred
from .source_folders import SHEET_PREFIX

PRUNED_DIR = f"{STATE_DIR}/pruned"
PIPELINES_DIR = "pipelines"  # .batch-edit/pipelines/<hash>.yaml: each pipeline config records were made with
SHEETS_STAMP = "sheets"  # .batch-edit/sheets: touched once every contact sheet of the current metadata.csv is written
SHEETS_OFF = "off"  # the stamp's one line where the job draws none (`contact_sheets: false`): no sheet is so named


class JobOutput(JobListing):
    """One job folder. A run `lock()`s it before the pipeline loads (refusing early if another run holds it),
    `start()`s it when the job begins (its pipeline config written, the record opened) and `finish()`es it when
    the job ends, so a run of thousands of jobs holds one open record at a time."""

    def __init__(self, root: Path, job: str):
        super().__init__(root, job)
        self._records = None
        self._lock = FolderLock(self.folder, self.state)
        self._append_lock = threading.Lock()  # the writer thread appends successes, the main thread failures
        self.moved_aside: list[tuple[str, str]] = []  # (file, its name in pruned/): files the run did not make
        self.moved_earlier: list[tuple[str, str]] = []  # (file, its name in pruned/): other items' results (+captions)
        self.filled = [0, 0]  # finished items given their missing caption file, and their missing kept copies
        self.moved_unrecorded: list[tuple[str, str]] = []  # (file, its name in pruned/): its item's, record cut short
        self._kept_checked: set[str] = set()  # kept copies found (or written) holding what this run kept there

    def check(self) -> None:
        """Refuse (UnsafeOutputError) a link or an odd file where this folder's own files go."""
        if not self.folder.is_dir():
            return
        for folder in (self.state, self.state / PIPELINES_DIR, self.folder / PRUNED_DIR, self.folder / SOURCES_DIR):
            job_files.refuse_unsafe(folder, folder=True)
        names = ["records.jsonl", "pipeline.yaml", OWNER_NAME, LOCK_NAME, SHEETS_STAMP, WRITTEN_DIGESTS, UNCOPIED]
        files = [self.folder / "metadata.csv", self.folder / "failures.csv", *(self.state / n for n in names)]
        sheets, configs = self.folder.glob(f"{SHEET_PREFIX}*.png"), (self.state / PIPELINES_DIR).glob("*.yaml")
        for path in [*files, *sheets, *configs]:
            job_files.refuse_unsafe(path)

    # --- writing -------------------------------------------------------------------------------------------
    def open(self, pipeline_yaml: str | None, pipeline_hash: str | None = None) -> None:
        """lock() then start(): the whole job folder ready for writing at once (pipeline_yaml None: no config to
        keep, for changes that render nothing, such as pruning)."""
        self.lock()
        self.start(pipeline_yaml, pipeline_hash or hashlib.sha256((pipeline_yaml or "").encode()).hexdigest()[:16])

    def lock(self, by: str = "run") -> None:
        """Create the folder if needed, lock it and clean what a crash left; nothing else is written yet. `by`:
        the command taking it ("run" or "prune"), for what a refusal advises."""
        try:
            self.check()
            self._lock.take(by)
            job_files.sweep_temporaries(self.folder)
            job_files.sweep_temporaries(self.folder / SOURCES_DIR)
            job_files.check_writable(self.folder)  # the lock and records live in .batch-edit/, the results here
        except OSError as exc:
            self.close()
            if exc.errno == errno.EMFILE:  # a run holds one lock per job folder until it ends
                raise cannot_lock(self.folder, exc) from exc
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise

    def start(self, pipeline_yaml: str | None, pipeline_hash: str) -> None:
        """Keep the config this job's records are made with (once per config) and open the record."""
        try:
            if pipeline_yaml is not None:
                self._keep_config(pipeline_yaml, pipeline_hash)
            self._records = job_files.open_append(self.records_path)
            if os.fstat(self._records.fileno()).st_size and not job_files.ends_with_newline(self._records.fileno()):
                self._records.write(b"\n")  # a crash cut the last line short: never glue a record onto it
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from exc

    def _keep_config(self, pipeline_yaml: str, pipeline_hash: str) -> None:
        pipelines = self.state / PIPELINES_DIR
        job_files.make_folder(pipelines)
        config = pipelines / f"{pipeline_hash}.yaml"
        job_files.refuse_unsafe(config)
        if not config.exists():
            job_files.write_whole(config, pipeline_yaml.encode("utf-8"))

    def finish(self) -> None:
        """Close the record (the lock stays until close())."""
        if self._records is not None:
            self._records.close()
            self._records = None

    def close(self) -> None:
        self.finish()
        self._lock.release()

    def discard_if_unused(self) -> None:
        """Remove what this run created but never wrote an item to (it was refused, the pipeline failed to
        load): a new job folder, or the `.batch-edit/` this run added to an existing one; only under the
        folder's lock, released after (see `FolderLock.discard_unused`)."""
        self.finish()
        self._lock.discard_unused(self.records_path)

    def write_image(
        self,
        item: WorkItem,
        image: Image.Image,
        extra: dict,
        source: Image.Image | None = None,
        mask: Image.Image | None = None,
    ) -> None:
        """Write the result (and, for before/after pairs, the fitted source and mask it was made from), then
        record it."""
        self.write_result(item, encode_result(item, image, extra, source, mask))

    def write_result(self, item: WorkItem, result: EncodedResult) -> None:
        """Write an encoded result (made here or by a worker elsewhere), append the row it carries with the file's
        size, sha256 and modification time (`JobRecords._holds`), then write its caption. The caption comes last:
        a run killed before the record would otherwise leave a caption no record names, taken for a hand edit
        (never rewritten) by every later run; one killed after it leaves a finished item without its caption,
        which the next finishing pass writes. A folder at the result's name (or its caption's) is the item's
        failure (`ResultPathTaken`), found before anything is written or moved."""
        names = [item.output_name] + [caption_name(item.output_name)] * item.output.captions
        for name in names:
            found = job_files.lstat(self.folder / name)
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise ResultPathTaken(self.folder / name)
        for name, png in result.kept:
            self._write_source(name, png)
        self._move_other_result(item)  # before the caption: the one beside another item's result goes with it
        caption = item.prompt.encode("utf-8") if item.output.captions else None
        hand_edited = self._move_not_made_here(item, result.data, caption)  # a caption kept as it is
        written = self._write_file(self.folder / item.output_name, lambda handle: handle.write(result.data))
        stamp = {RESULT_SHA256: hashlib.sha256(result.data).hexdigest(), RESULT_MTIME: written.st_mtime_ns}
        self._append({"status": "ok", "bytes": written.st_size, **stamp, **result.row})
        if caption is not None and not hand_edited:
            self._write_file(self.folder / caption_name(item.output_name), lambda handle: handle.write(caption))

    def _move_other_result(self, item: WorkItem) -> None:
        """Never write over another item's result: a file name template without {id} gives a new item the name
        of one no longer planned (or planned under another name now). That file moves into .batch-edit/pruned/
        first, as `prune` moves it, with the same "pruned" record where it is still that item's result. The
        item's own earlier file (a retry, --overwrite, a damaged image) is written over."""
        record, current = self.result_of(item.output_name)
        if record is None or record["item_id"] == item.item_id:
            return
        if self._names_taken.get(item.output_name) != item.item_id:  # the CSV first: no row then names the file
            self.unlist_taken((*(self._plan or ()), item))
        caption = caption_name(item.output_name)
        had_caption = (self.folder / caption).is_file()
        moved = self.move_to_pruned(item.output_name)
        if moved is not None:  # said in the run's summary (name_notes.moved_earlier_line)
            names = [item.output_name] + [caption] * had_caption
            self.moved_earlier += [(name, Path(moved).with_suffix(Path(name).suffix).name) for name in names]
        if current:  # also where the file is gone: the record must not name this item's result as its own
            self.mark(record, "pruned", pruned_to=moved, replaced_by=item.item_id)

    def _move_not_made_here(self, item: WorkItem, data: bytes, caption: bytes | None) -> bool:
        """Never write over a file this job did not make (a user's own, another tool's, a result edited since):
        it moves into .batch-edit/pruned/ first (`in_the_way`), each listed in `moved_aside`, with the caption
        file of its stem where this job did not write that (a pair stays a pair). A caption edited by hand
        beside the job's own result (or where it was) stays where it is, never rewritten: returns True then. A
        file carrying this very item's record (`embedded_record`) but named by none of its records is its result,
        whose record a crash cut short or lost: it moves out all the same (it may have been edited since), listed
        in `moved_unrecorded` instead, as what it is."""
        file_name = item.output_name
        image, theirs = self.in_the_way(file_name, data, caption)
        if image:
            recorded, _ = self.result_of(file_name)  # this item's record names it: a result edited since
            own = (recorded is None or recorded["item_id"] != item.item_id) and self._carries_item(
                file_name, item.item_id
            )
            moved = self.move_to_pruned(file_name, with_caption=theirs)
            names = [file_name] + [caption_name(file_name)] * theirs
            moves = [(name, Path(moved).with_suffix(Path(name).suffix).name) for name in names]
            if own:
                self.moved_unrecorded += moves
            else:
                self.moved_aside += moves
            return False
        return theirs

    def _carries_item(self, file_name: str, item_id: str) -> bool:
        """The image at `file_name` carries the record of item `item_id` (read only for a file in the way)."""
        try:
            with Image.open(io.BytesIO(job_files.read_bytes(self.folder / file_name))) as image:
                record = embedded_record(image)
        except (OSError, ValueError, SyntaxError, OutputError, Image.DecompressionBombError):  # not an image
            return False
        return record is not None and record.get("item_id") == item_id and record.get("file_name") == file_name

    def finish_files(self, copies: bool = True) -> None:
        """The job's finishing pass (`finish_pass`): finished items' missing caption files and (`copies`, in a job
        keeping its sources) kept copies, then the CSVs, all from one read of the records: every result there
        listed again, also one at a name the run (stopped) did not write after all."""
        self._names_taken = {}
        captions, copies = finish_files(self, self._plan or (), copies and self._keep_sources)
        self.filled[0] += captions
        self.filled[1] += copies

    def write_caption(self, item: WorkItem) -> None:
        prompt = item.prompt.encode("utf-8")
        self._write_file(self.folder / caption_name(item.output_name), lambda handle: handle.write(prompt))

    @contextmanager
    def appending(self):
        """The record open for appending within, also where no run opened it (`refresh`): it closes again after."""
        opened = self._records is None
        if opened:
            self.start(None, "")  # the record only: nothing else written here names a config
        try:
            yield
        finally:
            if opened:
                self.finish()

    def keep_copies(self, record: dict, fields: dict, files: tuple[tuple[str, bytes], ...]) -> bool:
        """A finished item's kept copies written, and a record naming them appended where its record did not (the
        same result, now with its copies): True if one was."""
        for name, png in files:
            self._write_source(name, png)
        if all(record.get(name) == value for name, value in fields.items()):
            return False
        self._append({**record, **fields, "sources_kept_at": _now()})
        return True

    def _write_source(self, name: str, png: bytes) -> None:
        """The kept copy holds the bytes the item was made from: every item made from the same fitted source (or
        mask) names the same file, so it is checked (its size, then its bytes) once per run and written only where
        it is missing or differs (emptied, edited, cut short since)."""
        if name in self._kept_checked:
            return
        try:
            job_files.make_folder(self.folder / SOURCES_DIR)
        except OSError as exc:
            raise OutputError(f"cannot write {self.folder / SOURCES_DIR}: {exc.strerror or exc}") from exc
        if not job_files.holds(self.folder / name, png):
            self._write_file(self.folder / name, lambda handle: handle.write(png))
        self._kept_checked.add(name)

    def _write_file(self, final: Path, write: Callable[[BinaryIO], object]) -> os.stat_result:
        """`final` replaced atomically by what `write` writes; returns the file's stat as written."""
        temporary = job_files.temporary_name(final)
        try:
            with job_files.open_new(temporary) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                written = os.fstat(handle.fileno())  # the rename keeps its size and modification time
            os.replace(temporary, final)  # a link at `final` is replaced, its target never written
            job_files.fsync_folder(final.parent)
        except OSError as exc:
            job_files.remove_file(temporary)
            raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return written

    def mark(self, record: dict, status: str, **fields) -> None:
        """Append a later status for a recorded item ("pruned", "rejected"): the log stays the whole history."""
        self._append({**record, "status": status, **fields, f"{status}_at": _now()})

    def restore(self, record: dict, why: str = "restored") -> None:
        """Append an item's success record again, as its latest: its image was put back by hand after a prune
        ("restored"), or found unchanged under another modification time ("verified"): with the one it has now."""
        self._append({**self.restamped(record), f"{why}_at": _now()})

    def move_to_pruned(self, file_name: str, with_caption: bool = True) -> str | None:
        """Move a result and (`with_caption`) its caption file into .batch-edit/pruned/ under a name not taken
        there yet (an item pruned twice keeps both copies); returns the result's new path relative to the job
        folder, None if it was not there (the caption of a deleted result moves all the same: a dataset folder
        must not keep a caption without its image). A caption that a result staying here shares (same stem,
        another format) must stay. A kept copy ("sources/NAME", with_caption False) moves into pruned/sources/."""
        image, caption = self.folder / file_name, self.folder / caption_name(file_name)
        moving = [path for path, moves in ((caption, with_caption), (image, True)) if moves and path.is_file()]
        if not moving:
            return None
        pruned = self.folder / PRUNED_DIR
        target = _unused_name(pruned, file_name)
        try:
            for folder in dict.fromkeys((pruned, target.parent)):  # never a link: moved files stay in the job folder
                job_files.make_folder(folder)
            for path in moving:  # the caption first: a result never stays here without it
                os.replace(path, target.with_suffix(".txt") if path == caption else target)
            job_files.fsync_folder(target.parent)
            job_files.fsync_folder(image.parent)
        except OSError as exc:
            raise OutputError(f"cannot move {moving[-1]} to {pruned}: {exc.strerror or exc}") from exc
        return str(target.relative_to(self.folder)) if image in moving else None

    def record_failure(self, item: WorkItem, stage: str, error: BaseException, pipeline: dict | None = None) -> None:
        self.record_failed(item, Failure.of(stage, error), pipeline)

    def record_failed(self, item: WorkItem, failure: Failure, pipeline: dict | None = None) -> None:
        row = {**item_fields(item), **(pipeline or {}), "stage": failure.stage, "error_type": failure.error_type}
        self._append({"status": "failed", **row, "error": failure.error, "failed_at": _now()})

    def _append(self, record: dict) -> None:
        self.append_all([record])

    def append_all(self, records: list[dict]) -> None:
        """Records appended in one write and one fsync (a crash leaves whole lines, the last perhaps cut short)."""
        if self._records is None:
            raise OutputError(f"{self.folder} was not opened for writing")
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with self._append_lock:
            self._write_line(memoryview(lines.encode("utf-8")))
            for record in records:
                self.note(record)

    def _write_line(self, line: memoryview) -> None:
        try:
            while line:  # unbuffered: nothing is left in memory to fail later, a short write is retried
                line = line[self._records.write(line) :]
            os.fsync(self._records.fileno())
        except OSError as exc:
            raise OutputError(f"cannot append to {self.records_path}: {exc.strerror or exc}") from exc

    def refuse_if_held(self, by: str = "run") -> None:
        """OutputBusyError, naming the holder, while another process holds this folder's lock: a run checks the
        folders of its jobs with nothing to do so before it writes anything. Makes, writes and keeps nothing (no
        folder, lock file or owner file; the lock, where its file is there, is released at once). A folder that
        cannot be locked (read-only, a file system without locks) is left to `refresh` and `lock`. A holder only
        finishing the job, or checking it, is waited for a moment (`brief_holders`)."""
        busy = self._busy(by)
        if busy is not None and not wait_for_brief_holder(self.state, lambda: self._busy(by) is None):
            raise busy

    def _busy(self, by: str) -> OutputBusyError | None:
        """One try at the lock, released at once: the refusal while another process holds it."""
        try:
            if self._lock.try_take(by, write_owner=False, create=False):
                self._lock.release()
        except OutputBusyError as exc:
            return exc
        except OutputError:
            pass
        return None

    def refresh(self, by: str = "run") -> None:
        """Finish what an earlier run left (CSVs that differ from what the records and the current plan give,
        contact sheets older than the CSVs, a temporary file), unless another run holds the folder (one that took
        it since the run checked it with `refuse_if_held`: a run holds no idle job's folder but here). The CSVs
        are rebuilt even when no record is newer: a source back to earlier content lists another row, though
        nothing runs. Nothing here loads a model. Under the lock, whose owner file names this process (`by`: its
        command), as it may take a while."""
        if job_files.lstat(self.records_path) is None:
            return
        self.check()  # before the lock: its file must not be a link either
        try:
            descriptor = try_lock(self.state / LOCK_NAME)
        except (LockFileGone, OSError):  # removed meanwhile, or a read-only folder: left as it is, records intact
            return
        if descriptor is None:  # another run holds it
            return
        written = False
        try:
            with suppress(OSError):  # only for what a refusal meanwhile says: a folder it cannot name itself in
                folder_lock.write_owner_file(self.state, f"{by} {IDLE}")  # (read-only) is finished all the same
                written = True
            job_files.sweep_temporaries(self.folder)
            self.finish_files()  # a CSV is replaced only where it changes, which leaves the sheets' stamp newer
            self.write_sheets_if_stale()
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from exc
        finally:
            unlock(descriptor, self.state if written else None)

    def sheets_current(self) -> bool:
        """The contact sheets were all written from metadata.csv as it is (the stamp is not older) and are all
        still there (the stamp names them; one deleted by hand comes back at the next run)."""
        metadata, stamp = job_files.lstat(self.folder / "metadata.csv"), job_files.lstat(self.state / SHEETS_STAMP)
        if metadata is None or stamp is None or stamp.st_mtime_ns < metadata.st_mtime_ns:
            return False
        try:
            names = job_files.read_bytes(self.state / SHEETS_STAMP).decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return False
        if (names == [SHEETS_OFF]) != (not self.contact_sheets):  # `contact_sheets` changed since
            return False
        return not self.contact_sheets or all(
            is_bare_name(name) and job_files.lstat(self.folder / name) is not None for name in names
        )

    def write_sheets_if_stale(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Contact sheets only where metadata.csv changed since they were drawn: a job whose run only failed
        again, or a run with nothing to do, draws none. False when `stopped()` cut the drawing short."""
        return self.sheets_current() or self.write_sheets(stopped)

    def write_sheets(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Contact sheets from metadata.csv, then the stamp that says they are complete (a run killed while
        writing them, or one whose `stopped()` cut them short, leaves the stamp older than metadata.csv, so the
        next run writes them again). False when cut short."""
        written = write_contact_sheets(self.folder, stopped=stopped, drawn=self.contact_sheets)
        if written is None:
            return False
        names = [p.name for p in written] if self.contact_sheets else [SHEETS_OFF]
        try:
            job_files.write_whole(self.state / SHEETS_STAMP, "".join(f"{name}\n" for name in names).encode("utf-8"))
        except OSError as exc:
            raise OutputError(f"cannot write {self.state / SHEETS_STAMP}: {exc.strerror or exc}") from exc
        return True


def write_contact_sheets(job_folder: Path, **options) -> list[Path] | None:
    """sheets.write_contact_sheets, imported here: drawing (PIL's fonts) is for a job's end, never for `plan`."""
    from .sheets import write_contact_sheets as write

    return write(job_folder, **options)


def discard_unused(outputs: list[JobOutput]) -> None:
    """Each folder a run made but wrote no item to removed under its own lock, then the lock released: never one
    another run locked meanwhile. The last first, so the first can remove an output root it made; then again, for
    those that found no descriptor free (a run refused at the open-file limit) while the others were held. A
    SIGINT or SIGTERM meanwhile takes effect once every folder is done."""
    with deferred():
        for _ in range(2):
            for output in reversed(outputs):
                output.discard_if_unused()


def _unused_name(folder: Path, file_name: str) -> Path:
    """`file_name` in `folder`, numbered (`NAME~2.png`) where it or its caption's name is taken there."""
    target, number, name = folder / file_name, 1, Path(file_name)
    while target.exists() or target.with_suffix(".txt").exists():
        number += 1
        target = target.with_name(f"{name.stem}~{number}{name.suffix}")
    return target
