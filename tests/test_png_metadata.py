"""Metadata inside every image, read back with the outside tools people use."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from batch_edit.outputs import JobOutput
from batch_edit.plan import make_item
from batch_edit.sources import SourceRef

PROMPT = 'a "tiger", photo: 35mm, warm light'
SOURCE = SourceRef(key="/data/cats, 2024/cat:1.jpg", is_url=False, stem="cat:1", fingerprint="1-1", caption=None)
# The WebUI's own infotext pattern (modules/infotext_utils.py): quoted values may hold ',' and ':'.
WEBUI_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@pytest.fixture
def written(tmp_path):
    params = dict(
        strength=0.85, num_inference_steps=28, guidance_scale=3.5, seed=100, width=64, height=48, resize="fit"
    )
    item = make_item("job", SOURCE, PROMPT, params, "{}")
    output = JobOutput(tmp_path, "job")
    output.open("model: m\n")
    extra = {"model": "black-forest-labs/FLUX.1-dev", "quantization": "quanto(transformer=qint8)", "seconds": 1.5}
    output.write_image(item, Image.new("RGB", (64, 48), "red"), extra)
    output.close()
    return item, Image.open(output.folder / item.output_name)


def test_sd_parsers_reads_the_automatic1111_parameters(written):
    sd_parsers = pytest.importorskip("sd_parsers")
    item, image = written
    info = sd_parsers.ParserManager().parse(image)
    assert info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    assert sampler.prompts[0].value == PROMPT
    assert sampler.parameters["seed"] == "100" and sampler.parameters["steps"] == "28"
    # FLUX's guidance as Forge writes it: distilled guidance 3.5, real CFG 1
    assert sampler.parameters["cfg_scale"] == "1" and info.metadata["Distilled CFG Scale"] == "3.5"
    assert sampler.model.name == "black-forest-labs/FLUX.1-dev"
    assert info.metadata["Denoising strength"] == "0.85" and info.metadata["Size"] == "64x48"


def test_values_with_commas_and_colons_are_quoted_as_the_webui_does(written):
    item, image = written
    prompt, settings = image.text["parameters"].rsplit("\n", 1)
    assert prompt == PROMPT
    parsed = {
        key: json.loads(value) if value.startswith('"') else value for key, value in WEBUI_PARAM.findall(settings)
    }
    assert parsed["Source"] == SOURCE.key and parsed["Quantization"] == "quanto(transformer=qint8)"
    assert parsed["Item id"] == item.item_id and parsed["Resize"] == "fit" and parsed["Seed"] == "100"


def test_the_full_record_is_a_json_chunk(written):
    item, image = written
    record = json.loads(image.text["batch-edit"])
    assert record["item_id"] == item.item_id and record["prompt"] == PROMPT and record["seed"] == 100
    assert record["file_name"] == item.output_name and record["seconds"] == 1.5
