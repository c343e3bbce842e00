"""Sources that are a job's own results, another job's folder read for its results only, masks the pipelines
would not repaint through (32-bit "I" data, nothing at or above mid-grey), the `masks` field's message, and
spaces around a CSV row's path cells."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit import records, source_folders
from batch_edit.errors import ManifestError
from batch_edit.fetch import FetchOptions
from batch_edit.manifest import load_manifest, load_manifests
from batch_edit.masks import REPAINT_LEVEL, MaskLoader
from batch_edit.plan import make_item
from batch_edit.source_decoding import SourceError, to_rgb
from batch_edit.sources import SourceRef

from .conftest import PHOTOS, batch_edit
from .conftest import image_file as png


def job_folder(folder: Path, results=("cat-1a2b.png",), sheets=("contact-sheet-cat.png",)) -> Path:
    """A job folder as a run leaves it: results, contact sheets, kept sources, `.batch-edit/` with pruned ones."""
    for name in (*results, *sheets, "sources/cat-0f0f.png", ".batch-edit/pruned/cat-9e9e.png"):
        png(folder / name)
    (folder / "metadata.csv").write_text("file_name\n")
    return folder


def sources_of(manifest: Path, output_root: Path | None = None) -> list[str]:
    grid = load_manifests([manifest], output_root=output_root)[0].jobs[0].grids[0]
    return [Path(ref.key).relative_to(manifest.parent).as_posix() for ref in grid.sources]


def refusal(manifest: Path, output_root: Path | None = None) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifests([manifest], output_root=output_root)
    return str(info.value)


def manifest(folder: Path, job: str, extra: str = "", name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(f"output_root: ws\njobs:\n  - {{name: {job}, prompts: a tiger{extra}}}\n")
    return path


# ---------------------------------------------------------------- a job never feeds on its own results


@pytest.mark.parametrize(
    "spec, how",
    [
        ("ws/photos/", "is"),
        ("ws/photos/*.png", "is"),
        ("ws/photos/sub", "lies inside"),
        ("ws/photos/sub/*", "lies inside"),
    ],
)
def test_a_folder_or_glob_in_the_jobs_own_folder_is_refused_naming_job_field_and_why(tmp_path, spec, how):
    png(tmp_path / "ws" / "photos" / "cat.png")
    png(tmp_path / "ws" / "photos" / "sub" / "dog.png")
    problem = refusal(manifest(tmp_path, "photos", f", sources: ['{spec}']"))
    assert "\n" not in problem and "jobs[0] ('photos'): field 'sources[0]': " in problem
    assert f"source '{spec}' {how} this job's own output folder ({(tmp_path / 'ws' / 'photos').as_posix()})" in problem
    assert "every run would take its own results as new sources" in problem


def test_the_own_folder_refusal_exits_2_before_anything_runs(tmp_path, tiny_config):
    png(tmp_path / "ws" / "photos" / "cat.png")
    manifest(tmp_path, "photos", ", sources: ws/photos/")
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert (
        result.returncode == 2 and "field 'sources[0]': source 'ws/photos/' is this job's own output" in result.stderr
    )
    assert sorted(p.name for p in (tmp_path / "ws" / "photos").iterdir()) == ["cat.png"]  # nothing made


def test_the_own_folder_is_judged_against_the_output_root_the_run_uses(tmp_path):
    png(tmp_path / "elsewhere" / "photos" / "cat.png")
    path = manifest(tmp_path, "photos", ", sources: elsewhere/photos/")
    assert sources_of(path) == ["elsewhere/photos/cat.png"]  # the manifest's own root is ws
    assert "this job's own output folder" in refusal(path, output_root=tmp_path / "elsewhere")


def test_a_recursive_walk_from_the_output_root_skips_the_own_folder_and_other_jobs_sheets(tmp_path):
    png(tmp_path / "ws" / "photos" / "cat-1234.png")  # this job's earlier result
    job_folder(tmp_path / "ws" / "other")
    path = manifest(tmp_path, "photos", ", sources: ws, recursive: true")
    assert sources_of(path) == ["ws/other/cat-1a2b.png"]
    path = manifest(tmp_path, "photos", ", sources: 'ws/**/*.png', recursive: true")
    assert sources_of(path) == ["ws/other/cat-1a2b.png"]
    path = manifest(tmp_path, "photos", ", sources: 'ws/*/*.png'")
    assert sources_of(path) == ["ws/other/cat-1a2b.png"]


# ---------------------------------------------------------------- another job's folder: its results only


@pytest.mark.parametrize("spec", ["ws/other/", "ws/other/*.png", "'ws/other/**/*.png'"])
def test_another_jobs_folder_gives_its_results_not_its_sheets_sources_or_state(tmp_path, spec):
    job_folder(tmp_path / "ws" / "other", results=("cat-1a2b.png", "dog-3c4d.png"), sheets=("contact-sheet-cat.png",
               "contact-sheet-dog-p2.png"))  # fmt: skip
    path = manifest(tmp_path, "photos", f", sources: {spec}, recursive: true")
    assert sources_of(path) == ["ws/other/cat-1a2b.png", "ws/other/dog-3c4d.png"]
    # A glob spelling out the hidden state folder reaches only .batch-edit/ content: nothing to read.
    path = manifest(tmp_path, "photos", ", sources: 'ws/other/.*/**/*.png', recursive: true")
    assert "source 'ws/other/.*/**/*.png' matches no image" in refusal(path)


def test_another_jobs_folder_read_twice_plans_the_same_items(tmp_path):
    """Chaining: job b edits job a's results; a's contact sheet written since does not become b's source."""
    results = job_folder(tmp_path / "ws" / "a", sheets=())
    path = manifest(tmp_path, "b", ", sources: ws/a/")
    before = sources_of(path)
    png(results / "contact-sheet-cat-1a2b.png")
    assert sources_of(path) == before == ["ws/a/cat-1a2b.png"]


