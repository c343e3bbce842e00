"""The records of job folders beside a run's own (in their output root, not jobs of the run), for what `plan` and
`run` tell a job without records of its own: items of a job renamed (`renamed_jobs`) and timings to estimate
from. Each folder's records read at most once, in name order, within a budget of bytes: an output root of many
large jobs is not read whole."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError
from .records import STATE_DIR, JobRecords

MAX_BYTES = 64 << 20  # records read in all, at most (about 60,000 results; their parsed records kept)


class Siblings:
    def __init__(self, own: set[Path], max_bytes: int = MAX_BYTES):
        self.own, self.budget = own, max_bytes
        self._read: dict[Path, list[tuple[Path, dict[str, dict]]]] = {}

    def records(self, parent: Path) -> list[tuple[Path, dict[str, dict]]]:
        """(folder, its results: item id -> the latest record, a success) for each job folder in `parent` that is
        not one of the run's."""
        if parent not in self._read:
            self._read[parent] = list(self._folders(parent))
        return self._read[parent]

    def _folders(self, parent: Path):
        try:
            entries = sorted(os.scandir(parent), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            folder = Path(entry.path)
            if folder in self.own or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                size = os.stat(folder / STATE_DIR / "records.jsonl", follow_symlinks=False).st_size
            except OSError:
                continue
            if size > self.budget:
                return
            self.budget -= size
            try:
                records = JobRecords(parent, entry.name).read_records()
                yield folder, {item_id: r for item_id, r in records.items() if r["status"] == "ok"}
            except OutputError:
                continue
