"""`in_batches` hands a batch out once it is full or can grow no more (its batch key is past: items come sorted by
it), so a job whose batches do not fill is not held in memory until its last source is prepared; the batches are
the same as when each was held to the end. Real planning, real source loading and fitting."""

from __future__ import annotations

from collections import defaultdict

from PIL import Image

from batch_edit.manifest import load_manifests
from batch_edit.plan import plan_jobs
from batch_edit.sources import FetchOptions
from batch_edit.worker import ErrorLog, Prepared, Task, in_batches, prepare

from .conftest import PHOTOS


def planned(tmp_path, job: str):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"jobs: [{job}]\n")
    (loaded,) = load_manifests([manifest])
    (plan,) = plan_jobs(list(loaded.jobs), {"model": "x"})
    return sorted(plan.items, key=lambda item: item.batch_key)  # as the driver hands them out


class Counted:
    """The prepared items, counting how many were prepared (decoded, fitted) so far."""

    def __init__(self, items):
        self.items, self.count = items, 0

    def __iter__(self):
        for ready in prepare([Task(item) for item in self.items], FetchOptions(), ErrorLog()):
            self.count += 1
            yield ready


def held_to_the_end(items, batch_size: int) -> list[list[str]]:
    """The batches as before: each group (job, batch key, fitted size) in chunks of batch_size."""
    groups = defaultdict(list)
    for ready in prepare([Task(item) for item in items], FetchOptions(), ErrorLog()):
        groups[ready.group].append(ready.task.item.item_id)
    return sorted(ids[i : i + batch_size] for ids in groups.values() for i in range(0, len(ids), batch_size))


def ids(batches) -> list[list[str]]:
    return sorted([ready.task.item.item_id for ready in batch] for batch in batches if not isinstance(batch, Prepared))


SWEEP = (
    f"{{name: sweep, sources: {PHOTOS / 'cat.jpg'}, prompts: [a tiger], strength: [0.3, 0.4, 0.5, 0.6, 0.7],"
    " seed: [1, 2, 3], width: 32, height: 32}"
)


def test_a_batch_whose_key_is_past_goes_out_before_the_rest_of_the_job_is_prepared(tmp_path):
    items = planned(tmp_path, SWEEP)  # 5 strengths x 3 seeds: groups of 3, batch size 8
    counted = Counted(items)
    batches = iter(in_batches(counted, 8))
    first = next(batches)
    assert [ready.task.item.strength for ready in first] == [0.3] * 3
    assert counted.count == 4, f"{counted.count} of {len(items)} items prepared before the first batch"


def test_the_batches_are_those_of_groups_held_to_the_end(tmp_path):
    items = planned(tmp_path, SWEEP)
    for batch_size in (2, 3, 8):
        assert ids(in_batches(Counted(items), batch_size)) == held_to_the_end(items, batch_size)


def test_fitted_sizes_that_never_fill_a_batch_are_not_all_held(tmp_path):
    folder = tmp_path / "shapes"
    folder.mkdir()
    for index in range(30):  # resize: fit over 30 shapes: one item per fitted size, none fills a batch of 4
        Image.new("RGB", (200 + 17 * index, 150), (index * 8, 0, 0)).save(folder / f"p{index:02d}.png")
    items = planned(tmp_path, f"{{name: fit, sources: {folder}, prompts: [a watercolor], resize: fit, width: 64}}")
    counted = Counted(items)
    handed = []
    for batch in in_batches(counted, 4):
        handed.append(batch)
        assert counted.count - sum(len(one) for one in handed) <= 4 * 4, "more items held than the bound"
    assert sorted(ready.task.item.item_id for batch in handed for ready in batch) == sorted(i.item_id for i in items)


def test_sizes_that_fill_keep_their_full_batches_within_the_bound(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for index in range(12):  # two shapes alternating: each fills its batches
        Image.new("RGB", (300, 200) if index % 2 else (200, 300), (index * 8, 0, 0)).save(folder / f"p{index:02d}.png")
    items = planned(tmp_path, f"{{name: two, sources: {folder}, prompts: [a cat], resize: fit, width: 64}}")
    assert ids(in_batches(Counted(items), 3)) == held_to_the_end(items, 3)
    assert all(len(batch) == 3 for batch in ids(in_batches(Counted(items), 3)))
