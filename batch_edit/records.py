"""Reading a job folder's records: what a valid record is, which file names it may name, which records describe
the same item (the current plan's, else the newer, supersedes the other), which record is an item's (its latest,
but the result it keeps where prune moved another format's file out), what the records say is done, and whether a
file at a result's name is the result recorded. Nothing here writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

from . import job_files
from .errors import OutputError
from .formats import EXTENSIONS, caption_name, with_extension
from .parameters import axes

STATE_DIR = ".batch-edit"
SOURCES_DIR = "sources"
_NOT_IN_NAMES = re.compile(r"[/\\\x00]")  # a folder part (either separator) or a NUL, which ends a C path
# What makes two records the same item apart from the source's content: one supersedes the other (`listed_ids`). The
# pipeline by its recorded identity fields, not `pipeline_config`, which records of older versions lack.
SUPERSEDE_FIELDS = (
    "source", "mask", "prompt", *(p.column for p in axes()),
    "model", "revision", "dtype", "quantization", "loras", "first_block_cache", "vae_tiling", "base_model", "task",
    "max_sequence_length",
)  # fmt: skip
_KEY_FIELDS = ("job", *SUPERSEDE_FIELDS)
# A result file as written (records of older versions lack both: their size alone says a file is theirs): its
# sha256, and its modification time then, the stamp compared first so that an untouched result is never read
RESULT_SHA256, RESULT_MTIME = "file_sha256", "file_mtime_ns"
# On a failure appended again: the result the failure came after (`results_behind_failures`), found unchanged under
# a new modification time (its name, sha256 and that time): the failure stays the item's outcome, its result is not
# read again
VERIFIED_RESULT = "verified_result"
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def supersede_key(record: dict) -> tuple:
    return tuple(str(record.get(name)) for name in _KEY_FIELDS)  # str(): any value of a valid record is hashable


def is_bare_name(name) -> bool:
    """A file name directly inside the job folder: no folder part, no way up or out, nothing hidden."""
    return type(name) is str and 0 < len(name) <= 255 and name[0] != "." and _NOT_IN_NAMES.search(name) is None


def valid_record(record) -> bool:
    """A record of the shape JobOutput writes; anything else (a list, a number, a missing id, a file name
    pointing anywhere but the job folder) is ignored like a line cut short."""
    if not isinstance(record, dict):
        return False
    get = record.get  # one lookup of the method: every line of a records file of 100,000 items comes here
    item_id, index, row = get("item_id"), get("index", 0), get("row", 0)
    if not isinstance(item_id, str) or not item_id:
        return False
    if type(index) is not int or index < 0 or type(row) is not int or row < 0:
        return False  # a position that is not a number would break the manifest order of the CSVs
    status = get("status")
    if status in ("failed", "pruned", "rejected"):  # no file of theirs is read or counted as done
        return True
    if status != "ok" or not is_bare_name(get("file_name")):
        return False
    size, seconds = get("bytes"), get("seconds", 0)
    if type(size) is not int or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return False
    if not math.isfinite(seconds) or seconds < 0:
        return False  # an infinite or NaN duration would break the estimates
    digest, mtime = get(RESULT_SHA256), get(RESULT_MTIME, 0)
    if (digest is not None and not (type(digest) is str and _SHA256.match(digest))) or type(mtime) is not int:
        return False  # a result's digest or stamp never written so: its file would be read, or taken, for nothing
    paired = get("source_image_file_name")
    if paired is None:
        return True
    folder, _, name = paired.partition("/") if isinstance(paired, str) else ("", "", "")
    return folder == SOURCES_DIR and is_bare_name(name)


def _file_above(path: Path) -> Path:
    """The nearest folder of `path` that exists as something else (the output root given as a file, say)."""
    return next((folder for folder in reversed(path.parents) if not folder.is_dir()), path.parent)


def config_hash(identity: dict) -> str:
    """The name a pipeline config is kept under: a hash of its identity (what determines an image)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class JobRecords:
    """A job folder's `.batch-edit/records.jsonl`, read: the latest valid record per item id."""

    def __init__(self, root: Path, job: str):
        self.folder = (root / job).resolve()
        if not job or self.folder.parent != root.resolve():
            raise OutputError(f"job name {job!r} would write outside the output root {root}")
        if os.path.islink(root / job):  # a link to another job folder (one elsewhere is refused above)
            job_files.refuse_unsafe(root / job, folder=True)
        self._prefix = os.path.join(self.folder, "")  # the folder's path and a separator, for a bare file name
        self.state = self.folder / STATE_DIR
        self.records_path = self.state / "records.jsonl"
        self.invalid_lines = 0  # lines of the last read_records() that were cut short or of the wrong shape
        self._lines: dict[str, int] = {}  # item id -> line number of its latest record
        # item id -> file name -> the latest success record naming it that a later record of the item replaced: a
        # format changed and changed back, or a result restored by hand after `prune --rejected`, finishes the item
        # with one of them (one per name: --overwrite reruns do not pile up)
        self._earlier: dict[str, dict[str, dict]] = {}
        # Whose result each file name is, as of the last read_records() and what was appended since (`note`): a
        # run never writes a result over another item's (JobOutput.write_result). None: nothing read yet.
        self._named: dict[str, dict] | None = None  # file name -> the latest success record naming it
        self._results: dict[str, str | None] = {}  # item id -> the file its latest record keeps (None: none)
        # The sha256 of each result file hashed, by the file's state (a file changed since is hashed again), and
        # the files found by it to be their recorded result though their stamp is not the recorded one
        self._hashed: dict[tuple, str] = {}
        self._verified: dict[str, tuple[int, str]] = {}  # file name -> (mtime_ns, sha256) found
        self._unread = False  # within judged_unread(): no result file is read

    def read_records(self) -> dict[str, dict]:
        """The latest record per item id, in first-seen order. A line cut short by a crash, or of a shape this
        module never writes, is ignored and counted in `invalid_lines`."""
        latest: dict[str, dict] = {}
        self.invalid_lines, self._lines, self._earlier, self._named, self._results = 0, {}, {}, {}, {}
        try:
            handle = os.fdopen(job_files.open_file(self.records_path, os.O_RDONLY), "rb")
        except FileNotFoundError:
            return latest
        except NotADirectoryError:
            raise OutputError(f"{_file_above(self.records_path)} is a file where a folder should be") from None
        except OSError as exc:
            raise OutputError(f"cannot read {self.records_path}: {exc.strerror or exc}") from exc
        with handle:
            self._read_lines(handle, latest)
        self._results = {item_id: r["file_name"] if r["status"] == "ok" else None for item_id, r in latest.items()}
        return latest

    def in_written_order(self, records: dict[str, dict]) -> list[dict]:
        """`records` (as the last read_records() gave them) in the order their items' latest lines were written."""
        return sorted(records.values(), key=lambda record: self._lines.get(record["item_id"], -1))

    def _read_lines(self, handle, latest: dict[str, dict]) -> None:
        lines, named = self._lines, self._named  # looked up once: this runs once per line of 100,000
        for number, record in self._valid_records(handle):
            item_id, status = record["item_id"], record["status"]
            replaced = latest.get(item_id)
            if replaced is not None and replaced["status"] == "ok":
                self._earlier.setdefault(item_id, {})[replaced["file_name"]] = replaced
            latest[item_id] = (self._kept_result(record) or record) if status == "pruned" else record
            lines[item_id] = number
            if status == "ok":
                named[record["file_name"]] = record
            elif status == "failed":
                self._stamp_earlier(record)

    def note(self, record: dict) -> None:
        """A record just appended, taken as read_records() would take it into whose result each file is."""
        if self._named is None:
            return
        status = record["status"]
        if status == "ok":
            self._named[record["file_name"]] = record
            found = self._verified.get(record["file_name"])
            if found is not None and found[0] != record.get(RESULT_MTIME):
                del self._verified[record["file_name"]]  # a file written since: what was found is not what is there
        elif status == "failed":
            self._stamp_earlier(record)
        kept = record.get("kept") if status == "pruned" else None  # prune moved another format's file only
        self._results[record["item_id"]] = record["file_name"] if status == "ok" else kept

    def result_of(self, file_name: str) -> tuple[dict | None, bool]:
        """The latest success record naming `file_name` (None: none ever did), and whether that file is still
        its item's result (not one the item has replaced since, or one pruned or rejected). Reads the records
        once if nothing was read yet."""
        if self._named is None:
            self.read_records()
        record = self._named.get(file_name)
        return record, record is not None and self._results.get(record["item_id"]) == file_name

    def in_the_way(self, file_name: str, data: bytes, caption: bytes | None) -> tuple[bool, bool]:
        """Whether writing a result (`data`) at `file_name`, and its caption (None: none written), would destroy
        a file this job did not make, at the result's name and at its caption's. A run moves such a result aside
        (its caption with it: a pair stays a pair), and leaves such a caption beside its own result unwritten (a
        caption edited by hand). Not made here: a result no record names, or not the file its record gives
        (`_holds`: edited or replaced since); a caption whose text is no prompt of a result recorded under its
        stem (a run writes a caption only once its result is recorded). A file that holds the very bytes to be
        written loses nothing."""
        text, stem = caption_name(file_name), Path(file_name).stem
        results = [self.result_of(with_extension(stem, format))[0] for format in EXTENSIONS]
        made = {str(record["prompt"]).encode("utf-8") for record in results if record is not None}
        image = self._unlike(file_name, {data}) and self._not_recorded(file_name)
        return image, self._unlike(text, made | {caption} if caption is not None else made)

    def _not_recorded(self, file_name: str) -> bool:
        record, _ = self.result_of(file_name)
        return record is None or not self._holds(record, os.lstat(self.folder / file_name))

    def _unlike(self, file_name: str, contents: set[bytes]) -> bool:
        """A regular file is at `file_name` (a link is replaced, its target untouched) holding none of `contents`."""
        found = job_files.lstat(self.folder / file_name)
        if found is None or not stat.S_ISREG(found.st_mode):
            return False
        sizes = {len(content) for content in contents}
        return found.st_size not in sizes or job_files.read_bytes(self.folder / file_name) not in contents

    def _kept_result(self, record: dict) -> dict | None:
        """For a "pruned" record of a file the item no longer names (another format's, superseded), which says
        the result the item keeps (`kept`): that result's record, which stays the item's: the item is not pruned,
        its result is still here. Records without `kept` (and "pruned" ones of older versions) prune the item."""
        kept = record.get("kept")
        if record["status"] != "pruned" or not is_bare_name(kept):
            return None
        return self._earlier.get(record["item_id"], {}).get(kept)

    def _stamp_earlier(self, failure: dict) -> None:
        """The new modification time a failure appended again carries (`VERIFIED_RESULT`) for the result the item
        had before it, where that result's record has the sha256 it found: taken as if recorded so."""
        stamp, item_id = failure.get(VERIFIED_RESULT), failure["item_id"]
        if not isinstance(stamp, dict) or not isinstance(stamp.get("file_name"), str):
            return
        name = stamp["file_name"]
        earlier = self._earlier.get(item_id, {}).get(name)
        if earlier is None or type(stamp.get(RESULT_MTIME)) is not int or earlier.get(RESULT_SHA256) is None:
            return
        if stamp.get(RESULT_SHA256) != earlier[RESULT_SHA256]:
            return
        stamped = self._earlier[item_id][name] = {**earlier, RESULT_MTIME: stamp[RESULT_MTIME]}
        if self._named.get(name) is earlier:
            self._named[name] = stamped

    def _valid_records(self, handle):
        """(line number, record) of each valid line, counting the others (not blank) in `invalid_lines`."""
        for number, line in enumerate(_lines(handle)):
            record = _parsed(line)
            if valid_record(record):
                yield number, record
            elif line.strip(_BLANK if isinstance(line, str) else None):
                self.invalid_lines += 1

    def recorded_files(self) -> dict[str, str]:
        """Every file name a success record ever gave, superseded ones included (a format change leaves some),
        with the item the latest of them was made for."""
        try:
            handle = os.fdopen(job_files.open_file(self.records_path, os.O_RDONLY), "rb")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise OutputError(f"cannot read {self.records_path}: {exc.strerror or exc}") from exc
        with handle:
            return {r["file_name"]: r["item_id"] for _, r in self._valid_records(handle) if r["status"] == "ok"}

    def named_files(self) -> dict[str, str]:
        """recorded_files() as of the last read_records() and what was appended since (`note`), without reading the
        records again; read here where nothing was read yet."""
        if self._named is None:
            return self.recorded_files()
        return {name: record["item_id"] for name, record in self._named.items()}

    def done_ids(self, records: dict[str, dict] | None = None) -> set[str]:
        """Items with a success record whose image is still there, as written (`_holds`)."""
        records = self.read_records() if records is None else records
        return {item_id for item_id, record in records.items() if self._intact(record)}

    def timed_records(self, identity: dict, records: dict[str, dict] | None = None) -> list[dict]:
        """The results that earlier runs with this pipeline identity made here, with their seconds: what `plan`
        estimates from (estimate.py)."""
        records = self.read_records() if records is None else records
        timed = [record for record in records.values() if record["status"] == "ok"]
        for key, value in identity.items():  # a field at a time: a generator per record costs more than the test
            timed = [record for record in timed if record.get(key) == value]
        return timed

    def finished_records(self, items, records: dict[str, dict] | None = None) -> dict[str, dict]:
        """Items done as planned, each with the record of its result: the latest success record naming the file
        the plan now gives the item, that file intact. A result in another format, before the job's `format`
        changed, is not one (the item is made again in the new format); the results of a format changed back,
        or an image restored by hand after `prune --rejected`, are, whatever was recorded since. `records` as
        the last read_records() gave them."""
        records = self.read_records() if records is None else records
        finished = {}
        for item in items:
            if item.item_id not in records:
                continue  # never recorded (of 100,000 items, most): its name is not even worked out
            record = self._result_named(item.item_id, item.output_name, records)
            if record is not None and self._intact(record):
                finished[item.item_id] = record
        return finished

    def _result_named(self, item_id: str, file_name: str, records: dict[str, dict]) -> dict | None:
        """The item's latest success record naming `file_name`: the one that says what that file holds."""
        latest = records.get(item_id)
        if latest is None or (latest["status"] == "ok" and latest["file_name"] == file_name):
            return latest  # nearly always: the latest record is the result
        if latest["status"] == "failed":
            # its latest outcome (an --overwrite that failed): failures.csv lists it, a run retries it; unless its
            # source is gone (archived once done): then the result it had stays its result
            return self._archived_result(latest, file_name)
        found = self._earlier.get(item_id, {}).get(file_name)
        if found is None and latest["status"] == "ok" and archived(latest):
            return latest  # the job's format or file_name changed since: it cannot be made again under the new one
        return found

    def _archived_result(self, failure: dict, file_name: str) -> dict | None:
        """For an item whose latest outcome is a failure: where its source file (or mask file) is gone since,
        the success record it had under `file_name` (none: its latest intact one, under the name the job gave it
        then). An archived item is done by its result alone, as it was before an --overwrite failed it: no run
        could make it again, so retrying it would fail it every time."""
        if not archived(failure):
            return None
        earlier = self._earlier.get(failure["item_id"], {})
        if file_name in earlier:
            return earlier[file_name]
        return next((record for record in reversed(earlier.values()) if self._intact(record)), None)

    def results_behind_failures(self, items, records: dict[str, dict]) -> dict[str, dict]:
        """Planned items whose latest outcome is a failure (an --overwrite that failed, a source gone since) while
        the result they had under their planned name is still there, intact: that result's record. A failed
        attempt takes no result away: metadata.csv keeps listing it, failures.csv the failure, a run retries it.
        Not an archived item's (its source gone): that result keeps it finished (`_archived_result`)."""
        behind = {}
        for item in items:
            latest = records.get(item.item_id, {})
            if latest.get("status") == "failed" and self._archived_result(latest, item.output_name) is None:
                earlier = self._earlier.get(item.item_id, {}).get(item.output_name)
                if earlier is not None and self._intact(earlier):
                    behind[item.item_id] = earlier
        return behind

    def finished_ids(self, items, records: dict[str, dict] | None = None) -> set[str]:
        return set(self.finished_records(items, records))

    def rejected_ids(self, items, records: dict[str, dict] | None = None, finished: set[str] | None = None) -> set[str]:
        """Planned items whose deleted result `prune --rejected` recorded as unwanted (runs skip them unless
        overwriting), less those finished again (`finished`, else found): an image put back is wanted after all."""
        records = self.read_records() if records is None else records
        marked = [item for item in items if (r := records.get(item.item_id)) is not None and r["status"] == "rejected"]
        finished = self.finished_ids(marked, records) if finished is None else finished
        return {item.item_id for item in marked} - finished

    def listed_ids(self, records: dict[str, dict], planned: set[str]) -> set[str]:
        """The items the CSVs list per supersede key (`records` as the last read_records() gave them): one the
        plan has (`planned`) first, so a source back to content made earlier lists that content's result, not
        the one recorded since; then the latest record, so a result made from changed content replaces the old
        row and a success after a failure is no longer a failure. A failure supersedes no result: the key's
        result stays listed beside it (a source changed into one that fails, or gone, takes no result away). A
        "pruned" record never supersedes: its result left the folder (and the old content's "pruned" mark,
        appended after the current item's result, must not hide it). A "rejected" one does: the user deleted
        that item's result, and no other result of the key is to stand in for it."""
        listed: dict[tuple, str] = {}
        results: dict[tuple, str] = {}  # the same, of records that are no failure
        candidates = (item_id for item_id, record in records.items() if record["status"] != "pruned")
        for item_id in sorted(candidates, key=lambda item_id: (item_id in planned, self._lines[item_id])):
            key = supersede_key(records[item_id])
            listed[key] = item_id  # the last one sorted wins
            if records[item_id]["status"] != "failed":
                results[key] = item_id
        return {*listed.values(), *results.values()}

    def _intact(self, record: dict) -> bool:
        if record["status"] != "ok":
            return False
        try:  # lstat on a string: a Path object (or os.path.join) per record costs more than the stat on 100k items
            found = os.lstat(self._prefix + record["file_name"])  # a bare name (valid_record): the folder's file
        except OSError:
            return False
        return stat.S_ISREG(found.st_mode) and self._holds(record, found)

    @contextlib.contextmanager
    def judged_unread(self):
        """Within it, a result whose modification time is not the one recorded, and whose sha256 was not worked out
        for the file as it is, is taken by its size alone (as a record without a sha256 is), nothing read or noted
        as verified: what `plan` and `run` ask of prune's decisions for their notes reads no result file."""
        self._unread = True
        try:
            yield
        finally:
            self._unread = False

    def _holds(self, record: dict, found: os.stat_result) -> bool:
        """Whether the file at a success record's name (`found`: its lstat) is the result recorded: its size, then
        its sha256 where it has not the modification time recorded as it was written (edited, or copied, touched,
        put back with a new one). A result untouched since is never read: a rerun of thousands of finished items
        reads none of them. Records of older versions, without the sha256, go by the size alone."""
        if found.st_size != record["bytes"]:
            return False
        digest = record.get(RESULT_SHA256)
        if digest is None or found.st_mtime_ns == record.get(RESULT_MTIME):
            return True
        if self._unread and _state(record["file_name"], found) not in self._hashed:
            return True
        if self._sha256(record["file_name"], found) != digest:
            return False
        self._verified[record["file_name"]] = (found.st_mtime_ns, digest)
        return True

    def _sha256(self, file_name: str, found: os.stat_result) -> str | None:
        """The file's sha256 (None: unreadable, or gone or no regular file meanwhile), read once per state of the
        file (`found`: a file changed since has another modification or change time)."""
        key = _state(file_name, found)
        if key not in self._hashed:
            digest = hashlib.sha256()
            try:
                with os.fdopen(job_files.open_file(self.folder / file_name, os.O_RDONLY), "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            except (OSError, OutputError):  # OutputError: no regular file there now
                return None
            self._hashed[key] = digest.hexdigest()
        return self._hashed[key]

    def stamped_again(self, records: dict[str, dict], finished: dict[str, dict]) -> list[dict]:
        """What to append so that no result found unchanged under a new modification time (`_holds`: copied,
        touched, synced without times) is read again, wherever it was checked (a planned item's, one no longer
        planned, one a failure came after): the success record naming it, with the time it has now, where it is
        still the item's result or its plan's (`finished`: a format changed back makes it that again); where a
        failure came after it, that failure again, carrying the new time (`VERIFIED_RESULT`), so it stays the
        item's outcome. One per file: appended (`note`), they say what is found now. `records`, `finished` as
        read_records() and finished_records() gave them."""
        again = []
        for name, (mtime, digest) in self._verified.items():
            record = self._named.get(name)
            if record is None or record.get(RESULT_SHA256) != digest or record.get(RESULT_MTIME) == mtime:
                continue
            item_id = record["item_id"]
            latest = records.get(item_id, {})
            if latest.get("status") == "failed" and self._earlier.get(item_id, {}).get(name) is record:
                # also an archived item's, finished by that result: a success appended would hide the failure
                # (its source back, a run would skip it instead of retrying it)
                stamp = {"file_name": name, RESULT_SHA256: digest, RESULT_MTIME: mtime}
                again.append({**latest, VERIFIED_RESULT: stamp})
            elif self._results.get(item_id) == name or finished.get(item_id, {}).get("file_name") == name:
                again.append({**record, RESULT_MTIME: mtime})
        return again

    def restamped(self, record: dict) -> dict:
        """`record` with the modification time its result has now, where its bytes were found to be the ones
        recorded under another (a folder copied, a file touched or put back): appended again, it spares later
        runs reading the file (`finish_pass`). Otherwise `record` itself."""
        mtime, digest = self._verified.get(record.get("file_name"), (None, None))
        if mtime is None or digest != record.get(RESULT_SHA256) or mtime == record.get(RESULT_MTIME):
            return record
        return {**record, RESULT_MTIME: mtime}


def _state(file_name: str, found: os.stat_result) -> tuple:
    """A file's state as its sha256 is kept by (`JobRecords._hashed`): a file changed since is another."""
    return (file_name, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


# Reading records.jsonl: a block of whole lines at a time, decoded at once, each line parsed by the JSON module's C
# scanner without json.loads's Python layers (a third of the time of reading 100,000 records); memory stays a block.
_BLOCK = 1 << 22
_SCAN = json.decoder.JSONDecoder().scan_once  # json.loads's own scanner and settings
_BLANK = " \t\n\r\x0b\x0c"  # what bytes.strip() strips: a line of other whitespace is not blank


def _lines(handle):
    """Each line of the binary file `handle` without its newline: as text, or as bytes for a block of lines that
    is not valid UTF-8 (each line then decoded on its own, so one bad line spoils only itself)."""
    pieces: list[bytes] = []  # the start of the next line, read in blocks (a planted line may be longer than one)
    while block := handle.read(_BLOCK):
        cut = block.rfind(b"\n") + 1
        if not cut:
            pieces.append(block)
            continue
        whole = b"".join([*pieces, block[:cut]]) if pieces else block[:cut]
        pieces = [block[cut:]]
        try:
            lines = whole.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = whole.split(b"\n")
        yield from lines[:-1]  # the last is empty: the block ends with a newline
    if rest := b"".join(pieces):
        yield rest  # the last line, cut short by a crash


def _parsed(line):
    """The line's JSON value, exactly as json.loads gives it; None for a line that is not one JSON value (cut
    short, not UTF-8, of planted bytes) or nested too deep."""
    if isinstance(line, str):
        try:
            record, end = _SCAN(line, 0)
            if end == len(line):
                return record  # as JSON lines are written: no space around the value
        except (StopIteration, ValueError, RecursionError):
            pass  # judged below, as json.loads judges it
    try:
        return json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except (ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON, or an int of over 4300 digits
        return None  # cut short mid-character or mid-line by a crash, or planted: nested too deep


def archived(record: dict) -> bool:
    """Whether the source file (or mask file) a record names is gone: its item can no longer be made, so its
    result, whatever the job now names it, is its result (README: an archived item stays done)."""
    return any(_gone_file(record.get(field)) for field in ("source", "mask"))


def _gone_file(path) -> bool:
    """A local file a record names (source or mask) that is not there now (a URL is never known gone)."""
    return isinstance(path, str) and os.path.isabs(path) and not os.path.exists(path)