def test_a_job_folders_subfolders_named_on_purpose_and_plain_folders_are_read_as_given(tmp_path):
    job_folder(tmp_path / "ws" / "other")
    assert sources_of(manifest(tmp_path, "photos", ", sources: ws/other/sources/")) == ["ws/other/sources/cat-0f0f.png"]
    png(tmp_path / "mine" / "contact-sheet-holiday.png")  # not a job folder: no .batch-edit/
    assert sources_of(manifest(tmp_path, "photos", ", sources: mine/")) == ["mine/contact-sheet-holiday.png"]


def test_the_job_folder_names_are_those_the_outputs_use():
    assert source_folders.JOB_STATE_DIR == records.STATE_DIR
    assert source_folders.JOB_SOURCES_DIR == records.SOURCES_DIR
    assert source_folders.SHEET_PREFIX == "contact-sheet-"  # sheets.py: contact-sheet-<stem>[-pN].png


# ---------------------------------------------------------------- masks the pipelines repaint nothing through


def loaded(path: Path, source_size=(64, 48), **params) -> Image.Image:
    item = replace(make_item("a", SourceRef("s", False, "s", "", None), "x", {"width": 64, "height": 48, **params}, "k"),
                   mask=SourceRef(path.as_posix(), False, path.stem, "", None))  # fmt: skip
    return MaskLoader(FetchOptions()).fitted(item, source_size)


def int32_tif(path: Path, high: int) -> Path:
    pixels = np.zeros((48, 64), np.int32)
    pixels[8:40, 8:56] = high
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode == "I"
    return path


def test_a_32_bit_mask_of_0_and_255_is_8_bit_data_and_of_up_to_65535_16_bit(tmp_path):
    assert set(np.unique(np.asarray(loaded(int32_tif(tmp_path / "byte.tif", 255))))) == {0, 255}
    assert set(np.unique(np.asarray(loaded(int32_tif(tmp_path / "word.tif", 65535))))) == {0, 255}
    assert to_rgb(Image.new("I", (4, 4), 200)).getpixel((0, 0)) == (200, 200, 200)  # the same rule for sources
    assert to_rgb(Image.new("I", (4, 4), 40000)).getpixel((0, 0)) == (156, 156, 156)


@pytest.mark.parametrize("level", [1, 127])
def test_a_mask_with_no_pixel_at_or_above_mid_grey_fails_naming_its_brightest(tmp_path, level):
    mask = png(tmp_path / "dim.png", (64, 48), mode="L", color=level)
    with pytest.raises(SourceError, match=rf"^mask: no pixel at or above mid-grey \(brightest {level}/255\): nothing"):
        loaded(mask)
    assert loaded(png(tmp_path / "mid.png", (64, 48), mode="L", color=level, box=(0, 0, 4, 4), fill=128))


def test_a_crop_that_leaves_only_grey_below_mid_grey_repaints_nothing(tmp_path):
    mask = png(tmp_path / "edge.png", (128, 48), mode="L", color=60, box=(0, 0, 8, 48))  # white only at the edge
    with pytest.raises(SourceError, match="^mask: its white part lies outside the fitted image"):
        loaded(mask, source_size=(128, 48))


def test_grey_below_mid_grey_does_not_count_as_repainted_where_the_white_is_narrower_than_the_blur(tmp_path):
    mask = png(tmp_path / "line.png", (64, 48), mode="L", color=0, box=(0, 0, 24, 48), fill=100)
    halo = Image.open(mask).copy()
    halo.paste(255, (40, 0, 43, 48))  # 3 white pixels, apart from a wide block of grey 100 (not repainted)
    halo.save(mask)
    with pytest.raises(SourceError, match="^mask: narrower everywhere than mask_blur 8"):
        loaded(mask, mask_blur=8)
    assert loaded(mask, mask_blur=2)


