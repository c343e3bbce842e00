"""The pass that finishes a job folder (at the end of its run, in a rerun with nothing left to do, after `prune`):
one read of the records and one check of each result give the finished items; one put back by hand, or read and
found unchanged under another modification time, gets its record again; each gets its missing caption file and,
in a job keeping its sources, its missing kept copies; metadata.csv and failures.csv are rebuilt from the same
read.

The kept-copy repair stays cheap on a job of thousands of finished items run again: one listing of `sources/`
with each entry's size says which copies are there (an emptied one is not; none is opened or read), and the items
that could not get one (a URL, a source changed or gone) are remembered in `.batch-edit/uncopied.json` with their
inputs' stamp as planning saw them, so a rerun neither loads their sources again nor warns again until one of
those files changes. Said once, with where the list is: a warning repeated word for word at every run of a
finished job is one users learn to skip, and with it the next, new one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from . import job_files
from .errors import OutputError
from .formats import caption_name
from .kept_sources import FittedCopies, lacks_copies, whole_copies
from .plan import WorkItem
from .records import SOURCES_DIR, STATE_DIR
from .result_files import now
from .source_decoding import SourceError
from .source_identity import seen_again

if TYPE_CHECKING:
    from .outputs import JobOutput

log = logging.getLogger(__name__)

UNCOPIED = "uncopied.json"  # .batch-edit/uncopied.json: finished items that cannot get kept copies


def finish_files(output: JobOutput, plan: tuple[WorkItem, ...], copies: bool) -> tuple[int, int]:
    """Captions, then (`copies`) kept copies, then the CSVs, from one read of the records; last, the records of
    results found unchanged under a new modification time, wherever the pass (or the run before it) read them.
    Returns how many finished items got their missing caption file, and how many their missing kept copies."""
    records = output.read_records()
    finished = output.finished_records(plan, records)
    appended = record_restored(output, records, finished)
    # the time each result has now, also on the records of the copies written below
    finished.update({item_id: output.restamped(record) for item_id, record in finished.items()})
    done = [(item, finished[item.item_id]) for item in plan if item.item_id in finished]
    if seen := seen_again(output.in_written_order(records), done):  # sources back to content recorded before
        with output.appending():
            output.append_all(seen)
        appended += len(seen)
    captions = write_missing_captions(output, done)
    copied, appended_copies = write_missing_copies(output, done) if copies else (0, 0)
    appended += appended_copies
    # A record appended since the read is the item's latest line now, which decides the CSV rows of records that
    # supersede each other: read again then (only where copies were written or a result restored).
    output.rebuild_csvs(read=None if appended else (records, finished))
    record_verified(output, records, finished)
    return captions, copied


def record_restored(output: JobOutput, records: dict[str, dict], finished: dict[str, dict]) -> int:
    """Finished items whose result's record is appended again, as their latest: an image put back by hand from
    `.batch-edit/pruned/` though the item's latest record prunes or rejects it ("restored", as `prune` appends
    it), so deleting it later is a deletion like any other (rejected by `prune --rejected`), also where no prune
    ran in between; with the modification time it has now. Returns how many."""
    # not an archived item done despite a failure since (`_archived_result`): its result was never away
    put_back = [item_id for item_id in finished if records[item_id]["status"] not in ("ok", "failed")]
    if put_back:
        stamp = now()
        with output.appending():
            output.append_all([{**output.restamped(finished[i]), "restored_at": stamp} for i in put_back])
    return len(put_back)


def record_verified(output: JobOutput, records: dict[str, dict], finished: dict[str, dict]) -> int:
    """The results read and found unchanged under another modification time ("verified": copied, touched,
    synced without times), planned or not, or behind a failure, recorded again with the one they have now
    (`JobRecords.stamped_again`), all in one append: later runs compare that instead of reading them again.
    After the CSVs: what they list does not change. Returns how many."""
    again = output.stamped_again(records, finished)
    if again:
        stamp = now()
        with output.appending():
            output.append_all([{**record, "verified_at": stamp} for record in again])
    return len(again)


def write_missing_captions(output: JobOutput, done: list[tuple[WorkItem, dict]]) -> int:
    """A finished item of a job writing captions has its caption file: one missing (its image put back after
    `prune --rejected` moved the caption out, deleted by hand, `captions` turned on after the item was made, or a
    run killed between the result's record and its caption) is written from the item's prompt. A caption file
    there is never rewritten: it may be edited by hand. Returns how many were written."""
    written = 0
    for item, record in done:
        if not item.output.captions or caption_name(item.output_name) != caption_name(record["file_name"]):
            continue  # an archived item's result under the name the job gave it before: its caption is its own
        if job_files.lstat(output.folder / caption_name(item.output_name)) is None:
            output.write_caption(item)
            written += 1
    return written


def write_missing_copies(output: JobOutput, done: list[tuple[WorkItem, dict]]) -> tuple[int, int]:
    """A finished item of a job keeping its sources has its fitted source (and mask) under sources/: one made
    before `keep_sources` was turned on, or whose copy was deleted or emptied, gets it without rendering again
    (`kept_sources`), and a record naming it as a new result's would (appended: the same result, now with its
    copies). Returns how many items got their copies, and how many records were appended."""
    retry, uncopied = copies_to_write(output, done)
    copied = appended = 0
    if retry:
        fitted = FittedCopies()
        with output.appending():
            for item, record in retry:
                try:
                    fields, files = fitted.copies(item, record)
                except SourceError as exc:
                    uncopied.add(item, str(exc))
                    continue
                appended += output.keep_copies(record, fields, files)
                copied += 1
    uncopied.save()
    uncopied.say(output.folder.name)
    return copied, appended


def copies_to_write(output: JobOutput, done: list[tuple[WorkItem, dict]]) -> tuple[list, Uncopied]:
    """The finished items (with their records) lacking kept copies that a pass tries to copy: not those known
    from an earlier pass to have none to give, with the same source and mask files."""
    present = whole_copies(output.folder / SOURCES_DIR)
    lacking = [(item, record) for item, record in done if lacks_copies(item, record, present.__contains__)]
    uncopied = Uncopied(output.state)
    return [(item, record) for item, record in lacking if not uncopied.known_as_is(item)], uncopied


def copies_lacking(output: JobOutput, plan: tuple[WorkItem, ...], finished: dict[str, dict]) -> int:
    """For `plan`: how many of a job's finished items (`finished`: item id -> the record of its result) the next
    run gives their missing kept copies."""
    done = [(item, finished[item.item_id]) for item in plan if item.item_id in finished]
    return len(copies_to_write(output, done)[0])


def inputs_stamp(item: WorkItem) -> str:
    """The item's source and mask files as planning saw them (size and mtime; a URL is never fetched again here)."""
    refs = [item.source] + [item.mask] * (item.mask is not None)
    return " ".join("url" if ref.is_url else ref.stat or "gone" for ref in refs)


