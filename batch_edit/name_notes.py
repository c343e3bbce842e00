"""What `plan` and `run` say, before anything runs, about results whose name is not the one the plan gives their
item: archived items (their source gone) keeping their result under the name or format the job gave it before,
done items made again only because the job's `file_name` or `format` changed, and earlier results that pending
items (a `file_name` without {id}) will move to `.batch-edit/pruned/` to take their names; and done items kept at
the JPEG or WebP quality they were written at where the job now gives another; items planned again whose result
`prune` moved to `.batch-edit/pruned/`, with the move that brings it back."""

from __future__ import annotations

import os
import shlex
from pathlib import PurePath

from .formats import DEFAULT_QUALITY, caption_name
from .outputs import PRUNED_DIR
from .source_identity import renamed_away
from .validation import escaped

SHOWN = 3


def name_notes(items, output, records: dict[str, dict], overwrite: bool = False) -> list[str]:
    """The notes for one job: `items` its plan's, `output` its JobOutput whose last read_records() gave
    `records` (`overwrite`: every item runs, so none is made again for its new name alone). Only the few items
    that may need a note are checked for being done: a rerun with nothing of the kind reads no result."""
    notes = []
    gone, moved, taking = [], [], []  # the items each note may concern
    for item in items:
        name, latest = item.output_name, records.get(item.item_id)
        if latest is not None and (latest["status"] != "ok" or latest["file_name"] != name):
            if not item.source.stat and not item.source.is_url:
                gone.append(item)  # no file found when planned: archived, maybe
            elif latest["status"] == "ok":
                moved.append(item)
        held, _ = output.result_of(name)
        if held is not None and held["item_id"] != item.item_id:
            taking.append(item)
    finished = output.finished_records(gone, records)
    kept = [r["file_name"] for item in gone if (r := finished.get(item.item_id)) and r["file_name"] != item.output_name]
    if kept:
        names = ", ".join(escaped(name) for name in kept[:SHOWN]) + (" ..." if len(kept) > SHOWN else "")
        notes.append(
            f"{len(kept)} archived item(s) keep their result under the name or format the job gave it before "
            f"({names}): their source is gone, so no run can make them again as the job now names them"
        )
    if note := _renamed_note(items, output, records):
        notes.append(note)
    notes += [] if overwrite else _made_again_notes(moved, output, records)
    if not overwrite and (note := _quality_note(items, output, records)):
        notes.append(note)
    if not overwrite and (note := _pruned_note(items, output, records)):
        notes.append(note)
    if not overwrite:
        done = output.finished_ids(taking, records)
        skipped = done | output.rejected_ids(taking, records, done)
        taking = [item for item in taking if item.item_id not in skipped]
    if taken := names_taken(output, taking):
        shown = ", ".join(escaped(name) for name in taken[:SHOWN]) + (" ..." if len(taken) > SHOWN else "")
        notes.append(
            f"{len(taken)} earlier result(s) of other items (with any caption files) will move to "
            f".batch-edit/pruned/ before new results are written under their names: {shown}"
        )
    return notes


def _renamed_note(items, output, records: dict[str, dict]) -> str | None:
    """Results of files a folder or glob no longer finds that a file it finds now duplicates (`renamed_away`)."""
    listed = [item for item in items if item.source.listed_gone]
    if not listed:
        return None
    contents = {item.source.fingerprint for item in listed}
    candidates = [item for item in items if item.source.fingerprint in contents]
    renamed = renamed_away(candidates, output.finished_ids(candidates, records))
    if not renamed:
        return None
    by_id = {item.item_id: item for item in listed}
    first, to = next(iter(renamed.items()))
    return (
        f"{len(renamed)} result(s) of files the job's folder or glob no longer finds duplicate results made since "
        f"from the same image at another path (e.g. {escaped(by_id[first].source.key)} renamed to {escaped(to)}): "
        "`prune` moves them out"
    )


def _made_again_notes(moved, output, records: dict[str, dict]) -> list[str]:
    """Items whose latest result is intact under a name the plan no longer gives them (a new `file_name` or
    `format`), not done under the planned one: a run makes them again."""
    done = output.finished_ids(moved, records)
    moved = [item for item in moved if item.item_id not in done]
    intact = output.done_ids({item.item_id: records[item.item_id] for item in moved})
    pairs = [(records[item.item_id]["file_name"], item.output_name) for item in moved if item.item_id in intact]
    renamed = [(old, new) for old, new in pairs if _stem(old) != _stem(new)]
    reformatted = [(old, new) for old, new in pairs if _stem(old) == _stem(new)]
    notes = []
    if renamed:
        notes.append(
            f"{len(renamed)} done item(s) will be made again only because the job's file_name now names them "
            f"otherwise ({_shown(renamed)}): the same items (id, seed, parameters); `prune` then moves the "
            "results under the old names out"
        )
    if reformatted:
        notes.append(
            f"{len(reformatted)} done item(s) will be made again in the job's new format ({_shown(reformatted)}); "
            "`prune` then moves the results in the old format out"
        )
    return notes


