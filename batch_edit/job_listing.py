"""`metadata.csv` and `failures.csv`: their columns, and their rows rebuilt from the record listed per item (in
the current plan's order and positions), each CSV replaced atomically and only where it changes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from . import job_files
from .errors import OutputError
from .metadata_edits import WrittenMetadata, keep_if_edited
from .parameters import metadata_columns
from .plan import WorkItem
from .records import JobRecords
from .result_files import (
    KEPT_MASK_COLUMN,
    PARAMETER_COLUMNS,
    SOURCE_IMAGE_COLUMN,
    VARIATION_COLUMN,
    mask_cells,
    variation_columns,
)

# A masked job's columns: the mask parameters, then the mask's (`mask_cells`: the fitted mask kept under sources/,
# else `mask`, the mask file as given, as failures.csv names it).
MASK_COLUMNS = metadata_columns("mask")
ITEM_COLUMNS = ["item_id", "job", "index", "source", "prompt", *PARAMETER_COLUMNS]
PIPELINE_COLUMNS = ["model", "revision", "dtype", "quantization", "loras", "device", "pipeline_config"]
METADATA_COLUMNS = ["file_name", *ITEM_COLUMNS, *PIPELINE_COLUMNS, "batch_size", "seconds", "finished_at"]
FAILURE_COLUMNS = [*ITEM_COLUMNS, "stage", "error_type", "error", "failed_at"]
# Every column metadata.csv may have, in one job or another: a column outside them was added by hand.
WRITTEN_COLUMNS = {*METADATA_COLUMNS, "row", VARIATION_COLUMN, "task", SOURCE_IMAGE_COLUMN, *MASK_COLUMNS, "mask"}
WRITTEN_COLUMNS.add(KEPT_MASK_COLUMN)


class JobListing(JobRecords):
    """A job folder's CSVs, listing its results at their place in the current plan."""

    def __init__(self, root: Path, job: str):
        super().__init__(root, job)
        self._plan: tuple[WorkItem, ...] | None = None  # the current plan, whose positions metadata.csv shows
        self._keep_sources = False  # the job keeps its fitted sources (and masks) under sources/
        self.contact_sheets = True  # the job has its contact sheets drawn (`contact_sheets: false`: none)
        # file name -> the planned item whose result takes it, where another item's result has it now: from a run's
        # first such move to the job's end, no row lists another item's result under that name (`unlist_taken`)
        self._names_taken: dict[str, str] = {}

    def follow_plan(self, items: tuple[WorkItem, ...], keep_sources: bool = False, contact_sheets: bool = True) -> None:
        """List results at their position in the manifest as it is now (`index`, CSV `row`), not as recorded
        when each was made: a row inserted in a CSV renumbers the results below it. The job's own settings
        (masks, `keep_sources`) decide the columns, whatever its items' outcomes; `contact_sheets`, whether its
        sheets are drawn."""
        self._plan, self._keep_sources, self.contact_sheets = items, keep_sources, contact_sheets

    def rebuild_csvs(self, during_job: bool = False, read: tuple[dict, dict] | None = None) -> tuple[int, int]:
        """Rewrite metadata.csv and failures.csv from the records; returns (images, failures). Records of the
        same item apart from its source's content list one row (`listed_ids`), the current plan's first.
        Following a plan, failures.csv lists only the plan's items: a failure of an item no longer planned (its
        source deleted, its row removed) is in no run's count any more; its record stays. `read`: the records
        and the plan's finished ones, as the last read_records() and finished_records() gave them."""
        latest, finished = read or (self.read_records(), None)
        # a planned item's row is its finished result, also where a later record of it names another file
        finished = self.finished_records(self._plan or (), latest) if finished is None else finished
        # and where its latest outcome is a failure, the result it still has: listed with that failure
        behind = self.results_behind_failures(self._plan or (), latest)
        records = {**latest, **finished, **behind}
        planned = {item.item_id for item in self._plan or ()}
        current = self.listed_ids(records, planned)
        ordered = self._placed(sorted((r for i, r in records.items() if i in current), key=_manifest_order))
        # "none", not an empty cell: datasets would type an all-empty loras column as float64; a finished result
        # was found intact a moment ago, its file is not checked again
        intact = [r for r in ordered if r["item_id"] in finished or r["item_id"] in behind or self._intact(r)]
        if self._names_taken:  # a run moving other items' results out to write under their names
            intact = [r for r in intact if self._names_taken.get(r["file_name"], r["item_id"]) == r["item_id"]]
        done = [{**r, "loras": r.get("loras") or "none"} for r in intact]
        # an archived item done by its result despite a failure since (`_archived_result`) is no failure
        failures = [latest[i] for i in current if latest[i]["status"] == "failed" and i not in finished]
        failures = self._placed(sorted(failures, key=_manifest_order))
        failed = [r for r in failures if self._plan is None or r["item_id"] in planned]
        # Columns follow the job, not which of its items happen to have rows: a script reading a masked job's
        # failures.csv["mask"] or metadata.csv["task"] must not break because nothing failed, or nothing succeeded.
        masked_job = any(item.mask is not None for item in self._plan or ())
        # Only a job that keeps its sources gets the column, and only where no row would leave it empty (that
        # would break imagefolder): a result has a copy, or there is no result yet.
        paired = any(SOURCE_IMAGE_COLUMN in r for r in done) or (self._keep_sources and not done)
        rows = ["row"] * any("row" in r for r in ordered)  # CSV jobs: the manifest row each result came from
        rows += variation_columns(ordered, self._plan or ())  # jobs with `variations`: which one each item is
        done, mask = mask_cells(done)
        if mask is None and masked_job:  # no result yet: the column its results will have
            mask = KEPT_MASK_COLUMN if self._keep_sources and not done else "mask"
        masked = [*MASK_COLUMNS, mask] if mask else []
        # the pipeline task, where it is not img2img (every record of a run carries it, failures too)
        task = ["task"] * (masked_job or any(r.get("task") for r in ordered))
        columns = METADATA_COLUMNS + rows + task + [SOURCE_IMAGE_COLUMN] * paired + masked
        self._write_csv("metadata.csv", columns, done, during_job)
        failed_masks = [*MASK_COLUMNS, "mask"] * (masked_job or any("mask" in r for r in failed))
        self._write_csv("failures.csv", FAILURE_COLUMNS + rows + failed_masks, failed)
        return len(done), len(failed)

    def unlist_taken(self, items) -> None:
        """Rewrite metadata.csv without the rows of other items' results at the names `items` (a run's plan) will
        write, and keep them out of every rebuild until the job's end: a run killed after writing a new result
        under such a name (or after moving the earlier one out) leaves no row describing another item's image (or
        a missing one). Once per job, at its first such move: a run that moves nothing never pays it."""
        for item in items:
            record, _ = self.result_of(item.output_name)
            if record is not None and record["item_id"] != item.item_id:
                self._names_taken[item.output_name] = item.item_id
        self.rebuild_csvs(during_job=True)

    def _placed(self, ordered: list[dict]) -> list[dict]:
        """The records of planned items in plan order with their current positions and job name (a job renamed
        and its folder moved keeps its results); the others (not planned any more, until `prune` moves them out)
        after them, with no position: theirs was in a manifest that no longer has them, and now names another
        item's."""
        if self._plan is None:
            return ordered
        by_id = {record["item_id"]: record for record in ordered}
        placed = []
        for item in self._plan:
            record = by_id.pop(item.item_id, None)
            if record is not None:
                row = {} if item.row is None else {"row": item.row}
                # the plan's variation: records made before it was recorded lack it
                placed.append({**record, "job": item.job, "index": item.index, "variation": item.variation, **row})
        unplanned = [{**r, "index": None, **({"row": None} if "row" in r else {})} for r in by_id.values()]
        return placed + unplanned

    def _write_csv(self, name: str, columns: list[str], rows: list[dict], during_job: bool = False) -> None:
        """Replace the CSV atomically, unless it already holds these rows: its mtime then still says the contact
        sheets drawn from it are current. metadata.csv edited by hand is kept in a copy first."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode("utf-8")
        path = self.folder / name
        written = WrittenMetadata(self.state) if name == "metadata.csv" else None
        if job_files.holds(path, data):
            if written is not None:
                written.record(data, cells=not during_job)  # a folder from before digests starts being compared
            return
        if written is not None:
            keep_if_edited(path, written, WRITTEN_COLUMNS)
            written.record(data, cells=not during_job)  # before the replace: a stop between leaves either
        try:
            job_files.write_whole(path, data, sync=True)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _manifest_order(record: dict) -> tuple:
    """Plan order (CSV row, then grid order); records written before items carried an index keep theirs, last."""
    index = record.get("index")
    return (index is None, index or 0)
