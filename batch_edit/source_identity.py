"""Source identity by content: a local source's `fingerprint` is the sha256 of its bytes, part of every item id.

Hashing every source on every plan would read a whole dataset each time, so the records keep, per source,
the cheap `stat` (size and mtime) seen when it was hashed: a source whose path and stat match a record reuses
that hash, and anything else is read and hashed again. `touch` on an unchanged file thus costs one read (the run that reads it records its new stat) and
changes no id; changed content always gets new ids. An id hashes the source's path as well: moved sources make
new items (`moved_sources_note` says so where the records show it). A source that is gone (deleted or archived
once its items were done) keeps the content it held when last seen at its path, so its finished items keep their
ids: done, listed and kept by `prune`, not failed again as new items (one a folder or glob found: gone_sources).
"Last seen" is the newest of the recorded mtimes, or of the times a file was seen again holding content recorded
before (`seen_again`: one record appended by the run that sees it so, none once the records agree). So does a mask that is gone: a mask file named as such
keeps its path; one a folder or glob paired by stem (and now finds none for its source, the folder emptied or removed
too) becomes again the mask recorded last with that source under that folder with that stem, its file gone too. A
job left with no mask for any source is refused: each of its items would fail. A path is hashed as written
(links not resolved: a link's name is its stem), but one in a folder the records reach by another path (a link to
the folder, or the working folder's physical path) takes the path recorded, so a rerun through either is no move.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import stat
import time
from dataclasses import replace
from pathlib import PurePosixPath

from .errors import ManifestError
from .gone_captions import with_gone_captions
from .gone_sources import MADE_FROM, with_gone_sources
from .manifest import JobSpec
from .masks import recorded_literal, searched_folder, unpaired_mask
from .parameters import axes
from .sources import FILE_NOT_FOUND, SOURCE_CHANGED, SourceRef

# The parameters a record holds as asked (the seed aside, and those of masks: a moved source keeps its mask)
_COMPARED = tuple(p for p in axes() if p.name != "seed" and p.needs is None)
# (source path, MASKED_WITH + mask path) -> sha256: a mask recorded with a source (no stat starts so)
MASKED_WITH = "mask "
# A record's field (source_seen_ns, mask_seen_ns): when its source (mask) was seen again holding the content the
# record names, after other content was recorded at that path; orders it after every content recorded before
SEEN_AGAIN = "seen_ns"


def recorded_hashes(records) -> dict[tuple[str, str], str]:
    """(source path, stat) -> sha256, from the records of earlier runs (`records` in the order they were written:
    JobRecords.in_written_order); and (source path, "") -> the sha256 of the content last seen there (the newest
    mtime recorded, or time seen again (SEEN_AGAIN); a record made while it was gone, with no stat, last), for a
    source that is gone now (a failure finding other bytes than planned under a stat drops that stat: read again).
    Masks alike, and (source path, MASKED_WITH + mask path) for each mask recorded with a
    source, the one recorded last last; and (source path, MADE_FROM) for each source a result was made from (or
    an item failed as not found, planned from its content recorded)."""
    known, newest, masked = {}, {}, {}
    for record in records:
        source, mask, sha = record.get("source"), record.get("mask"), record.get("mask_sha256")
        if isinstance(source, str) and (record.get("status") == "ok" or _failed_gone(record)):
            known[(source, MADE_FROM)] = ""
        if isinstance(source, str) and isinstance(mask, str) and isinstance(sha, str):
            masked.pop((source, MASKED_WITH + mask), None)
            masked[(source, MASKED_WITH + mask)] = sha
    kinds = [(kind, f"{kind}_stat", f"{kind}_sha256", f"{kind}_{SEEN_AGAIN}") for kind in ("source", "mask")]
    mtimes: dict[str, int] = {}  # stat -> its mtime (the records of a source's items repeat its stat)
    for record, (kind, stat_field, sha_field, again_field) in itertools.product(records, kinds):
        key, seen, sha = record.get(kind), record.get(stat_field), record.get(sha_field)
        if not (isinstance(key, str) and isinstance(seen, str) and isinstance(sha, str) and len(sha) == 64):
            continue
        if _changed_under(record, kind):  # read as other content under this stat: not to be trusted, read again
            known.pop((key, seen), None)
            continue
        if seen:
            known[(key, seen)] = sha
        mtime = mtimes.get(seen)
        if mtime is None:
            mtime = seen.rpartition("-")[2]
            mtime = mtimes[seen] = int(mtime) if mtime.isdigit() else -1
        again = record.get(again_field)  # seen with this content then: later than any mtime before
        mtime = max(mtime, again) if type(again) is int else mtime
        if mtime >= newest.get(key, (-1, ""))[0]:
            newest[key] = (mtime, sha)
    return {**known, **{(key, ""): sha for key, (_, sha) in newest.items()}, **masked}


def _changed_under(record: dict, kind: str) -> bool:
    """A failure of an item whose source (`kind` "source") or mask held other bytes when loaded than the ones
    planned under the stat the record holds (changed in place with its size and mtime kept, or replaced mid-run)."""
    error = record.get("error")
    prefix = SOURCE_CHANGED if kind == "source" else f"mask: {SOURCE_CHANGED}"
    return record.get("status") == "failed" and isinstance(error, str) and error.startswith(prefix)


def _failed_gone(record: dict) -> bool:
    """A failure of an item planned from the content recorded for its source, not found then (gone, and given
    back as it was: made again with --overwrite, or newly planned): the source is still one the job keeps."""
    error, sha = record.get("error"), record.get("source_sha256")
    failed = record.get("status") == "failed" and isinstance(error, str) and error.startswith(f"{FILE_NOT_FOUND}:")
    return failed and isinstance(sha, str) and len(sha) == 64


def seen_again(records, done) -> list[dict]:
    """What to append so that a source (or mask) found holding content other than the one recorded last at its
    path (put back as it was before a change: copied back, restored from a backup, with its old time or a new
    one) keeps that content once it is gone: for each such file, the record of one finished item made from what it
    holds now, with its stat now and the time it was seen so (`SEEN_AGAIN`). `records`: the job's, in written
    order; `done`: (item, its finished record) of the plan. Also a file planning read and found holding the
    content recorded under another stat (touched, copied, synced): one record with its stat now, so later plans
    reuse the hash instead of reading it again. Nothing where the records already agree (a rerun of an
    unchanged tree writes nothing), and nothing is read: the plan's items carry what planning found."""
    recorded = recorded_hashes(records)
    last = {key: sha for (key, seen), sha in recorded.items() if not seen}
    # stats under which a load found other bytes than the item's (changed in place): the next plan reads them
    changed = {
        (record.get(kind), record.get(f"{kind}_stat")) for record in records for kind in ("source", "mask")
        if _changed_under(record, kind)
    }  # fmt: skip
    handled, again = set(), []
    for item, record in done:
        fields = {}
        for kind, ref in (("source", item.source), ("mask", item.mask)):
            if ref is None or ref.is_url or not ref.stat or len(ref.fingerprint) != 64 or ref.key in handled:
                continue
            if record.get(f"{kind}_sha256") != ref.fingerprint:
                continue
            if last.get(ref.key, ref.fingerprint) != ref.fingerprint:
                fields.update({f"{kind}_stat": ref.stat, f"{kind}_{SEEN_AGAIN}": time.time_ns()})
                handled.add(ref.key)
            elif (ref.key, ref.stat) not in recorded and (
                ref.key,
                ref.stat,
            ) not in changed:  # read and found unchanged under a new stat (touched, copied)
                fields[f"{kind}_stat"] = ref.stat  # recorded once: later plans do not read it again
                handled.add(ref.key)
        if fields:
            again.append({**record, **fields})
    return again