class Uncopied:
    """The finished items that could not get their kept copies, as `.batch-edit/uncopied.json` remembers them (item
    id -> source, why, inputs' stamp) and as this pass finds them: an item not lacking any more (made again, left
    the plan) is forgotten, one whose source or mask file changed is tried again."""

    def __init__(self, state: Path):
        self.path = state / UNCOPIED
        self.known = self._read()
        self.now: dict[str, dict] = {}

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(job_files.read_bytes(self.path).decode("utf-8"))
        except (OSError, ValueError):  # none yet, or damaged: every lacking item is tried (and said) again
            return {}
        return {key: entry for key, entry in data.items() if isinstance(entry, dict)} if isinstance(data, dict) else {}

    def known_as_is(self, item: WorkItem) -> bool:
        """Tried before with the same source and mask files: still without copies, not tried again."""
        entry = self.known.get(item.item_id)
        if entry is None or entry.get("inputs") != inputs_stamp(item):
            return False
        self.now[item.item_id] = entry
        return True

    def add(self, item: WorkItem, why: str) -> None:
        self.now[item.item_id] = {"source": item.source.key, "why": why, "inputs": inputs_stamp(item)}

    def save(self) -> None:
        if self.now == self.known:
            return
        try:
            if self.now:
                job_files.write_whole(self.path, json.dumps(self.now, ensure_ascii=False, indent=0).encode("utf-8"))
            else:
                job_files.remove_file(self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def say(self, job: str) -> None:
        """A warning where items are found without copies for the first time; after that, only with --verbose."""
        new = [entry for key, entry in self.now.items() if key not in self.known]
        listed = f"{STATE_DIR}/{UNCOPIED}"
        if new:
            log.warning(
                "job '%s': %d finished item(s) have no fitted copy under sources/ and cannot get one from their "
                "source (first: %s: %s); `run --overwrite` makes them again with their copies (%d in all, listed "
                "in %s; not said again)",
                job, len(new), new[0]["source"], new[0]["why"], len(self.now), listed,
            )  # fmt: skip
        elif self.now:
            log.info(
                "job '%s': %d finished item(s) still without kept copies (listed in %s)", job, len(self.now), listed
            )
