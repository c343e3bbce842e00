"""Masks: pairing with sources by stem, loading any mode as "L", fitting with the source's geometry, identity,
the mask parameters, compositing, failures, `plan`'s listing and the records."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.errors import ManifestError
from batch_edit.fetch import FetchOptions
from batch_edit.infotext import a1111_parameters
from batch_edit.manifest import load_manifest
from batch_edit.masks import MaskLoader, composited, feathered, fit_mask, task_problems, to_mask
from batch_edit.outputs import item_fields
from batch_edit.plan import make_item, plan_jobs
from batch_edit.plan_checks import sources_without_mask
from batch_edit.sheet_arrangement import arrange
from batch_edit.source_decoding import SourceError
from batch_edit.source_identity import identify_sources, recorded_hashes
from batch_edit.sources import RESIZE_MODES, SourceRef, fit_image

from .conftest import PHOTOS, batch_edit
from .conftest import image_file as image

PIPELINE = {"model": "m"}


@pytest.fixture
def folder(tmp_path) -> Path:
    for stem in ("cat", "dog", "owl"):
        image(tmp_path / "photos" / f"{stem}.jpg", color=(40, 90, 140))
    for stem in ("cat", "dog"):
        image(tmp_path / "masks" / f"{stem}.png", mode="L", box=(8, 8, 40, 30))
    return tmp_path


def job(folder: Path, text: str, name="m.yaml"):
    (folder / name).write_text(text)
    return load_manifest(folder / name).jobs[0]


def masks_of(spec_job) -> dict[str, str]:
    grid = spec_job.grids[0]
    return {source.stem: mask.key for source, mask in zip(grid.sources, grid.masks)}


# ---------------------------------------------------------------- pairing by stem


@pytest.mark.parametrize("spec", ["masks", "masks/", "masks/*.png", "masks/{stem}.png"])
def test_masks_pair_with_sources_by_stem_from_a_folder_a_glob_or_a_template(folder, spec):
    paired = masks_of(job(folder, f"jobs: [{{name: a, sources: photos, prompts: x, masks: '{spec}'}}]"))
    assert paired["cat"] == (folder / "masks" / "cat.png").as_posix()
    assert paired["dog"] == (folder / "masks" / "dog.png").as_posix()
    assert not Path(paired["owl"]).is_file()  # no owl mask: listed by `plan`, that item's failure when run


def test_one_mask_file_serves_every_source_and_a_csv_row_names_its_own(folder):
    paired = masks_of(job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: masks/cat.png}]"))
    assert set(paired.values()) == {(folder / "masks" / "cat.png").as_posix()}
    (folder / "rows.csv").write_text("source,prompt,mask\nphotos/cat.jpg,x,masks/dog.png\nphotos/dog.jpg,y,\n")
    rows = load_manifest(folder / "rows.csv").jobs[0].grids
    assert rows[0].masks[0].key == (folder / "masks" / "dog.png").as_posix() and rows[1].masks == ()


@pytest.mark.parametrize("spec", ["https://example.com/masks/cat.png?token=a*b", "masks/cat [1].png", "masks/c?t.png"])
def test_one_mask_url_with_a_query_or_file_with_glob_characters_serves_every_source(folder, spec):
    (folder / "masks" / "cat.png").rename(folder / "masks" / "cat [1].png")  # a file name as cameras and copies give
    (folder / "masks" / "dog.png").rename(folder / "masks" / "c?t.png")
    paired = masks_of(job(folder, f"jobs: [{{name: a, sources: photos, prompts: x, masks: '{spec}'}}]"))
    expected = spec if spec.startswith("https:") else (folder / spec).as_posix()
    assert paired == {"cat": expected, "dog": expected, "owl": expected}


def test_mask_specs_that_cannot_work_are_refused_naming_the_job_and_field(folder):
    image(folder / "masks" / "cat.jpg", mode="L")
    with pytest.raises(ManifestError) as refused:
        job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: masks}]")
    assert "jobs[0] ('a'): field 'masks': two masks have the stem 'cat'" in str(refused.value)
    (folder / "empty").mkdir()  # refused once planning finds no finished item's mask to give back
    empty = job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: empty}]")
    with pytest.raises(ManifestError) as refused:
        identify_sources([empty], {})
    looked = ", ".join(f"{(folder / 'empty').as_posix()}/{stem}.*" for stem in ("cat", "dog", "owl"))
    assert str(refused.value) == (
        f"{folder / 'm.yaml'}: jobs[0] ('a'): field 'masks': none of its 3 source(s) has a mask (looked for "
        f"{looked}), so each of its items would fail: give the masks, or a spec that finds them (a mask deleted "
        "once its items were done is given back for those items only)"
    )
    with pytest.raises(ManifestError, match=r"field 'masks': .*only the placeholder \{stem\}"):
        job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: 'masks/{name}.png'}]")
    for template in ("masks/{stem.name}.png", "masks/{stem[x]}.png"):  # no traceback either
        with pytest.raises(ManifestError, match=r"field 'masks': .*only the placeholder \{stem\}"):
            job(folder, f"jobs: [{{name: a, sources: photos, prompts: x, masks: '{template}'}}]")


def test_mask_parameters_without_masks_are_refused(folder):
    with pytest.raises(ManifestError, match=r"jobs\[0\] \('a'\): field 'mask_blur': applies only to masked items"):
        job(folder, "jobs: [{name: a, sources: photos, prompts: x, mask_blur: [4, 8]}]")
    (folder / "rows.csv").write_text("source,prompt,composite\nphotos/cat.jpg,x,false\n")
    with pytest.raises(ManifestError, match=r"row 1 .*field 'composite': applies only to masked items"):
        load_manifest(folder / "rows.csv")
    # at their defaults they change nothing, and are accepted
    assert job(folder, "jobs: [{name: a, sources: photos, prompts: x, mask_blur: 4, composite: true}]")


def test_a_csv_row_without_a_mask_is_named_in_an_inpainting_run(folder):
    (folder / "rows.csv").write_text("source,prompt,mask\nphotos/cat.jpg,x,masks/cat.png\nphotos/dog.jpg,y,\n")
    (problem,) = task_problems(load_manifest(folder / "rows.csv").jobs, "fill")
    assert problem.endswith("job 'rows': the pipeline task 'fill' repaints through a mask, but row(s) 2 have no 'mask'")


def test_mask_hashes_recorded_by_earlier_runs_are_reused_while_the_file_is_unchanged(folder):
    spec_job = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks}]")
    mask = spec_job.grids[0].masks[0]
    record = {"source": "elsewhere", "mask": mask.key, "mask_stat": mask.stat, "mask_sha256": "cd" * 32}
    (identified,) = identify_sources([spec_job], recorded_hashes([record]))
    assert identified.grids[0].masks[0].fingerprint == "cd" * 32  # the stat matched: not read again
    (read,) = identify_sources([spec_job], {})
    assert read.grids[0].masks[0].fingerprint == hashlib.sha256((folder / "masks" / "cat.png").read_bytes()).hexdigest()


def test_masks_with_a_task_that_takes_none_or_inpainting_without_masks_are_refused(folder):
    masked = job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: masks}]")
    plain = job(folder, "jobs: [{name: b, sources: photos, prompts: x}]", "plain.yaml")
    assert task_problems([masked, plain], "inpaint") == [
        f"{plain.origin}: the pipeline task 'inpaint' repaints through a mask, but it has no 'masks:'"
    ]
    assert task_problems([masked, plain], "img2img") == [
        f"{masked.origin}: masks are given but the pipeline task 'img2img' takes none (masks go with task inpaint or fill)"
    ]
    assert task_problems([masked], "fill") == [] and task_problems([plain], "kontext") == []
    padded = job(folder, "jobs: [{name: c, sources: photos, prompts: x, masks: masks, mask_padding: 16}]", "p.yaml")
    assert task_problems([padded], "inpaint") == []
    (problem,) = task_problems([padded], "fill")
    assert problem == f"{padded.origin}: field 'mask_padding': the fill task takes none (FluxFillPipeline repaints " + (
        "the whole image; inpaint takes it)"
    )


# ---------------------------------------------------------------- loading: any mode, white repaints


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "I;16", "I", "CMYK"])
def test_masks_of_any_mode_are_read_as_L_with_white_repainted(tmp_path, mode):
    white = {"1": 1, "L": 255, "P": 255, "RGB": (255, 255, 255), "I;16": 65535, "I": 65535, "CMYK": (0, 0, 0, 0)}
    black = {"CMYK": (0, 0, 0, 255)}.get(mode, 0)
    picture = Image.new(mode, (32, 16), black)
    if mode == "P":
        picture.putpalette([0, 0, 0] + [255, 255, 255] * 255)
    picture.paste(white[mode], (0, 0, 16, 16))
    path = tmp_path / f"mask.{'tif' if mode in ('I;16', 'I', 'CMYK') else 'png'}"
    picture.save(path)
    mask = MaskLoader(FetchOptions())._loaded(SourceRef(path.as_posix(), False, "mask", "", None))
    assert mask.mode == "L" and mask.size == (32, 16)
    assert mask.getpixel((4, 4)) == 255 and mask.getpixel((28, 4)) == 0


def test_a_mask_with_transparency_is_its_alpha_channel():
    rgba = Image.new("RGBA", (16, 16), (255, 255, 255, 0))  # white everywhere, painted only where opaque
    rgba.paste((0, 0, 0, 255), (0, 0, 8, 16))
    mask = to_mask(rgba)
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((12, 2)) == 0
    assert to_mask(Image.new("RGBA", (4, 4), (255, 255, 255, 255))).getpixel((0, 0)) == 255  # opaque: luminance


# ---------------------------------------------------------------- fitting with the source's geometry


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("drawn_at", [1, 2])  # the mask drawn at the source's size, or at half of it
def test_masks_are_fitted_with_their_sources_geometry_and_stay_sharp(mode, drawn_at):
    box = (200, 100, 440, 300)
    source = Image.new("RGB", (640, 428), (0, 0, 0))
    source.paste((255, 255, 255), box)
    mask = Image.new("L", (640 // drawn_at, 428 // drawn_at), 0)
    mask.paste(255, tuple(side // drawn_at for side in box))
    fitted_source = fit_image(source, 128, 96, mode)
    fitted = fit_mask(mask, source.size, 128, 96, mode)
    assert fitted.mode == "L" and fitted.size == fitted_source.size
    assert set(np.unique(np.asarray(fitted))) == {0, 255}  # nearest-neighbour: no grey edge
    bright = fitted_source.convert("L").point(lambda v: 255 if v > 127 else 0)
    assert all(abs(a - b) <= 1 for a, b in zip(fitted.getbbox(), bright.getbbox()))


# ---------------------------------------------------------------- identity


def item_ids(spec_job, fingerprints: dict | None = None) -> list[str]:
    if fingerprints is not None:
        spec_job = identify_sources([spec_job], {})[0]
    return [item.item_id for item in plan_jobs([spec_job], PIPELINE)[0].items]


def test_the_mask_is_part_of_the_id_and_items_without_one_keep_theirs(folder):
    plain = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x}]")
    masked = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks}]")
    other = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks/dog.png}]")
    ref = plain.grids[0].sources[0]
    assert item_ids(plain) == [make_item("a", ref, "x", {}, json.dumps(PIPELINE, sort_keys=True)).item_id]
    assert len({item_ids(plain)[0], item_ids(masked)[0], item_ids(other)[0]}) == 3
    before = item_ids(masked, {})
    image(folder / "masks" / "cat.png", mode="L", box=(0, 0, 10, 10))  # the same file, other content
    os.utime(folder / "masks" / "cat.png", ns=(1, 1))
    after = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks}]")
    assert item_ids(after, {}) != before


def test_mask_parameters_are_swept_and_hashed_only_off_their_default(folder):
    base = "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks"
    # composite false in a job of its own: mask_blur has no effect there, so a grid crossing them is refused
    sweep = job(folder, base + ", mask_blur: [0, 4, 8], mask_padding: [0, 32]}]")
    raw = job(folder, base + ", mask_padding: [0, 32], composite: [true, false]}]")
    items = plan_jobs([sweep], PIPELINE)[0].items + plan_jobs([raw], PIPELINE)[0].items
    assert len({item.item_id for item in items}) == 8  # (4, 0 or 32, true) in both jobs: the same two items
    assert {(item.mask_blur, item.mask_padding, item.composite) for item in items} >= {(4, 32, False), (0, 0, True)}
    defaults = {item.item_id for item in items if (item.mask_blur, item.mask_padding, item.composite) == (4, 0, True)}
    assert defaults == set(item_ids(job(folder, base + "}]")))
    key = json.dumps(PIPELINE, sort_keys=True)
    for item in items:  # the plan's ids are the reference definition's
        params = {name: getattr(item, name) for name in ("mask_blur", "mask_padding", "composite")}
        made = make_item("a", item.source, "x", params, key, mask=item.mask)
        assert (made.item_id, made.seed) == (item.item_id, item.seed)


def test_sources_without_a_mask_file_are_found_for_plan(folder):
    spec_job = job(folder, "jobs: [{name: a, sources: photos, prompts: x, masks: 'masks/{stem}.png'}]")
    assert sources_without_mask(spec_job) == [(folder / "photos" / "owl.jpg").as_posix()]


# ---------------------------------------------------------------- failures at load


def loaded(path: Path, source_size=(64, 48), **params):
    item = replace(make_item("a", SourceRef("s", False, "s", "", None), "x", {"width": 64, "height": 48, **params}, "k"),
                   mask=SourceRef(path.as_posix(), False, path.stem, "", None))  # fmt: skip
    return MaskLoader(FetchOptions()).fitted(item, source_size)


def test_a_mask_folder_holding_only_a_broken_link_or_fifo_by_the_stem_says_so(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "owl.png").symlink_to(tmp_path / "deleted.png")
    os.mkfifo(masks / "owl.JPG")
    (masks / "owl.webp").mkdir()  # a folder so named: not reported
    image(masks / "owl_mask.png", mode="L")  # another stem
    expected = (
        f"mask: none found for this source (looked for {masks.as_posix()}/owl.*; found there, not a regular file: "
        f"{masks.as_posix()}/owl.JPG (fifo), {masks.as_posix()}/owl.png (a link to nothing))"
    )
    with pytest.raises(SourceError) as info:
        loaded(masks / "owl.*")
    assert str(info.value) == expected and info.value.reason == "mask: none found"


def test_missing_undecodable_and_all_black_masks_fail_with_their_reason(tmp_path):
    with pytest.raises(SourceError, match="^mask: file not found: .*gone.png"):
        loaded(tmp_path / "gone.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(SourceError, match="^mask: not an image"):
        loaded(tmp_path / "text.png")
    with pytest.raises(SourceError, match="^mask: all black, nothing to repaint"):
        loaded(image(tmp_path / "black.png", mode="L"))
    with pytest.raises(SourceError, match="^mask: none found for this source"):
        loaded(tmp_path / "masks" / "owl.*")
    with pytest.raises(SourceError, match="^mask: its white part lies outside the fitted image"):  # cropped away
        loaded(image(tmp_path / "edge.png", (128, 48), mode="L", box=(0, 0, 8, 48)), source_size=(128, 48))
    assert loaded(image(tmp_path / "ok.png", mode="L", box=(0, 0, 8, 8))).getbbox() == (0, 0, 8, 8)
    line = image(tmp_path / "line.png", mode="L", box=(20, 0, 23, 48))  # 3 pixels wide
    with pytest.raises(SourceError, match="^mask: narrower everywhere than mask_blur 8, nothing would be repainted"):
        loaded(line, mask_blur=8)
    assert loaded(line, mask_blur=2) and loaded(line, mask_blur=8, composite=False)  # raw output: repainted


# ---------------------------------------------------------------- compositing


def test_composite_keeps_every_pixel_outside_the_mask_and_feathers_only_inside():
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    result = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (10, 8, 50, 40))
    outside = np.asarray(mask) == 0
    item = make_item("a", SourceRef("s", False, "s", "", None), "x", {"mask_blur": 8}, "k")
    for blur in (0, 1, 4, 8):
        out = np.asarray(composited(replace(item, mask_blur=blur), result, source, mask))
        assert (out[outside] == np.asarray(source)[outside]).all()
        assert (out[24, 30] == np.asarray(result)[24, 30]).all()  # deep inside: the result's
    alpha = np.asarray(feathered(mask, 8))
    assert alpha[outside].max() == 0 and alpha[24, 30] == 255
    assert 0 < alpha[20, 11] < 255  # inside, near the edge: blended
    assert composited(replace(item, composite=False), result, source, mask) is result
    # the feather lies inside the mask: one narrower than twice the blur is not repainted fully anywhere
    assert np.asarray(feathered(mask, 64)).max() < 255


# ---------------------------------------------------------------- records


def test_records_and_the_a1111_text_name_the_mask_and_its_parameters_only_for_masked_items():
    ref = SourceRef(key="https://e.com/cat.png", is_url=True, stem="cat", fingerprint="", caption=None)
    mask = SourceRef(key="/m/cat.png", is_url=False, stem="cat", fingerprint="ab" * 32, caption=None, stat="9-9")
    plain = item_fields(make_item("job", ref, "a cat", {"seed": 7}, "k"))
    masked = item_fields(make_item("job", ref, "a cat", {"seed": 7, "mask_blur": 8}, "k", mask=mask))
    assert not {"mask", "mask_blur", "mask_padding", "composite"} & set(plain)
    assert {k: masked[k] for k in ("mask", "mask_stat", "mask_sha256", "mask_blur", "mask_padding", "composite")} == {
        "mask": "/m/cat.png", "mask_stat": "9-9", "mask_sha256": "ab" * 32, "mask_blur": 8, "mask_padding": 0,
        "composite": True,
    }  # fmt: skip
    settings = a1111_parameters({**masked, "model": "m"}).splitlines()[1]
    assert "Mask: /m/cat.png, Mask blur: 8, Masked area padding: 0, Composite: True, Item id:" in settings
    assert "Mask" not in a1111_parameters({**plain, "model": "m"})


# ---------------------------------------------------------------- end to end on the tiny inpaint and fill models

INPAINT = f"""
jobs:
  - name: masked
    keep_sources: true
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "rocket.jpg"}, {PHOTOS / "coffee.jpg"}, {PHOTOS / "astronaut.jpg"}]
    masks: masks
    prompts: a tiger
    composite: [true, false]
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
"""


def masks_folder(folder: Path) -> None:
    """cat: a box (repainted), rocket: not an image, coffee: all black, astronaut: none."""
    image(folder / "masks" / "cat.png", (640, 427), mode="L", box=(160, 100, 480, 330))
    (folder / "masks" / "rocket.png").write_bytes(b"not a png")
    image(folder / "masks" / "coffee.png", (64, 48), mode="L")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB")).astype(int)


def test_inpaint_keeps_every_pixel_outside_the_mask_and_records_triples(tmp_path, tiny_task_config):
    masks_folder(tmp_path)
    (tmp_path / "m.yaml").write_text(INPAINT)
    config = str(tiny_task_config("inpaint"))
    planned = batch_edit("plan", "m.yaml", "--pipeline", config, cwd=tmp_path)
    assert planned.returncode == 1 and "without a mask: 1 source(s): " in planned.stdout
    assert (PHOTOS / "astronaut.jpg").as_posix() in planned.stdout
    result = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the three sources whose masks fail
    folder = tmp_path / "out" / "masked"

    failures = pd.read_csv(folder / "failures.csv").set_index("source")
    assert set(failures["stage"]) == {"load"} and len(failures) == 6
    reasons = {Path(source).stem: error for source, error in failures["error"].items()}
    assert reasons["rocket"] == "mask: not an image"
    assert reasons["coffee"].startswith("mask: all black, nothing to repaint")
    assert reasons["astronaut"].startswith("mask: none found for this source")
    assert failures["mask"].str.contains("masks/").all()

    rows = pd.read_csv(folder / "metadata.csv").set_index("composite")
    assert len(rows) == 2 and rows["mask_file_name"].str.startswith("sources/cat-mask-").all()
    assert set(rows["mask_blur"]) == {4} and set(rows["mask_padding"]) == {0}
    source = pixels(folder / rows.loc[True, "source_image_file_name"])
    mask = np.asarray(Image.open(folder / rows.loc[True, "mask_file_name"]))
    assert mask.shape == source.shape[:2] and set(np.unique(mask)) == {0, 255}
    outside, inside = mask == 0, mask == 255
    kept, raw = pixels(folder / rows.loc[True, "file_name"]), pixels(folder / rows.loc[False, "file_name"])
    assert (kept[outside] == source[outside]).all()  # every pixel outside the mask: the fitted source's
    assert (kept[inside] != source[inside]).any()  # repainted inside
    assert (raw[outside] != source[outside]).any()  # without compositing: the VAE round trip shows outside
    with Image.open(folder / rows.loc[True, "file_name"]) as made:
        assert "Mask blur: 4, Masked area padding: 0, Composite: True" in made.info["parameters"]

    datasets = pytest.importorskip("datasets")
    triples = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert triples.num_rows == 2 and {"image", "source_image", "mask"} <= set(triples.features)
    assert triples[0]["mask"].size == triples[0]["source_image"].size == triples[0]["image"].size == (64, 48)


def test_fill_keeps_every_pixel_outside_the_mask(tmp_path, tiny_task_config):
    image(tmp_path / "masks" / "cat.png", (640, 427), mode="L", box=(0, 0, 320, 427))
    (tmp_path / "m.yaml").write_text(f"""