def identify_sources(
    jobs: list[JobSpec], known: dict[tuple[str, str], str], by_job: dict[str, list[dict]] | None = None
) -> list[JobSpec]:
    """The jobs with every existing local source's (and mask's) fingerprint set to its content hash. ManifestError
    for a job none of whose sources has a mask (none there, none given back): each of its items would fail.
    `known`: recorded_hashes that hold for every job; `by_job`: job name -> that job's own records, in written
    order (a source gone with its caption file takes the caption its items were made with from them:
    gone_captions). A job's history (the files it made results from, the content last seen at a path, the masks paired
    with a source) is its own: another job's records never add a gone source to it nor change what it last saw.
    Only the (path, stat) -> sha256 pairs, which say what a file holds, serve every job."""
    records = by_job or {}
    by_job = {name: recorded_hashes(job_records) for name, job_records in records.items()}
    histories = [known, *by_job.values()]  # what a file holds: any job's records say it
    identified: dict[SourceRef, SourceRef] = {}

    def identify(ref: SourceRef, known: dict) -> SourceRef:
        if ref.is_url:
            return ref  # a URL's content is only known once downloaded
        if not ref.stat:  # gone (archived after its items were done): their ids, so their results stay theirs
            gone = known.get((ref.key, ""))  # its items still fail when loaded, where they run at all
            return replace(ref, fingerprint=gone) if gone else ref
        if ref not in identified:
            pair = (ref.key, ref.stat)  # a stat is never "", MADE_FROM or MASKED_WITH...: only these pairs match
            sha = known.get(pair) or next((h[pair] for h in histories if pair in h), None)
            seen, sha = (ref.stat, sha) if sha else file_identity(ref.key)
            identified[ref] = replace(ref, stat=seen, fingerprint=sha) if sha else ref
        return identified[ref]

    problems = []
    identified_jobs = []
    for job in jobs:
        history = ({**known, **by_job[job.name]} if known else by_job[job.name]) if job.name in by_job else known
        done = _identified_job(job, history, identify, problems)
        if job.name in records:
            done = replace(done, grids=tuple(with_gone_captions(grid, records[job.name]) for grid in done.grids))
        identified_jobs.append(done)
    if problems := problems or [problem for job in identified_jobs for problem in _maskless(job)]:
        raise ManifestError(problems)
    return identified_jobs


