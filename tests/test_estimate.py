"""`plan`'s estimate scaled by each item's work (steps that run x latent tokens); a `quality` in `defaults:` on
png jobs; job settings given as lists; the CSV merge warning naming the variation a row repeats."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest

from batch_edit.errors import ManifestError
from batch_edit.estimate import estimate, steps_run
from batch_edit.manifest import load_manifests

from .conftest import PHOTOS, batch_edit


def timed(steps: int, side: int, seconds: float, strength: float | None = 0.5) -> dict:
    record = {"num_inference_steps": steps, "width": side, "height": side, "seconds": seconds}
    return {**record, "strength": strength} if strength is not None else record


def pending(steps: int, side: int, strength: float | None = 0.5) -> SimpleNamespace:
    return SimpleNamespace(num_inference_steps=steps, strength=strength, width=side, height=side)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 28, 50, 200])
@pytest.mark.parametrize("strength", [0.05, 0.3, 0.5, 0.7, 0.75, 0.9, 1.0])
def test_steps_run_are_the_ones_diffusers_img2img_runs(steps, strength):
    from diffusers import FluxImg2ImgPipeline

    scheduler = SimpleNamespace(timesteps=list(range(steps)), order=1)
    _, ran = FluxImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=scheduler), steps, strength, "cpu")
    assert steps_run("img2img", steps, strength) == max(ran, 1)
    assert steps_run("inpaint", steps, strength) == max(ran, 1)
    assert steps_run("fill", steps, None) == steps_run("kontext", steps, None) == steps


def test_pending_items_with_more_steps_or_pixels_get_proportionally_more_time():
    sample = [timed(2, 64, 0.02)] * 4  # 1 step runs at 0.5 over 16 tokens
    found = estimate("img2img", sample, [pending(200, 64)] * 4)  # 100 steps run
    assert found.scaled and found.timed == 4
    assert found.seconds == pytest.approx(4 * 2.0)
    assert estimate("img2img", sample, [pending(2, 128)]).seconds == pytest.approx(0.08)  # 4x the tokens
    assert estimate("fill", [timed(2, 64, 0.02, None)], [pending(6, 64, None)]).seconds == pytest.approx(0.06)
    assert "from 4 timed item(s) here, scaled by steps and size" in found.describe(4)
    assert "100x the work" in found.caution()
    assert estimate("img2img", sample, [pending(8, 64)]).caution() is None  # 4x: within what was timed


def test_a_fixed_part_per_item_is_fitted_where_the_timed_work_varies():
    # 0.5 s per item around the denoising, 0.01 s per unit of work: items of 16 and 64 tokens, 1 step each
    sample = [timed(2, 64, 0.5 + 0.16), timed(2, 128, 0.5 + 0.64), timed(2, 64, 0.5 + 0.16)]
    assert estimate("img2img", sample, [pending(2, 256)] * 2).seconds == pytest.approx(2 * (0.5 + 2.56))
    assert estimate("img2img", sample, [pending(200, 64)]).seconds == pytest.approx(0.5 + 16.0)  # 100 steps run
    # a line with a negative part (timing noise) is not trusted: all seconds per unit of work
    noisy = [timed(2, 64, 1.0), timed(2, 128, 0.9)]
    assert estimate("img2img", noisy, [pending(2, 64)]).seconds == pytest.approx(1.9 / 80 * 16)


def test_records_without_steps_or_size_give_the_flat_mean():
    old = [{"seconds": 1.0}, {**timed(2, 64, 3.0), "width": None}]
    found = estimate("img2img", old, [pending(200, 64)] * 3)
    assert not found.scaled and found.seconds == pytest.approx(6.0) and found.caution() is None
    assert "a flat mean" in found.describe(3)
    assert estimate("img2img", [], [pending(2, 64)]) is None


def test_plan_after_a_cheap_limit_sample_scales_the_estimate_to_the_pending_items(tmp_path, tiny_config):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"jobs: [{{name: steps, sources: {PHOTOS / 'cat.jpg'}, prompts: x, strength: 0.5, width: 32, height: 32,"
        " seed: [1, 2], num_inference_steps: [2, 8]}]\n"
    )
    common = [str(manifest), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    assert batch_edit("run", *common, "--limit", "2").returncode == 0  # the two 2-step items (1 step runs)
    seconds = pd.read_csv(tmp_path / "out" / "steps" / "metadata.csv")["seconds"]
    assert len(seconds) == 2

    result = batch_edit("plan", *common)
    line = next(line for line in result.stdout.splitlines() if "estimate:" in line)
    assert "for 2 item(s) at " in line and "(from 2 timed item(s) here, scaled by steps and size)" in line
    each = float(re.search(r"at ([0-9.]+) s each", line).group(1))
    assert each == pytest.approx(seconds.mean() * 4, abs=0.006)  # 8 steps at 0.5 run 4
    assert "caution" not in result.stdout

    manifest.write_text(manifest.read_text().replace("width: 32, height: 32", "width: 256, height: 256"))
    result = batch_edit("plan", *common)
    assert "caution: pending items do up to 256x the work (steps x size) of the largest timed one" in result.stdout


def yaml_manifest(tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_a_default_quality_applies_to_the_jpeg_jobs_and_not_the_png_ones(tmp_path):
    path = yaml_manifest(
        tmp_path,
        f"defaults: {{quality: 90}}\njobs:\n"
        f"  - {{name: jpg, sources: {PHOTOS / 'cat.jpg'}, prompts: x, format: jpeg}}\n"
        f"  - {{name: png, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}\n"
        f"  - {{name: webp, sources: {PHOTOS / 'cat.jpg'}, prompts: x, format: webp, quality: 70}}\n",
    )
    outputs = {job.name: job.grids[0].output for job in load_manifests([path])[0].jobs}
    assert (outputs["jpg"].format, outputs["jpg"].quality) == ("jpeg", 90)
    assert (outputs["png"].format, outputs["png"].quality) == ("png", None)
    assert outputs["webp"].quality == 70


def test_a_default_format_of_jpeg_keeps_the_default_quality_and_a_png_jobs_own_quality_stays_refused(tmp_path):
    path = yaml_manifest(
        tmp_path,
        f"defaults: {{quality: 90, format: jpeg}}\njobs:\n"
        f"  - {{name: jpg, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}\n"
        f"  - {{name: png, sources: {PHOTOS / 'cat.jpg'}, prompts: x, format: png, quality: 80}}\n",
    )
    with pytest.raises(ManifestError) as refused:
        load_manifests([path])
    assert "jobs[1] ('png'): field 'quality': applies to format jpeg or webp only" in str(refused.value)
    assert "jobs[0]" not in str(refused.value)


def test_a_quality_on_a_png_csv_row_stays_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(f"source,prompt,quality\n{PHOTOS / 'cat.jpg'},x,80\n")
    with pytest.raises(ManifestError, match=r"row 1.*field 'quality': applies to format jpeg or webp only"):
        load_manifests([path])


@pytest.mark.parametrize("key, values", [("quality", "[60, 95]"), ("format", "[jpeg, webp]"), ("captions", "[true]")])
@pytest.mark.parametrize("place", ["job", "defaults"])
def test_job_settings_given_as_a_list_are_refused_by_name(tmp_path, key, values, place):
    job = f"{{name: q, sources: {PHOTOS / 'cat.jpg'}, prompts: x" + (f", {key}: {values}}}" if place == "job" else "}")
    defaults = f"defaults: {{{key}: {values}}}\n" if place == "defaults" else ""
    path = yaml_manifest(tmp_path, f"{defaults}jobs: [{job}]\n")
    with pytest.raises(ManifestError) as refused:
        load_manifests([path])
    where = "jobs[0] ('q')" if place == "job" else "defaults"
    assert f"{where}: field '{key}': one value per job, not a list (write a job per value)" in str(refused.value)
    assert "valid" not in str(refused.value)  # not pydantic's type error besides


def test_the_csv_merge_warning_names_the_variation_a_later_row_repeats(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "rows.csv").write_text("source,prompt,seed,variations\ncat.jpg,a,10,3\ncat.jpg,a,11,\ncat.jpg,a,10,\n")
    result = batch_edit("plan", "rows.csv", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "row 2 gives the same item(s) as row 1's variation 1 (same source" in result.stderr
    assert "row 3 gives the same item(s) as row 1 (same source" in result.stderr


def test_a_new_job_is_estimated_from_the_runs_other_jobs_then_from_folders_beside_it(tmp_path, tiny_config):
    job = "  - {{name: {name}, sources: {cat}, prompts: {prompt}, strength: 0.5, width: 32, height: 32}}\n"
    manifest = tmp_path / "m.yaml"
    cat = PHOTOS / "cat.jpg"
    common = [str(manifest), "--pipeline", str(tiny_config), "--output-root", str(tmp_path / "out")]
    manifest.write_text("jobs:\n" + job.format(name="a", cat=cat, prompt="x"))
    assert batch_edit("run", *common).returncode == 0
    manifest.write_text(
        "jobs:\n" + job.format(name="a", cat=cat, prompt="x") + job.format(name="b", cat=cat, prompt="y")
    )
    planned = batch_edit("plan", *common).stdout
    assert "(from 1 timed item(s) of job(s) a of this run, scaled by steps and size)" in planned, planned
    manifest.write_text("jobs:\n" + job.format(name="b", cat=cat, prompt="y"))
    planned = batch_edit("plan", *common).stdout
    assert "(from 1 timed item(s) of job folder(s) a beside this one, scaled by steps and size)" in planned, planned
    other = tmp_path / "other.yaml"  # another pipeline config: its timings are not this one's
    other.write_text(tiny_config.read_text() + "quantization: {backend: none}\n")
    planned = batch_edit("plan", str(manifest), "--pipeline", str(other), "--output-root", str(tmp_path / "out")).stdout
    assert "estimate: none yet (no earlier run with this pipeline config in this folder or beside it)" in planned, (
        planned
    )