jobs:
  - name: filled
    keep_sources: true
    sources: {PHOTOS / "cat.jpg"}
    masks: 'masks/{{stem}}.png'
    prompts: a tiger
    num_inference_steps: 3
    mask_blur: 0
    width: 64
    height: 48
""")
    config = str(tiny_task_config("fill"))
    result = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "filled"
    row = pd.read_csv(folder / "metadata.csv").iloc[0]
    source, made = pixels(folder / row["source_image_file_name"]), pixels(folder / row["file_name"])
    outside = np.asarray(Image.open(folder / row["mask_file_name"])) == 0
    assert outside[:, 40:].all() and not outside[:, :24].any()  # the left half is repainted
    assert (made[outside] == source[outside]).all() and (made[~outside] != source[~outside]).any()


def test_masks_and_tasks_that_do_not_go_together_are_refused_before_running(tmp_path, tiny_task_config):
    masks_folder(tmp_path)
    (tmp_path / "m.yaml").write_text(INPAINT)
    refused = batch_edit("run", "m.yaml", "--pipeline", str(tiny_task_config("img2img")), cwd=tmp_path)
    assert refused.returncode == 2 and "('masked'): masks are given but the pipeline task 'img2img'" in refused.stderr
    (tmp_path / "plain.yaml").write_text(f"jobs: [{{name: plain, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}]")
    for task in ("inpaint", "fill"):
        refused = batch_edit("plan", "plain.yaml", "--pipeline", str(tiny_task_config(task)), cwd=tmp_path)
        assert refused.returncode == 2 and f"the pipeline task '{task}' repaints through a mask" in refused.stderr
    assert not (tmp_path / "outputs").exists()


def test_mask_padding_repaints_a_crop_around_the_mask_and_still_keeps_the_rest(tmp_path, tiny_task_config):
    image(tmp_path / "masks" / "cat.png", (640, 427), mode="L", box=(300, 200, 400, 300))
    (tmp_path / "m.yaml").write_text(f"""