def _identified_job(job: JobSpec, known: dict, identify, problems: list[str]) -> JobSpec:
    """One job's grids identified from its own history `known` (identify_sources)."""

    masks_recorded = functools.cache(lambda: _masks_recorded_with(known))  # once a folder or glob finds no mask
    spelled = _RecordedSpelling(known)

    def identify_mask(source: SourceRef, mask: SourceRef) -> SourceRef:
        mask = spelled(recorded_literal(mask, known))
        if searched_folder(mask) is not None:
            mask = _gone_mask(mask, masks_recorded().get(source.key, []))
        return identify(mask, known)

    def identified_grid(grid):
        grid, gone = with_gone_sources(grid, known, masks_recorded)
        problems.extend(f"{job.origin}: {problem}" for problem in gone)
        sources = tuple(map(spelled, grid.sources))
        masks = _in_removed_folder(grid, sources, known, masks_recorded) if grid.masks else ()
        masks = tuple(identify_mask(source, mask) for source, mask in zip(sources, masks))
        return replace(grid, sources=tuple(identify(source, known) for source in sources), masks=masks)

    return replace(job, grids=tuple(identified_grid(grid) for grid in job.grids))


def _in_removed_folder(grid, sources, known: dict, masks_recorded) -> tuple[SourceRef, ...]:
    """A YAML job's masks as one file for every source that is not there and has no content recorded: where the
    records show masks of these sources inside a folder at that path, the spec named that folder (removed since
    its items were done), and each source's mask is looked for there (`_gone_mask`)."""
    first = grid.masks[0]
    if grid.row is not None or first.is_url or os.path.lexists(first.key) or (first.key, "") in known:
        return grid.masks
    inside, recorded = f"{first.key}/", masks_recorded()
    if any(mask != first for mask in grid.masks) or not any(
        path.startswith(inside) for source in sources for path in recorded.get(source.key, ())
    ):
        return grid.masks
    return tuple(unpaired_mask(first.key, source.stem) for source in sources)


