"""Jobs whose items were made in another job folder: a job without a record yet whose items' ids (they hash what
an item is made of: source content, prompt, parameters, seed, pipeline config; not the job's name) are recorded
as made in another folder beside its own, as after a job is renamed in its manifest. `plan` and `run` say so before
a run makes them all again; nothing is moved or copied."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError
from .records import STATE_DIR, JobRecords
from .validation import escaped

SAMPLE = 3  # items of a new job looked for in the other folders; a folder holding one of them is counted fully
MAX_BYTES = 256 << 20  # the records read in all, at most: an output root of many large jobs is not read whole


def renamed_notes(plans, read: dict) -> dict[str, str]:
    """Job name -> the note, for the jobs of `plans` with no record (`read`: job name -> (output, records)) whose
    items another folder beside theirs (not one of the run's jobs) records as made."""
    new = [plan for plan in plans if plan.items and not read[plan.name][1]]
    if not new:
        return {}
    own = {read[plan.name][0].folder for plan in plans}
    notes = {}
    budget = [MAX_BYTES]
    for parent in dict.fromkeys(read[plan.name][0].folder.parent for plan in new):
        here = [plan for plan in new if read[plan.name][0].folder.parent == parent]
        made = _made_in(parent, here, own, budget)
        for plan in here:
            if plan.name not in made:
                continue
            folder, count = made[plan.name]
            other = folder.name
            notes[plan.name] = (
                f"{count} of its {len(plan.items)} item(s) were made before in {escaped(folder)} (the same sources, "
                f"prompts, parameters, seeds and pipeline config): if job '{escaped(plan.name)}' was job "
                f"'{escaped(other)}' renamed, rename that folder to {escaped(read[plan.name][0].folder)} before the "
                "run to keep them; otherwise this run makes them again here"
            )
    return notes


def _made_in(parent: Path, plans, own: set[Path], budget: list[int]) -> dict:
    """Job name -> (the folder in `parent` recording the most of its items as made, how many)."""
    wanted = {item.item_id for plan in plans for item in plan.items[:SAMPLE]}
    found = {}
    try:
        entries = sorted(os.scandir(parent), key=lambda entry: entry.name)
    except OSError:
        return found
    for entry in entries:
        folder = Path(entry.path)
        if folder in own or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            size = os.stat(folder / STATE_DIR / "records.jsonl", follow_symlinks=False).st_size
        except OSError:
            continue
        if size > budget[0]:
            break
        budget[0] -= size
        try:
            made = {
                item_id for item_id, r in JobRecords(parent, entry.name).read_records().items() if r["status"] == "ok"
            }
        except OutputError:
            continue
        if wanted.isdisjoint(made):
            continue
        for plan in plans:
            count = sum(item.item_id in made for item in plan.items)
            if count and count > found.get(plan.name, (None, 0))[1]:
                found[plan.name] = (folder, count)
    return found