jobs:
  - name: padded
    keep_sources: true
    sources: {PHOTOS / "cat.jpg"}
    masks: masks
    prompts: a tiger
    mask_padding: [0, 8]
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
""")
    result = batch_edit(
        "run", "m.yaml", "--pipeline", str(tiny_task_config("inpaint")), "--output-root", "o", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "o" / "padded"
    rows = pd.read_csv(folder / "metadata.csv").set_index("mask_padding")
    source = pixels(folder / rows.loc[8, "source_image_file_name"])
    outside = np.asarray(Image.open(folder / rows.loc[8, "mask_file_name"])) == 0
    cropped, whole = pixels(folder / rows.loc[8, "file_name"]), pixels(folder / rows.loc[0, "file_name"])
    assert (cropped[outside] == source[outside]).all() and (cropped[~outside] != whole[~outside]).any()
    assert (folder / "contact-sheet-cat.png").is_file()
    for padding in (0, 8):  # through the fitted mask kept under sources/
        again = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", rows.loc[padding, "item_id"])
        assert again.returncode == 0 and "identical" in again.stdout, again.stdout + again.stderr


def test_reproduce_fits_the_mask_file_again_where_the_job_kept_no_sources(tmp_path, tiny_task_config):
    image(tmp_path / "masks" / "cat.png", (640, 427), mode="L", box=(100, 50, 400, 300))
    (tmp_path / "m.yaml").write_text(f"""