def _maskless(job: JobSpec) -> list[str]:
    """A YAML job's grid none of whose sources has a mask, none there and none given back (a folder or glob
    finding none, a template or file naming none): nothing of it could be made. A grid reading a job folder with
    no results yet is judged once they are listed."""
    problems = []
    for grid in job.grids:
        if grid.row is not None or not grid.masks or any(source.job_folder for source in grid.sources):
            continue
        if any(_has_mask(mask) for mask in grid.masks):
            continue
        looked = list(dict.fromkeys(mask.key for mask in grid.masks))
        shown = ", ".join(looked[:3]) + (f" and {len(looked) - 3} more" if len(looked) > 3 else "")
        problems.append(
            f"{job.origin}: field 'masks': none of its {len(grid.sources)} source(s) has a mask (looked for "
            f"{shown}), so each of its items would fail: give the masks, or a spec that finds them (a mask "
            "deleted once its items were done is given back for those items only)"
        )
    return problems


def _has_mask(mask: SourceRef) -> bool:
    """A URL, a file that is there, or one gone whose content the records keep (its finished items stay done)."""
    return mask.is_url or os.path.exists(mask.key) or len(mask.fingerprint) == 64


def _gone_mask(mask: SourceRef, recorded: list[str]) -> SourceRef:
    """A mask a folder or glob found none for: of the masks `recorded` with its source (the last recorded last), the
    last that it would have paired (under the folder it looked in, with the stem it looked for) whose file is gone
    (deleted or archived once its items were done), so the source's finished items keep their ids; else itself."""
    folder = searched_folder(mask)
    for path in reversed(recorded):
        if PurePosixPath(path).stem == mask.stem and _inside(path, folder) and not os.path.lexists(path):
            return replace(mask, key=path)  # gone: `identify` gives it the content last recorded there
    return mask


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is under `folder`, as spelled or where both really are (the records may spell the folder
    through a link); a folder that is gone is compared as spelled."""
    if path.startswith(f"{folder}/"):
        return True
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)
    except ValueError:
        return False


def _masks_recorded_with(known: dict[tuple[str, str], str]) -> dict[str, list[str]]:
    """Source path -> the masks recorded with it, the last recorded last."""
    paired: dict[str, list[str]] = {}
    for source, seen in known:
        if seen.startswith(MASKED_WITH):
            paired.setdefault(source, []).append(seen.removeprefix(MASKED_WITH))
    return paired


class _RecordedSpelling:
    """A local path no record names, spelled as the records spell a file of that name in the same folder reached
    by another path (a link to the folder, or the working folder's physical path where a relative manifest path
    was given through a link): its items keep the ids and seeds first recorded. Only the folder is compared (its
    device and inode): a folder of links to the same files is a folder of its own, as are the links' stems."""

    def __init__(self, known: dict[tuple[str, str], str]):
        self.known = known
        self.recorded: dict[tuple[int, int, str], str] | None = None  # (folder's device, inode, file name) -> path
        self.folders: dict[str, tuple[int, int] | None] = {}

    def __call__(self, ref: SourceRef) -> SourceRef:
        if ref.is_url or ref.job_folder or (ref.key, "") in self.known:
            return ref
        if self.recorded is None:  # once a path is not recorded: one stat per folder the records name
            self.recorded = {}
            for key, seen in self.known:
                path = PurePosixPath(key)
                if not seen and path.is_absolute() and (folder := self._folder(str(path.parent))):
                    self.recorded.setdefault((*folder, path.name), key)
        path = PurePosixPath(ref.key)
        folder = self._folder(str(path.parent)) if self.recorded else None
        recorded = self.recorded.get((*folder, path.name)) if folder else None
        return replace(ref, key=recorded) if recorded else ref

    def _folder(self, path: str) -> tuple[int, int] | None:
        if path not in self.folders:
            try:
                found = os.stat(path)
                self.folders[path] = (found.st_dev, found.st_ino)
            except OSError:
                self.folders[path] = None
        return self.folders[path]


