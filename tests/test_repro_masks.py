"""`reproduce` from the fitted source a job kept (keep_sources) where the source as given is gone or changed, and
mask parameters that cannot change an image refused before anything runs."""

from __future__ import annotations

import io
import shutil

import pandas as pd
from PIL import Image

from .conftest import PHOTOS, batch_edit
from .http_fixtures import LoopbackServer


def kept_job(source: str, keep: bool = True, prompts: str = "a tiger", extra: str = "") -> str:
    return f"""
jobs:
  - name: kept
    keep_sources: {str(keep).lower()}
    sources: {source}
    prompts: {prompts}
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
{extra}"""


def run_kept(tmp_path, config, manifest: str, *flags: str):
    (tmp_path / "job.yaml").write_text(manifest)
    run = batch_edit("run", "job.yaml", "--pipeline", str(config), "--output-root", "out", *flags, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    metadata = tmp_path / "out" / "kept" / "metadata.csv"
    return metadata, pd.read_csv(metadata)


def test_a_deleted_source_is_reproduced_from_the_fitted_copy_the_job_kept(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg"))
    (tmp_path / "photo.jpg").unlink()
    again = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
    assert again.returncode == 0, again.stdout + again.stderr
    kept = rows.source_image_file_name[0]
    assert again.stdout.startswith("identical") and f"(from the kept source copy {kept})" in again.stdout
    assert "the source cannot be loaded: file not found" in again.stdout


def test_a_deleted_source_without_a_kept_copy_is_refused_saying_how_to_keep_one(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg", keep=False))
    (tmp_path / "photo.jpg").unlink()
    refused = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
    assert refused.returncode == 2 and "file not found" in refused.stderr
    assert "the job kept no copy of it: keep_sources: true keeps one" in refused.stderr


def test_a_source_whose_content_changed_is_reproduced_from_the_kept_copy_the_run_used(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg"))
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "photo.jpg")
    again = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("identical") and "(from the kept source copy sources/" in again.stdout
    assert "the source's content has changed since the run" in again.stdout


def test_a_url_that_no_longer_serves_is_reproduced_from_the_kept_copy(tmp_path, tiny_config):
    with LoopbackServer(image=(PHOTOS / "cat.jpg").read_bytes()) as server:
        metadata, rows = run_kept(tmp_path, tiny_config, kept_job(server.url("/ok.png")), "--allow-private-urls")
    again = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("identical") and "(from the kept source copy sources/" in again.stdout
    assert "the source cannot be loaded" in again.stdout


def test_a_kept_copy_that_is_not_the_lossless_one_the_run_wrote_is_refused_saying_why(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg"))
    (tmp_path / "photo.jpg").unlink()
    kept = metadata.parent / rows.source_image_file_name[0]
    with Image.open(kept) as fitted:
        replacements = {"JPEG": fitted.convert("RGB"), "PNG": fitted.convert("RGBA")}  # lossy, or another mode
    for form, replacement in replacements.items():
        buffer = io.BytesIO()
        replacement.save(buffer, form)
        kept.write_bytes(buffer.getvalue())
        refused = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
        assert refused.returncode == 2 and f"cannot use the kept copy {kept}" in refused.stderr, refused.stderr
        assert ("not a PNG" if form == "JPEG" else "its mode is RGBA, not the RGB") in refused.stderr


def masks_folder(tmp_path):
    mask = Image.new("L", (640, 427), 0)
    mask.paste(255, (100, 50, 400, 300))
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "photo.png")


def test_a_masked_item_whose_source_is_gone_is_reproduced_from_the_kept_source_and_mask(tmp_path, tiny_task_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    masks_folder(tmp_path)
    manifest = kept_job("photo.jpg", extra="    masks: masks\n    mask_blur: 4\n")
    metadata, rows = run_kept(tmp_path, tiny_task_config("inpaint"), manifest)
    (tmp_path / "photo.jpg").unlink()
    again = batch_edit("reproduce", str(metadata), "--item", rows.item_id[0])
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("identical") and "(from the kept source copy sources/" in again.stdout


def test_a_kept_source_takes_the_mask_its_record_kept_where_the_csv_names_masks_as_given(tmp_path, tiny_task_config):
    """An item made from a URL before keep_sources was turned on gets no kept mask later (the URL is not
    downloaded again for it), so metadata.csv names every row's mask as given; the kept one is in the later
    item's record."""
    masks_folder(tmp_path)
    config = tiny_task_config("inpaint")
    masks = "    masks: masks/photo.png\n"
    with LoopbackServer(image=(PHOTOS / "cat.jpg").read_bytes()) as server:
        url, allow = server.url("/ok.png"), "--allow-private-urls"
        run_kept(tmp_path, config, kept_job(url, keep=False, extra=masks), allow)
        metadata, rows = run_kept(tmp_path, config, kept_job(url, prompts="[a tiger, a lion]", extra=masks), allow)
    assert "mask_file_name" not in rows and rows.source_image_file_name.notna().sum() == 1
    item = rows.item_id[rows.source_image_file_name.notna()].iloc[0]
    again = batch_edit("reproduce", str(metadata), "--item", item)  # the URL no longer serves
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr


# ---------------------------------------------------------------- mask_blur with composite false


def blur_manifest(tmp_path, text: str, name: str = "m.yaml"):
    (tmp_path / "masks").mkdir(exist_ok=True)
    Image.new("L", (64, 48), 255).save(tmp_path / "masks" / "cat.png")
    (tmp_path / name).write_text(text)
    return batch_edit("plan", name, "--pipeline", str(tmp_path / "inpaint.yaml"), cwd=tmp_path)


def blur_job(fields: str) -> str:
    return f"jobs: [{{name: raw, sources: {PHOTOS / 'cat.jpg'}, masks: masks, prompts: x, {fields}}}]"


def test_mask_blur_with_composite_false_is_refused_before_anything_runs(tmp_path, tiny_task_config):
    shutil.copy(tiny_task_config("inpaint"), tmp_path / "inpaint.yaml")
    refused = blur_manifest(tmp_path, blur_job("composite: false, mask_blur: 8"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()  # one line: the job, the field, why
    assert "m.yaml: jobs[0] ('raw'): field 'mask_blur': 8 has no effect with composite false" in line
    assert "the one mask_blur 4 makes" in line

    swept = blur_manifest(tmp_path, blur_job("composite: [true, false], mask_blur: [0, 8]"))
    assert (
        swept.returncode == 2
        and "('raw'): field 'mask_blur': the grid crosses composite [true, false] with "
        "mask_blur [0, 8], but mask_blur has no effect with composite false"
        in swept.stderr
    ), swept.stderr

    rows = f"source,mask,prompt,composite,mask_blur\n{PHOTOS / 'cat.jpg'},masks/cat.png,x,false,0\n"
    (tmp_path / "rows.csv").write_text(rows)
    csv = batch_edit("plan", "rows.csv", "--pipeline", str(tmp_path / "inpaint.yaml"), cwd=tmp_path)
    assert (
        csv.returncode == 2 and "row 1 (line 2): field 'mask_blur': 0 has no effect with composite false" in csv.stderr
    )
    assert not (tmp_path / "outputs").exists()


def test_composite_false_at_the_default_blur_and_blur_sweeps_that_composite_still_plan(tmp_path, tiny_task_config):
    shutil.copy(tiny_task_config("inpaint"), tmp_path / "inpaint.yaml")
    for fields in ("composite: false", "composite: [true, false], mask_blur: 4", "mask_blur: [0, 8]"):
        planned = blur_manifest(tmp_path, blur_job(fields))
        assert planned.returncode == 0, fields + planned.stdout + planned.stderr