jobs:
  - name: plain
    sources: {PHOTOS / "cat.jpg"}
    masks: masks
    prompts: a tiger
    mask_blur: 6
    num_inference_steps: 4
    width: 64
    height: 48
""")
    config = str(tiny_task_config("inpaint"))
    assert batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "o", cwd=tmp_path).returncode == 0
    metadata = tmp_path / "o" / "plain" / "metadata.csv"
    row = pd.read_csv(metadata).iloc[0]
    assert row["mask"] == str(tmp_path / "masks" / "cat.png")
    again = batch_edit("reproduce", str(metadata), "--item", row["item_id"])
    assert again.returncode == 0 and "identical" in again.stdout, again.stdout + again.stderr
    image(tmp_path / "masks" / "cat.png", (640, 427), mode="L", box=(0, 0, 640, 100))  # the mask redrawn since
    changed = batch_edit("reproduce", str(metadata), "--item", row["item_id"])
    assert changed.returncode == 1 and "identical" not in changed.stdout


def test_a_swept_mask_parameter_is_a_labelled_contact_sheet_axis(folder):
    sweep = job(folder, "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, masks: masks, mask_blur: [0, 8]}]")
    items = plan_jobs([sweep], PIPELINE)[0].items  # as metadata.csv reads back: text
    rows = [{k: str(v) for k, v in {**item_fields(item), "file_name": item.output_name}.items()} for item in items]
    assert list(arrange(rows)[0].headers) == ["mask blur 0", "mask blur 8"]
