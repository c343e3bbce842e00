"""Grid expansion, stable ids, seeds and output names."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

from batch_edit.manifest import Grid, JobSpec
from batch_edit.parameters import axis_names
from batch_edit.plan import make_item, plan_jobs
from batch_edit.prompts import render_prompt
from batch_edit.sources import SourceRef

PIPELINE = {"model": "m", "revision": "main", "dtype": "bfloat16", "quantization": "none"}
CAT = SourceRef(key="/data/cat.jpg", is_url=False, stem="cat", fingerprint="10-1", caption="a cat")
DOG = SourceRef(
    key="https://example.com/img/dog%20photo.png", is_url=True, stem="dog photo", fingerprint="", caption=None
)


def grid(**overrides) -> Grid:
    values = dict(
        sources=(CAT, DOG),
        prompts=("{stem} as a tiger", "watercolor"),
        strength=(0.5, 0.9),
        num_inference_steps=(28,),
        guidance_scale=(3.5,),
        seed=(1, 2, 3),
        width=(1024,),
        height=(768,),
        resize=("center-crop",),
    )
    return Grid(**{**values, **overrides})


def plan(*grids: Grid, identity=PIPELINE):
    return plan_jobs([JobSpec(name="job", origin="test", grids=grids)], identity)[0]


def test_cartesian_expansion_in_a_stable_order():
    job = plan(grid())
    assert len(job.items) == 2 * 2 * 2 * 3
    first = job.items[0]
    assert (first.source, first.prompt, first.strength, first.seed) == (CAT, "cat as a tiger", 0.5, 1)
    assert [item.seed for item in job.items[:6]] == [1, 2, 3, 1, 2, 3]
    assert {item.prompt for item in job.items} == {"cat as a tiger", "dog photo as a tiger", "watercolor"}
    assert all((item.width, item.height) == (1024, 768) for item in job.items)


def test_ids_are_stable_and_depend_on_everything_that_shapes_the_output():
    ids = [item.item_id for item in plan(grid()).items]
    assert ids == [item.item_id for item in plan(grid()).items]
    assert len(set(ids)) == len(ids)
    base = plan(grid(seed=(1,), strength=(0.9,))).items[0].item_id
    changed = [
        plan(grid(seed=(2,), strength=(0.9,))).items[0],
        plan(grid(seed=(1,), strength=(0.8,))).items[0],
        plan(grid(seed=(1,), strength=(0.9,), resize=("pad",))).items[0],
        plan(grid(seed=(1,), strength=(0.9,), guidance_scale=(4.0,))).items[0],
        plan(grid(seed=(1,), strength=(0.9,), sources=(replace(CAT, fingerprint="10-2"), DOG))).items[0],
        plan(grid(seed=(1,), strength=(0.9,)), identity={**PIPELINE, "quantization": "quanto"}).items[0],
    ]
    assert all(item.item_id != base for item in changed)


def test_identical_items_run_once():
    job = plan(grid(sources=(CAT,), prompts=("x", "x"), seed=(5, 5), strength=(0.9,)))
    assert len(job.items) == 1 and job.duplicates == 3


def test_explicit_seeds_verbatim_and_derived_seeds_deterministic():
    explicit = plan(grid(seed=(123456789012,))).items
    assert {item.seed for item in explicit} == {123456789012} and not any(i.seed_derived for i in explicit)
    derived = plan(grid(seed=(None,))).items
    again = plan(grid(seed=(None,))).items
    assert [i.seed for i in derived] == [i.seed for i in again]
    assert all(i.seed_derived and 0 <= i.seed < 2**32 for i in derived)
    # one seed per (source, prompt): the two strengths of a grid point share their noise
    assert len({i.seed for i in derived}) == len({(i.source, i.prompt) for i in derived}) == len(derived) // 2
    # a touched file (new mtime) is a new item but keeps its seed: the seed follows what the item is
    touched = plan(grid(seed=(None,), sources=(replace(CAT, fingerprint="99-9"),))).items[0]
    assert touched.seed == derived[0].seed and touched.item_id != derived[0].item_id


def test_output_names_are_readable_safe_and_unique():
    job = plan(grid())
    names = [item.output_name for item in job.items]
    assert len(set(names)) == len(names)
    assert names[0] == f"cat-{job.items[0].item_id}.png"
    dog = next(item for item in job.items if item.source is DOG)
    assert dog.output_name == f"dog_photo-{dog.item_id}.png"
    hostile = replace(CAT, stem="../../etc/passwd")
    item = make_item(
        "job",
        hostile,
        "p",
        dict(strength=0.9, num_inference_steps=28, guidance_scale=3.5, seed=1, width=64, height=64, resize="fit"),
        "{}",
    )
    assert "/" not in item.output_name and not item.output_name.startswith(".")


def test_caption_templates_use_each_sources_caption():
    job = plan(grid(sources=(CAT,), prompts=("{caption}, in snow {{literal}}",), seed=(1,), strength=(0.9,)))
    assert job.items[0].prompt == "a cat, in snow {literal}"


def test_plan_builds_exactly_the_items_make_item_defines():
    """plan_jobs assembles the hashed JSON from pieces for speed; each item must equal make_item's, id included
    (ids name files already on disk: a different byte would orphan every finished item)."""
    odd = SourceRef(key='/data/"quoted" \\ café\n.png', is_url=False, stem="odd", fingerprint="7-3", caption="ü")
    grids = (
        grid(sources=(CAT, DOG, odd), prompts=("{stem} — 虎 \"quoted\"", "{caption}, plain"),
             strength=(0.1, 0.30000000000000004, 1.0), guidance_scale=(0.0, 3.5), seed=(None, 0, 2**40 + 1),
             resize=("pad", "center-crop")),
        grid(sources=(CAT,), prompts=("x",), seed=(None,), width=(512, 1024), height=(512,)),
        grid(sources=(DOG, odd), prompts=("y",), seed=(None, 5, 6), strength=(0.5,), variations=3),
    )  # fmt: skip
    identity = {**PIPELINE, "loras": [{"path": "/l/ink.safetensors", "scale": 0.8}]}
    planned = plan(*grids, identity=identity)
    pipeline_key = json.dumps(identity, sort_keys=True)
    expected = {}
    for g in grids:
        for ref, template in itertools.product(g.sources, g.prompts):
            for values in itertools.product(*(getattr(g, name) for name in axis_names())):
                for variation in range(g.variations):
                    item = make_item("job", ref, render_prompt(template, ref), dict(zip(axis_names(), values)),
                                     pipeline_key, variation)  # fmt: skip
                    expected.setdefault(item.item_id, item)
    assert list(planned.items) == list(expected.values())
    assert [item.item_id for item in planned.items] == list(expected)
    assert any(item.seed_derived for item in planned.items) and any(not item.seed_derived for item in planned.items)
    assert [item.variation for item in planned.items] == [item.variation for item in expected.values()]
    assert {item.variation for item in planned.items} == {0, 1, 2}
    assert [item.index for item in planned.items] == list(range(len(planned.items)))
    assert planned.items[0].__hash__() == make_item("job", CAT, render_prompt(grids[0].prompts[0], CAT),
                                                    dict(zip(axis_names(), [getattr(grids[0], n)[0] for n in axis_names()])),
                                                    pipeline_key).__hash__()  # fmt: skip


def test_a_source_listed_twice_is_counted_with_the_duplicates_merged(tmp_path, tiny_config):
    """A file named twice, or by a folder and a glob both, runs once; `plan` counts its repeated items as it counts
    a repeated prompt's."""
    from batch_edit.manifest import load_manifests

    from .conftest import PHOTOS, batch_edit

    (tmp_path / "photos").mkdir()
    for name in ("cat.jpg", "rocket.jpg"):
        (tmp_path / "photos" / name).write_bytes((PHOTOS / name).read_bytes())
    common = "strength: [0.5, 0.6], seed: 1, width: 64, height: 64, num_inference_steps: 2"
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: twice, sources: [photos/cat.jpg, photos/cat.jpg], prompts: [x, y], {common}}},\n"
        f"       {{name: both, sources: [photos, 'photos/*.jpg'], prompts: x, {common}}},\n"
        f"       {{name: prompt, sources: photos/cat.jpg, prompts: [x, x], {common}}}]\n"
    )
    twice, both, prompt = plan_jobs(list(load_manifests([tmp_path / "m.yaml"])[0].jobs), PIPELINE)
    assert (len(twice.items), twice.duplicates) == (4, 4)  # the second cat.jpg: 2 prompts x 2 strengths
    assert (len(both.items), both.duplicates) == (4, 4)  # the glob's two files: both the folder's already
    assert (len(prompt.items), prompt.duplicates) == (2, 2)
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, items, merged in (("twice", 4, 4), ("both", 4, 4), ("prompt", 2, 2)):
        assert f"job {name}: {items} item(s), 0 already done, {merged} duplicate(s) merged" in result.stdout
