"""What `plan` and `run` say, before anything runs, about results whose name is not the one the plan gives their
item: archived items (their source gone) keeping their result under the name or format the job gave it before,
done items made again only because the job's `file_name` or `format` changed, and earlier results that pending
items (a `file_name` without {id}) will move to `.batch-edit/pruned/` to take their names."""

from __future__ import annotations

import os
from pathlib import PurePath

from .formats import caption_name
from .source_identity import renamed_away
from .validation import escaped

SHOWN = 3


def name_notes(items, output, records: dict[str, dict], done: set[str], pending, overwrite: bool = False) -> list[str]:
    """The notes for one job: `items` its plan's, `output` its JobOutput whose last read_records() gave
    `records`, `done` the ids finished_records() gives, `pending` the items a run would make (`overwrite`: all,
    so none is made again for its new name alone)."""
    notes = []
    odd = [  # archived (no file found when planned) and finished by a record under another name: few, if any
        item
        for item in items
        if not item.source.stat
        and not item.source.is_url
        and item.item_id in done
        and ((r := records[item.item_id])["status"] != "ok" or r["file_name"] != item.output_name)
    ]
    finished = output.finished_records(odd, records)
    kept = [(r["file_name"], item.output_name) for item in odd if (r := finished.get(item.item_id)) is not None]
    kept = [(old, new) for old, new in kept if old != new]
    if kept:
        names = ", ".join(escaped(old) for old, _ in kept[:SHOWN]) + (" ..." if len(kept) > SHOWN else "")
        notes.append(
            f"{len(kept)} archived item(s) keep their result under the name or format the job gave it before "
            f"({names}): their source is gone, so no run can make them again as the job now names them"
        )
    if renamed := renamed_away(items, done):
        item_ids = {item.item_id: item for item in items}
        first, to = next(iter(renamed.items()))
        notes.append(
            f"{len(renamed)} result(s) of files the job's folder or glob no longer finds duplicate results made since "
            f"from the same image at another path (e.g. {escaped(item_ids[first].source.key)} renamed to "
            f"{escaped(to)}): `prune` moves them out"
        )
    wanted = set() if overwrite else {item.item_id for item in pending}
    earlier = {
        item.item_id: (latest["file_name"], item.output_name)
        for item in items
        if item.item_id in wanted and (latest := records.get(item.item_id)) is not None
        if latest["status"] == "ok" and latest["file_name"] != item.output_name
    }
    intact = output.done_ids({item_id: records[item_id] for item_id in earlier})
    renamed = [pair for item_id, pair in earlier.items() if item_id in intact and _stem(pair[0]) != _stem(pair[1])]
    reformatted = [pair for item_id, pair in earlier.items() if item_id in intact and pair not in renamed]
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
    if taken := names_taken(output, pending):
        shown = ", ".join(escaped(name) for name in taken[:SHOWN]) + (" ..." if len(taken) > SHOWN else "")
        notes.append(
            f"{len(taken)} earlier result(s) of other items (with any caption files) will move to "
            f".batch-edit/pruned/ before new results are written under their names: {shown}"
        )
    return notes


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