def _quality_note(items, output, records: dict[str, dict]) -> str | None:
    """Done items whose result was encoded at another `quality` than the job now gives (JPEG, WebP): quality is
    not part of an item, so they stay done as written; only `--overwrite` writes them again."""
    other = [
        item
        for item in items
        if (r := records.get(item.item_id)) is not None
        and r["status"] == "ok"
        and r["file_name"] == item.output_name
        and _quality(item.output.format, r.get("quality")) != _quality(item.output.format, item.output.quality)
    ]
    if not other:
        return None
    done = output.finished_ids(other, records)
    other = [item for item in other if item.item_id in done]
    if not other:
        return None
    was = sorted({_quality(item.output.format, records[item.item_id].get("quality")) for item in other})
    now = _quality(other[0].output.format, other[0].output.quality)
    return (
        f"{len(other)} done item(s) keep the quality their result was written at ({', '.join(map(str, was))}; the "
        f"job now gives {now}): quality is not part of an item, so a run leaves them; `run --overwrite` makes the "
        "job's items again at the new quality"
    )


def _pruned_note(items, output, records: dict[str, dict]) -> str | None:
    """Items planned again (a prompt put back in the manifest) whose result `prune` moved to .batch-edit/pruned/
    when the plan no longer had them: still there, at its recorded size, and nothing at its name in the job
    folder. Moved back by hand, it is done (JobRecords: an image restored); a run makes it again otherwise."""
    back = []
    for item in items:
        record = records.get(item.item_id)
        if record is None or record["status"] != "pruned" or record.get("file_name") != item.output_name:
            continue
        moved = record.get("pruned_to")
        if not isinstance(moved, str) or not moved.startswith(PRUNED_DIR + "/") or ".." in PurePath(moved).parts:
            continue
        try:
            if os.lstat(os.path.join(output.folder, moved)).st_size != record.get("bytes"):
                continue
        except OSError:
            continue
        if not os.path.lexists(os.path.join(output.folder, item.output_name)):
            back.append((moved, item.output_name))
    if not back:
        return None
    first, name = back[0]
    move = f"mv {shlex.quote(str(output.folder / first))} {shlex.quote(str(output.folder / name))}"
    return (
        f"{len(back)} item(s) to make have their earlier result in .batch-edit/pruned/ (`prune` moved it out when the "
        f"plan no longer had them): moved back under its name, each is done and not made again "
        f"(e.g. {escaped(move)})"
    )


def _quality(format: str, quality) -> int | None:
    """The quality a result is encoded at: None for PNG, the default where a JPEG or WebP job gives none."""
    return None if format == "png" else quality if isinstance(quality, int) else DEFAULT_QUALITY


def names_taken(output, pending) -> list[str]:
    """The files that results of other items hold under names pending items will write (a `file_name` without
    {id}: a source's new content, a prompt inserted in a list): a run moves each to .batch-edit/pruned/ first."""
    taken = []
    for item in pending:
        record, _ = output.result_of(item.output_name)
        if record is not None and record["item_id"] != item.item_id:
            if os.path.lexists(os.path.join(output.folder, item.output_name)):
                taken.append(item.output_name)
    return taken


def moved_earlier_line(job: str, moved: list[tuple[str, str]], shown: int = 5) -> str:
    """The run summary's line for the earlier results (and captions) a job moved out to take their names."""
    images = [(name, to) for name, to in moved if name != caption_name(name)]
    captions = len(moved) - len(images)
    names = [escaped(n) + ("" if n == to else f" (as {escaped(to)})") for n, to in images[:shown]]
    more = f" and {len(images) - shown} more" if len(images) > shown else ""
    with_captions = f" and {captions} caption file(s)" if captions else ""
    return (
        f"job {escaped(job)}: moved {len(images)} earlier result(s) of other items{with_captions} to .batch-edit/pruned/ "
        f"before writing new results under their names: {', '.join(names)}{more}"
    )


def _stem(name: str) -> str:
    return PurePath(name).stem


def _shown(pairs: list[tuple[str, str]]) -> str:
    first = ", ".join(f"{escaped(old)} -> {escaped(new)}" for old, new in pairs[:SHOWN])
    return first + (f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else "")
