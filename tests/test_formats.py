"""Result formats (png, jpeg, webp with a quality) and caption files, from the manifest to the files on disk."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from PIL import Image

from batch_edit.formats import IMAGE_DESCRIPTION, OutputOptions
from batch_edit.manifest import load_manifest
from batch_edit.outputs import JobOutput
from batch_edit.plan import make_item
from batch_edit.sources import SourceRef

from .conftest import PHOTOS, batch_edit, sweep_manifest

PROMPT = 'a "tiger", photo: 35mm, warm light ☃'
SOURCE = SourceRef(key="/data/cat.jpg", is_url=False, stem="cat", fingerprint="1-1", caption=None)
PARAMS = dict(strength=0.85, num_inference_steps=28, guidance_scale=3.5, seed=100, width=64, height=48, resize="fit")


def written(tmp_path, options: OutputOptions):
    item = replace(make_item("job", SOURCE, PROMPT, PARAMS, "{}"), output=options)
    output = JobOutput(tmp_path, "job")
    output.open("model: m\n")
    extra = {"model": "black-forest-labs/FLUX.1-dev", "quantization": "none", "seconds": 1.5}
    output.write_image(item, Image.new("RGB", (64, 48), "red"), extra)
    output.close()
    return item, output


@pytest.mark.parametrize("format, extension", [("jpeg", ".jpg"), ("webp", ".webp")])
def test_lossy_formats_carry_the_webui_parameters_in_exif_for_sd_parsers(tmp_path, format, extension):
    sd_parsers = pytest.importorskip("sd_parsers")
    item, output = written(tmp_path, OutputOptions(format, 80))
    assert item.output_name.endswith(extension)
    with Image.open(output.folder / item.output_name) as image:
        assert image.format == format.upper()
        info = sd_parsers.ParserManager().parse(image)
        record = json.loads(image.getexif()[IMAGE_DESCRIPTION])
    assert info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    assert sampler.prompts[0].value == PROMPT
    assert sampler.parameters["seed"] == "100" and sampler.parameters["steps"] == "28"
    assert info.metadata["Denoising strength"] == "0.85"
    # the full record beside it, non-ASCII text intact through the ASCII-only EXIF field
    assert record["prompt"] == PROMPT and record["item_id"] == item.item_id
    assert record["format"] == format and record["quality"] == 80
    assert output.done_ids() == {item.item_id}


def test_png_stays_as_it_was(tmp_path):
    item, output = written(tmp_path, OutputOptions())
    with Image.open(output.folder / item.output_name) as image:
        assert image.format == "PNG" and image.text["parameters"].startswith(PROMPT)
        assert json.loads(image.text["batch-edit"])["prompt"] == PROMPT


def test_captions_file_holds_the_prompt_beside_the_image(tmp_path):
    item, output = written(tmp_path, OutputOptions("jpeg", 95, captions=True))
    caption = output.folder / item.output_name.replace(".jpg", ".txt")
    assert caption.read_text(encoding="utf-8") == PROMPT
    assert not list(output.folder.glob(".*.tmp"))


def test_yaml_keys_defaults_and_csv_columns(tmp_path):
    (tmp_path / "m.yaml").write_text(
        f"defaults: {{format: webp, captions: true}}\n"
        f"jobs:\n"
        f"  - {{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}\n"
        f"  - {{name: b, sources: {PHOTOS / 'cat.jpg'}, prompts: x, format: jpeg, quality: 70, captions: false}}\n"
        f"  - {{name: c, sources: {PHOTOS / 'cat.jpg'}, prompts: x, format: png}}\n"
    )
    a, b, c = (job.grids[0].output for job in load_manifest(tmp_path / "m.yaml").jobs)
    assert a == OutputOptions("webp", 95, True)
    assert b == OutputOptions("jpeg", 70, False)
    assert c == OutputOptions("png", None, True)
    (tmp_path / "m.csv").write_text(f"source,prompt,format,quality,captions\n{PHOTOS / 'cat.jpg'},x,jpeg,60,true\n")
    (job,) = load_manifest(tmp_path / "m.csv").jobs
    assert job.grids[0].output == OutputOptions("jpeg", 60, True)


@pytest.mark.parametrize(
    "keys, expected",
    [
        ("quality: 90", "field 'quality': applies to format jpeg or webp only"),
        ("format: jpeg, quality: 0", "field 'quality'"),
        ("format: jpg", "field 'format'"),
    ],
)
def test_bad_format_or_quality_is_refused_naming_the_job_and_field(tmp_path, keys, expected):
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - {{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x, {keys}}}\n")
    result = batch_edit("plan", "m.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "m.yaml: jobs[0] ('a')" in result.stderr and expected in result.stderr


def test_jpeg_job_end_to_end_with_captions_a_sheet_and_reproduce(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(sweep_manifest(format="jpeg"))
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "sweep"
    metadata = pd.read_csv(folder / "metadata.csv")
    assert len(metadata) == 2 and all(name.endswith(".jpg") for name in metadata["file_name"])
    for name in metadata["file_name"]:
        with Image.open(folder / name) as image:
            assert image.format == "JPEG"
        assert (folder / name).with_suffix(".txt").read_text(encoding="utf-8") == "a tiger, photo"
    assert list(folder.glob("contact-sheet-*.png"))
    same = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", metadata["item_id"][0])
    assert same.returncode == 0 and same.stdout.startswith("identical"), same.stdout + same.stderr


def test_changing_the_format_makes_the_items_again_in_new_files(tmp_path, tiny_config):
    run = ("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out")
    (tmp_path / "m.yaml").write_text(sweep_manifest(format="png"))
    assert batch_edit(*run, cwd=tmp_path).returncode == 0
    (tmp_path / "m.yaml").write_text(sweep_manifest(format="webp"))
    plan = batch_edit("plan", *run[1:], cwd=tmp_path)
    assert "2 item(s), 0 already done" in plan.stdout
    again = batch_edit(*run, cwd=tmp_path)
    assert again.returncode == 0 and "2 written, 0 already done" in again.stdout
    folder = tmp_path / "out" / "sweep"
    metadata = pd.read_csv(folder / "metadata.csv")
    assert all(name.endswith(".webp") and (folder / name).is_file() for name in metadata["file_name"])
    assert len(list(folder.glob("cat-*.png"))) == 2  # the png results stay until `prune` moves them out
    assert "2 already done" in batch_edit("plan", *run[1:], cwd=tmp_path).stdout
