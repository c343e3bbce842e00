"""Jobs whose items were made in another job folder: a job without a record yet whose items' ids (they hash what
an item is made of: source content, prompt, parameters, seed, pipeline config; not the job's name) are recorded
as made in another folder beside its own, as after a job is renamed in its manifest. `plan` and `run` say so before
a run makes them all again; nothing is moved or copied."""

from __future__ import annotations

from .sibling_folders import Siblings
from .validation import escaped

SAMPLE = 3  # items of a new job looked for in the other folders; a folder holding one of them is counted fully


def renamed_notes(plans, read: dict, siblings: Siblings | None = None) -> dict[str, str]:
    """Job name -> the note, for the jobs of `plans` with no record (`read`: job name -> (output, records)) whose
    items another folder beside theirs (not one of the run's jobs) records as made."""
    new = [plan for plan in plans if plan.items and not read[plan.name][1]]
    if not new:
        return {}
    siblings = siblings or Siblings({read[plan.name][0].folder for plan in plans})
    notes = {}
    for plan in new:
        folder = read[plan.name][0].folder
        found = _made_in(siblings.records(folder.parent), plan)
        if found is None:
            continue
        other, count = found
        notes[plan.name] = (
            f"{count} of its {len(plan.items)} item(s) were made before in {escaped(other)} (the same sources, "
            f"prompts, parameters, seeds and pipeline config): if job '{escaped(plan.name)}' was job "
            f"'{escaped(other.name)}' renamed, rename that folder to {escaped(folder)} before the run to keep them; "
            "otherwise this run makes them again here"
        )
    return notes


def _made_in(folders, plan):
    """(the folder recording the most of the plan's items as made, how many), or None."""
    wanted = {item.item_id for item in plan.items[:SAMPLE]}
    best = None
    for folder, records in folders:
        if wanted.isdisjoint(records):
            continue
        count = sum(1 for item in plan.items if item.item_id in records)
        if best is None or count > best[1]:
            best = (folder, count)
    return best