@pytest.mark.parametrize("task", ["inpaint", "fill"])
def test_the_pipelines_repaint_where_the_mask_is_at_or_above_mid_grey(task, tiny_task_model):
    from diffusers import FluxFillPipeline, FluxInpaintPipeline

    pipeline = {"inpaint": FluxInpaintPipeline, "fill": FluxFillPipeline}[task]
    processor = pipeline.from_pretrained(tiny_task_model(task), local_files_only=True).mask_processor
    levels = Image.fromarray(np.array([[REPAINT_LEVEL - 1] * 16 + [REPAINT_LEVEL] * 16] * 32, np.uint8))
    binary = processor.preprocess(levels, height=32, width=32).numpy()[0, 0]
    assert (binary[:, :16] == 0).all() and (binary[:, 16:] == 1).all()


def test_an_inpaint_run_repaints_through_a_32_bit_mask_and_fails_a_near_black_one(tmp_path, tiny_task_config):
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / name)
    (tmp_path / "masks").mkdir()
    pixels = np.zeros((427, 640), np.int32)
    pixels[100:330, 160:480] = 255
    Image.fromarray(pixels).save(tmp_path / "masks" / "cat.tif")
    png(tmp_path / "masks" / "coffee.png", (64, 48), mode="L", color=1)
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: masked, sources: ['cat.jpg', 'coffee.jpg'], masks: masks/, prompts: a tiger, seed: 1,\n"
        "     keep_sources: true, num_inference_steps: 4, width: 64, height: 48}\n"
    )
    config = str(tiny_task_config("inpaint"))
    result = batch_edit("run", "m.yaml", "--pipeline", config, "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    folder = tmp_path / "out" / "masked"
    failure = pd.read_csv(folder / "failures.csv").iloc[0]
    assert Path(failure["source"]).name == "coffee.jpg" and failure["stage"] == "load"
    assert failure["error"].startswith("mask: no pixel at or above mid-grey (brightest 1/255): nothing to repaint")
    row = pd.read_csv(folder / "metadata.csv").iloc[0]
    mask = np.asarray(Image.open(folder / row["mask_file_name"]))
    made = np.asarray(Image.open(folder / row["file_name"]).convert("RGB")).astype(int)
    source = np.asarray(Image.open(folder / row["source_image_file_name"]).convert("RGB")).astype(int)
    assert set(np.unique(mask)) == {0, 255} and np.abs(made - source)[mask == 255].max() > 8


# ---------------------------------------------------------------- the masks field says what it takes


@pytest.mark.parametrize(
    "value, told",
    [
        ("[a/, b/]", ", not a list: one glob can span folders (masks/*/*.png), or give each mask folder its own job"),
        ("3", " (got 3)"),
    ],
)
def test_masks_given_a_list_or_a_number_says_what_masks_takes(tmp_path, value, told):
    png(tmp_path / "cat.png")
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - {{name: a, sources: cat.png, prompts: x, masks: {value}}}\n")
    problem = refusal(tmp_path / "m.yaml")
    assert f"jobs[0] ('a'): field 'masks': takes one folder, glob, {{stem}} template, file or URL{told}" in problem


# ---------------------------------------------------------------- spaces around a CSV row's path cells


def csv_refs(folder: Path, text: str) -> list[tuple[str, str]]:
    (folder / "rows.csv").write_text(text)
    grids = [grid for job in load_manifest(folder / "rows.csv").jobs for grid in job.grids]
    return [(Path(g.sources[0].key).name, Path(g.masks[0].key).name if g.masks else "") for g in grids]


def test_spaces_around_a_csv_source_or_mask_cell_are_dropped(tmp_path):
    png(tmp_path / "img" / "cat.jpg")
    png(tmp_path / "img" / "cat-mask.png", mode="L", box=(0, 0, 8, 8))
    rows = "source,mask,prompt\nimg/cat.jpg ,  img/cat-mask.png\t,a tiger\n"
    assert csv_refs(tmp_path, rows) == [("cat.jpg", "cat-mask.png")]
    assert csv_refs(tmp_path, "source;prompt\n  img/cat.jpg ;a tiger\n") == [("cat.jpg", "")]


def test_a_file_named_with_the_spaces_is_used_as_given(tmp_path):
    png(tmp_path / "img" / "cat.jpg")
    shutil.copy(tmp_path / "img" / "cat.jpg", tmp_path / "img" / "cat.jpg ")
    assert csv_refs(tmp_path, "source,prompt\nimg/cat.jpg ,a tiger\n") == [("cat.jpg ", "")]


def test_a_url_cell_with_spaces_around_it_is_the_url(tmp_path):
    (tmp_path / "rows.csv").write_text("source,prompt\n https://example.com/cat.jpg ,a tiger\n")
    ref = load_manifest(tmp_path / "rows.csv").jobs[0].grids[0].sources[0]
    assert ref.is_url and ref.key == "https://example.com/cat.jpg"
