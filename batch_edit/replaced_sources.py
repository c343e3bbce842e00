"""A reader's results made from another job's results that the run replaced: moved out as `prune` moves them.

A job reading another job's results (`job_chains`) gets new items, with new file names, when that job makes a
result again with new bytes (`run --overwrite`: a result's bytes record when it was made; a new item written
under the name of an earlier one): the item id hashes the source's content. Its results from what was replaced
would stay in its folder beside the new ones until `prune`. After each round of a run, the results this run
superseded move to `.batch-edit/pruned/` instead (`prune.move_out`: with their caption files, the kept copies
only they named, and "pruned" records, so the records, `metadata.csv` and a later `prune` agree):

- a result made from a file that a job of this run wrote again, from the content that file held when the run
  started, once the same item (`supersede_key`: same source path, prompt, parameters) made from the new content
  is written: a failure takes no result away;
- a result made from a file this run moved out of its job's folder so (a chain of three), as `prune` moves a
  reader's results edited from the ones it moves out.

Nothing else moves: a result made from a file the user replaced by hand, or from one a run before this one
replaced, stays until `prune`. A run stopped early (a signal, an unwritable folder) moves nothing after it."""

from __future__ import annotations

import os
from collections.abc import Callable

from .job_chains import real_path
from .prune import move_out
from .recording import finishing
from .records import supersede_key


class ReplacedSources:
    """The files of the run's job folders that the run's jobs read as sources: their content as the run started,
    which of them a job of the run wrote again, and which this run moved out."""

    def __init__(self, plans, folders: dict[str, str]):
        self.folders = folders  # job_chains.job_folders: real folder -> job name
        self.started: dict[str, str] = {}  # a job folder's file (its real path) -> its sha256 as the run started
        for item in (item for plan in plans for item in plan.items):
            if not item.source.is_url and len(item.source.fingerprint) == 64:
                path = real_path(item.source.key)  # the reader's spelling of the folder may be a link's
                if os.path.dirname(path) in folders:
                    self.started[path] = item.source.fingerprint
        self.written: set[str] = set()  # files the run's items were to write (a failure writes nothing new)
        self.moved_out: set[str] = set()  # results the run moved out of its job folders (`after_round`)

    def after_round(self, jobs: list[tuple], plans: dict) -> None:
        """After a round (`jobs`: summary, output, items), each of its jobs' results that this run superseded
        moved out, counted in its summary (`superseded`: per job whose results they were made from)."""
        named = {name: folder for folder, name in self.folders.items()}
        for summary, _, items in jobs:
            paths = (os.path.join(named[summary.name], item.output_name) for item in items)
            self.written.update(path for path in paths if path in self.started)
        for summary, output, _ in jobs:
            if self._reads_replaced(plans[summary.name]):
                self._move_out(summary, output, plans[summary.name], named[summary.name])

    def _move_out(self, summary, output, plan, folder: str) -> None:
        moved = move_out(output, plan, self._picker)
        for record in moved:
            self.moved_out.add(os.path.join(folder, record["file_name"]))
            maker = self.folders[os.path.dirname(real_path(record["source"]))]
            summary.superseded[maker] = summary.superseded.get(maker, 0) + 1
        if moved:  # results no longer planned are listed last until they leave: the CSVs, then the sheets
            finishing(summary, lambda: (output.rebuild_csvs(), output.write_sheets_if_stale()))

    def _reads_replaced(self, plan) -> bool:
        """Whether the plan reads a job folder holding a source that this run wrote again or moved out."""
        changed = {os.path.dirname(path) for path in self.written | (self.moved_out & self.started.keys())}
        return bool(changed) and any(
            not item.source.is_url and os.path.dirname(real_path(item.source.key)) in changed for item in plan.items
        )

    def _picker(self, finished: dict[str, dict]) -> Callable[[dict], bool]:
        """Whether the run superseded a result (of an item no longer planned): made from a job folder's file as
        it was when the run started, which the run moved out, or wrote again while the same item's result from
        the new content is written (`finished`: the records of the plan's finished items)."""
        remade = {(supersede_key(record), record.get("source_sha256")) for record in finished.values()}
        keys = {key for key, _ in remade}

        def picks(record: dict) -> bool:
            source, made_from = record.get("source"), record.get("source_sha256")
            if not isinstance(source, str) or not made_from:
                return False
            path = real_path(source)
            if self.started.get(path) != made_from:
                return False
            if path in self.moved_out:
                return True
            key = supersede_key(record)
            return path in self.written and key in keys and (key, made_from) not in remade

        return picks
