"""Sources a folder or glob gave before and no longer finds: a file the job's records show made a result, listed
by a folder or glob of the job and gone since (deleted or archived once its items were done), is planned again as
a file that is gone, as a source listed by name is: its finished items keep their ids, so they stay done, listed
and kept by `prune`. A folder or glob left with no image (emptied, or removed) stands for those files alone; one
whose records show none is refused, as one that never matched anything. A file of that name there again is the
file found, not the one gone. Another job's folder is left to that job: the results it moved out are no longer
sources."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path, PurePosixPath

from .masks import unpaired_mask
from .source_folders import GLOB_CHARS, excluded_by, glob_parts_match, glob_split, is_image_name, is_job_folder
from .sources import SourceRef, source_ref

# (source path, MADE_FROM): a source an item's result was made from (its latest record a success)
MADE_FROM = "made from"


def with_gone_sources(grid, known: dict, masks_recorded) -> tuple[object, list[str]]:
    """A YAML grid with the files its folders and globs gave before and no longer find put back, each where the
    folder or glob lists it (by path), with the mask recorded last with it; and the problems of a folder or glob
    that matches no image and gave none of those (`field 'sources[i]': why`)."""
    if grid.row is not None or not grid.specs:
        return grid, []
    sources, masks = list(grid.sources), list(grid.masks)
    present, problems = {ref.key for ref in sources}, []
    made = None
    for index, (base, spec) in enumerate(grid.specs):
        if "://" in spec:
            continue
        if _recorded_file(base, spec, known):  # a file listed by name (`shot [1].png`), gone: not a glob
            literal = _spec_path(base, spec)
            sources = [
                source_ref(literal, Path("/")) if ref.key == literal and ref.unmatched else ref for ref in sources
            ]
            continue
        matches = _matcher(base, spec, sources, known, grid.exclude)
        if matches is not None and made is None:
            made = [key for key, seen in known if seen == MADE_FROM]
        gone = sorted(p for p in made if p not in present and matches(p) and not os.path.lexists(p)) if matches else []
        # the folder or glob itself: one that matched no image, or a folder removed (listed as a file not there)
        itself = [n for n, ref in enumerate(sources) if ref.key == _spec_path(base, spec) and not ref.stat]
        if any(sources[n].unmatched for n in itself) and not gone:
            problems.append(f"field 'sources[{index}]': {next(sources[n].unmatched for n in itself)}")
            continue
        if not gone:
            continue
        for n in reversed(itself):  # it stands for its files gone
            del sources[n]
            del masks[n : n + 1]
        refs = [replace(source_ref(path, Path("/")), listed_gone=True) for path in gone]
        pairs = [(ref, _mask_of(ref, masks_recorded().get(ref.key, [])) if grid.masks else None) for ref in refs]
        sources, masks = _merged(sources, masks, pairs, matches, itself[0] if itself else len(sources))
        present.update(gone)
    if len(sources) == len(grid.sources) and not any(ref.unmatched for ref in grid.sources):
        return grid, problems
    return replace(grid, sources=tuple(sources), masks=tuple(masks)), problems


def _recorded_file(base: str, spec: str, known: dict) -> bool:
    """A spec with glob characters whose literal path is not there but is a file the job's records name: that
    file, gone since (a glob is read as one only where it matches something or no record names it)."""
    if not GLOB_CHARS & set(spec):
        return False
    path = _spec_path(base, spec)
    return ((path, "") in known or (path, MADE_FROM) in known) and not os.path.lexists(path)


def _spec_path(base: str, spec: str) -> str:
    return os.path.abspath(Path(base).expanduser() / Path(spec).expanduser())


def _matcher(base: str, spec: str, sources: list[SourceRef], known: dict, skip: tuple[str, ...] = ()):
    """Whether a path is one this folder or glob spec would list (an image file under it, not hidden, not left
    out by the job's `exclude`, `skip`); None for a spec naming one file, or another job's folder."""
    path = _spec_path(base, spec)
    folder = os.path.isdir(path) or any(
        ref.key == path and (ref.unmatched or (not ref.stat and (path, "") not in known)) for ref in sources
    )
    if GLOB_CHARS & set(spec) and not os.path.lexists(path):
        start, pattern = glob_split(spec, Path(base))
        root = str(start)
    elif folder:
        root, pattern = path, None
    else:
        return None
    if is_job_folder(Path(root)):
        return None

    def matches(key: str) -> bool:
        if not key.startswith(f"{root.rstrip('/')}/") or not is_image_name(Path(key)):
            return False
        rel = PurePosixPath(key).relative_to(root).parts
        if skip and excluded_by(Path(key), Path(root), skip) is not None:
            return False
        if pattern is None:
            return not any(part.startswith(".") for part in rel)
        return glob_parts_match(rel, pattern)

    return matches


def _merged(sources: list, masks: list, gone: list[tuple], matches, at: int) -> tuple[list, list]:
    """`sources` (and their `masks`, where the grid has them) with the files `gone` (sorted by path, each with its
    mask) put where their folder or glob lists them: among its files found, by path; none found: at `at`."""
    same = {n for n, ref in enumerate(sources) if not ref.is_url and matches(ref.key)}
    last = max(same, default=at - 1)
    merged, left = [], iter(gone)
    pending = next(left, None)
    for n in range(len(sources) + 1):
        while pending is not None and (n == last + 1 or (n in same and pending[0].key < sources[n].key)):
            merged.append(pending)
            pending = next(left, None)
        if n < len(sources):
            merged.append((sources[n], masks[n] if masks else None))
    merged.extend([pending, *left] if pending is not None else [])
    return [ref for ref, _ in merged], [mask for _, mask in merged if mask is not None] if masks or gone[0][1] else []


def _mask_of(source: SourceRef, recorded: list[str]) -> SourceRef:
    """The mask recorded last with a source gone (given back with the content recorded there where it is gone
    too); a mask not found where none was."""
    if not recorded:
        return unpaired_mask(str(PurePosixPath(source.key).parent), source.stem)
    return source_ref(recorded[-1], Path("/"))
