"""What `plan` and `run` say, before anything runs, about results in a job folder that the plan no longer covers,
judged as `prune` judges them (`prune.would_prune`, `prune.other_config_results`: its decisions, without its locks,
nothing moved or recorded): results of items the plan no longer has, which stay until `prune` moves them out; a
folder whose every result was made with another pipeline config, whose items are all made again beside them (and
which `prune` refuses to empty); results deleted by hand, which a run makes again unless `prune --rejected` records
them as unwanted. A job with none of these (new, or unchanged since its last run) costs a pass over its records (none
where every item recorded is known done) and, for results not known to be done, one listing of its folder: prune's
decision, which looks at every result, is asked only where a note may apply, and reads no result file for them
(`judged_unread`: a touched result is taken by its size)."""

from __future__ import annotations

import os

from .validation import escaped

SHOWN = 3


def leftover_notes(
    plan, output, records: dict[str, dict], used: str, overwrite: bool = False, finished: dict | None = None
) -> list[str]:
    """The notes for one job: `plan` its JobPlan, `output` its JobOutput whose last read_records() gave `records`,
    `used` the hash of the pipeline config the run uses (`records.config_hash`). `finished`: the plan's finished
    items, as output.finished_records() gave them, where the caller knows them (their results are not looked at
    again). `overwrite`: every item runs, rejected or not, so results deleted by hand need no note."""
    if finished is not None and len(finished) == len(records):
        return []  # every item recorded is planned and done (`finished` holds only recorded items): nothing to note
    planned = {item.item_id for item in plan.items}
    unplanned = results_planned = False
    unsure = []  # the files of planned items' latest results not known to be done: deleted, maybe
    for item_id, record in records.items():
        if item_id not in planned:
            unplanned = unplanned or record["status"] in ("ok", "failed")  # a failure may have left a result
        elif record["status"] == "ok":
            results_planned = True
            if not overwrite and (finished is None or item_id not in finished):
                unsure.append(record["file_name"])
    # every result unplanned, and none made with this config: no other note applies
    if unplanned and not results_planned:
        from .prune import other_config_results

        if other := other_config_results(plan, output, records, used):
            count, made_with = other
            note = (
                f"all {count} result(s) in this folder were made with another pipeline config than this one, "
                f"{escaped(made_with)}: every item will be made again beside them (they stay; prune refuses to "
                "move them all out without --config-changed); a separate output_root or job name keeps the two apart"
            )
            return [note]
    if not (unplanned or _any_gone(output.folder, unsure)):
        return []
    from .prune import would_prune

    found = would_prune(output, plan, records, finished)
    notes = []
    # a result at the name a planned item writes: a run moves it out first, and name_notes says so
    names = {item.output_name for item in plan.items} if found.unplanned else set()
    if leftovers := [name for name in found.unplanned if name not in names]:
        notes.append(
            f"{len(leftovers)} result(s) of items the plan no longer has stay as they are ({_shown(leftovers)}; "
            "listed last in metadata.csv, without a position, until an item of the same source, prompt and "
            "parameters is made, which takes their row): `batch-edit prune "
            "MANIFEST...` (with this --pipeline) moves them to .batch-edit/pruned/"
        )
    # an archived item's (its source gone too) cannot be made again: `plan` lists its source as missing
    by_id = {item.item_id: item for item in plan.items} if found.rejected and not overwrite else {}
    here = [r for r in found.rejected if (item := by_id.get(r["item_id"])) and (item.source.stat or item.source.is_url)]
    if deleted := [record["file_name"] for record in here]:
        notes.append(
            f"{len(deleted)} result(s) deleted by hand will be made again ({_shown(deleted)}): "
            "`batch-edit prune --rejected MANIFEST...` records them as unwanted, so that runs skip them"
        )
    return notes


def _any_gone(folder, names: list[str]) -> bool:
    """Whether any of these files of the job folder is gone, as prune tests it (`os.path.exists`): the folder is
    listed once (a stat per result of a rerun's thousands costs more), and only a name not listed, or a link (its
    target may be gone), is looked at."""
    if not names:
        return False
    try:
        with os.scandir(folder) as entries:
            present = {entry.name for entry in entries if not entry.is_symlink()}
    except OSError:
        present = set()
    return any(name not in present and not os.path.exists(os.path.join(folder, name)) for name in names)


def _shown(names: list[str]) -> str:
    return ", ".join(escaped(name) for name in names[:SHOWN]) + (
        f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    )