def file_identity(path: str) -> tuple[str, str]:
    """(stat, sha256) of a regular file, read in chunks; ("", "") for anything else or an unreadable file. The
    stat comes from the open file, so it belongs to the bytes hashed even if the file is replaced meanwhile."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block here
    except OSError:
        return "", ""
    with os.fdopen(descriptor, "rb") as handle:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode):
            return "", ""
        try:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            return "", ""
    return f"{found.st_size}-{found.st_mtime_ns}", sha


def moved_sources_note(items, records: dict[str, dict], pipeline: str | None = None) -> str | None:
    """Where items to run were made before from the same images, prompt and parameters (and pipeline config,
    `pipeline` being its hash, where given) at a path the plan no longer has (the sources moved, or their folder
    did): one line saying why those items run again."""
    paths = {item.source.key for item in items if not item.source.listed_gone}  # a folder's file gone: not had
    made: dict[tuple, str] = {}  # what a result at an unplanned path was made with -> that path
    for record in records.values():
        same_pipeline = pipeline is None or record.get("pipeline_config") == pipeline
        if (
            record["status"] == "ok"
            and record.get("source_sha256")
            and record.get("source") not in paths
            and same_pipeline
        ):
            made.setdefault(_made_with(record), record["source"])
    if not made:
        return None  # nothing made at a path the plan lost: no item need be looked at
    moved = [
        made[asked]
        for item in items
        if item.item_id not in records and item.source.fingerprint and (asked := _asked(item)) in made
    ]
    if not moved:
        return None
    return (
        f"{len(moved)} item(s) to run were made before from the same images at another path (e.g. {moved[0]}): "
        "items are identified by their source's path too, so they will run again (`prune` then moves the old "
        "results out)"
    )


def renamed_away(items, finished) -> dict[str, str]:
    """Finished items of a file a folder or glob of the job no longer finds (`listed_gone`: renamed or moved
    within what the job lists) whose content, prompt and parameters a finished item of a file it finds now was
    made from too (`finished`: their ids, or records by id): item id -> that file's path. Their results are duplicates of those: `prune` moves them out
    (a file listed by name, or one gone with no such twin, keeps its results: archived)."""
    gone = [item for item in items if item.source.listed_gone and item.item_id in finished and item.source.fingerprint]
    if not gone:
        return {}  # nearly always: no item is looked at twice
    wanted = {item.source.fingerprint for item in gone}
    twins: dict[tuple, str] = {}
    for item in items:
        source = item.source
        if source.fingerprint in wanted and source.stat and not source.listed_gone and item.item_id in finished:
            twins.setdefault(_asked(item), source.key)  # found when planned, with a finished item
    return {item.item_id: twins[asked] for item in gone if (asked := _asked(item)) in twins}


def _asked(item) -> tuple:
    """An item as its result's record shows it, but for the source's path (a derived seed follows the path)."""
    values = tuple(getattr(item, p.name) for p in _COMPARED)
    seed = "derived" if item.seed_derived else item.seed
    return (item.source.fingerprint, item.prompt, item.variation, seed, values)


def _made_with(record: dict) -> tuple:
    values = tuple(record.get(p.column) for p in _COMPARED)
    seed = "derived" if record.get("seed_derived") else record.get("seed")
    return (record.get("source_sha256"), record.get("prompt"), record.get("variation", 0), seed, values)
