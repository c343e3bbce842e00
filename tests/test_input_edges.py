"""Inputs at their edges: CSV whole-number cells read as YAML reads them, one pixel limit for every source format,
source files cut short in their header, GGUF files that are none, and compile with quanto-quantized text
encoders only."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from PIL import Image

from batch_edit import source_decoding
from batch_edit.csv_manifest import load_csv
from batch_edit.errors import ConfigError, ManifestError
from batch_edit.manifest import load_manifest
from batch_edit.pipeline_config import load_pipeline_config
from batch_edit.plan import plan_jobs
from batch_edit.source_decoding import SourceError, decode_image

from .conftest import PHOTOS, batch_edit, image_file, write_pipeline_config

CAT = PHOTOS / "cat.jpg"


def csv_problems(path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(ManifestError) as refused:
        load_csv(path)
    return refused.value.problems


def test_csv_whole_number_cells_are_digits_only_as_in_yaml(tmp_path):
    problems = csv_problems(
        tmp_path / "m.csv",
        f"source,prompt,seed,num_inference_steps,width,variations\n{CAT},x,42.0,+7,1_024,2e1\n{CAT},x,1,4,64,1\n",
    )
    where = f"{tmp_path / 'm.csv'}: row 1 (line 2)"
    assert problems == [
        f"{where}: field 'num_inference_steps': input should be a whole number in digits (got '+7')",
        f"{where}: field 'seed': input should be a whole number in digits (got '42.0')",
        f"{where}: field 'variations': input should be a whole number in digits (got '2e1')",
        f"{where}: field 'width': input should be a whole number in digits (got '1_024')",
    ]
    (tmp_path / "m.yaml").write_text(f"jobs: [{{name: m, sources: {CAT}, prompts: x, seed: 42.0}}]\n")
    with pytest.raises(ManifestError, match="field 'seed': input should be a valid integer"):
        load_manifest(tmp_path / "m.yaml")


def test_a_decimal_comma_stays_a_refusal_in_a_whole_number_column(tmp_path):
    problems = csv_problems(tmp_path / "m.csv", f"source;prompt;strength;num_inference_steps\n{CAT};x;0,5;28,0\n")
    where = f"{tmp_path / 'm.csv'}: row 1 (line 2)"
    assert problems == [f"{where}: field 'num_inference_steps': input should be a whole number in digits (got '28,0')"]


def test_csv_digits_and_a_seed_of_minus_one_read_as_before(tmp_path):
    """Digits (padded or not) are the numbers they were, so the items keep their ids; -1 keeps its own advice."""
    (tmp_path / "rows.csv").write_text(f"source,prompt,seed,num_inference_steps\n{CAT},x, 42 ,007\n")
    (tmp_path / "grid.yaml").write_text(
        f"jobs: [{{name: rows, sources: {CAT}, prompts: x, seed: 42, num_inference_steps: 7}}]\n"
    )
    ids = [[i.item_id for i in plan_jobs(list(load_manifest(tmp_path / n).jobs), {"model": "m"})[0].items]
           for n in ("rows.csv", "grid.yaml")]  # fmt: skip
    assert ids[0] == ids[1] and len(ids[0]) == 1
    problems = csv_problems(tmp_path / "seed.csv", f"source,prompt,seed\n{CAT},x,-1\n")
    assert len(problems) == 1 and "field 'seed': -1 (random) is not supported" in problems[0]


def the_cli_refuses_with(tmp_path, config, text: str, expected: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    planned = batch_edit("plan", "m.csv", "--pipeline", str(config), cwd=tmp_path)
    assert planned.returncode == 2 and expected in planned.stderr, planned.stderr


def test_plan_refuses_a_fractional_seed_in_a_csv_with_exit_2(tmp_path, tiny_config):
    the_cli_refuses_with(tmp_path, tiny_config, f"source,prompt,seed\n{CAT},x,42.0\n",
                         "m.csv: row 1 (line 2): field 'seed': input should be a whole number in digits (got '42.0')")  # fmt: skip


def encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, fmt)
    return buffer.getvalue()


def gif_with_frame_past_its_screen(frame: int, screen: int = 16) -> bytes:
    """A GIF whose one frame (frame x frame) is larger than its logical screen: Pillow grows the image to it."""
    data = bytearray(encoded("GIF", (frame, frame)))
    data[6:10] = screen.to_bytes(2, "little") * 2
    return bytes(data)


@pytest.fixture
def low_limits(monkeypatch):
    """Our limit at 4,096 pixels, Pillow's own far below it (as its 89 megapixels are below our 256)."""
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 4096)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP", "GIF"])
def test_every_format_follows_our_pixel_limit_with_our_message(low_limits, fmt):
    assert decode_image(encoded(fmt, (60, 60))).size == (60, 60)  # 3,600 pixels: under ours, over Pillow's
    with pytest.raises(SourceError, match=r"^too many pixels: (80x80 is )?0\.01 megapixels, over the 0\.004096-"
                                          r"megapixel limit for a source$") as refused:  # fmt: skip
        decode_image(encoded(fmt, (80, 80)))
    assert refused.value.reason == "too many pixels"


def test_a_gif_frame_past_its_screen_follows_our_pixel_limit(low_limits):
    assert decode_image(gif_with_frame_past_its_screen(60)).size == (60, 60)
    with pytest.raises(SourceError, match=r"^too many pixels: 0\.01 megapixels, over the 0\.004096-megapixel"):
        decode_image(gif_with_frame_past_its_screen(80))


@pytest.mark.parametrize("fmt, cut", [("PNG", 2), ("PNG", 8), ("PNG", 12), ("PNG", 40), ("JPEG", 2), ("JPEG", 4),
                                      ("GIF", 4), ("GIF", 20), ("WEBP", 10), ("TIFF", 3), ("TIFF", 24)])  # fmt: skip
def test_a_file_cut_within_its_header_is_a_truncated_image(fmt, cut):
    data = encoded(fmt, (16, 16))[:cut]
    with pytest.raises(SourceError) as refused:
        decode_image(data)
    assert str(refused.value) == f"truncated image: a {fmt} file that ends within its header ({cut} bytes)"
    assert refused.value.reason == "truncated image"


def test_a_damaged_header_is_a_corrupt_image_and_other_bytes_are_not_an_image():
    damaged = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dXXXX" + bytes(200)
    with pytest.raises(SourceError, match=r"^corrupt image: a PNG file whose header cannot be read \(broken PNG"):
        decode_image(damaged)
    with pytest.raises(SourceError, match="^not an image$"):
        decode_image(b"plain text, no image")


def test_a_run_fails_the_cut_short_source_and_edits_the_others(tmp_path, tiny_config):
    good = image_file(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:8])
    (tmp_path / "cut.jpg").write_bytes(CAT.read_bytes()[:2])
    (tmp_path / "m.yaml").write_text(
        "jobs: [{name: j, sources: [good.png, cut.png, cut.jpg], prompts: x, num_inference_steps: 2, width: 64, "
        "height: 48}]\n"
    )
    result = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    folder = tmp_path / "out" / "j"
    assert list(pd.read_csv(folder / "metadata.csv")["source"]) == [good.resolve().as_posix()]
    errors = pd.read_csv(folder / "failures.csv").set_index("source")["error"]
    cut_short = "truncated image: a {} file that ends within its header ({} bytes)"
    assert errors[(tmp_path / "cut.png").as_posix()] == cut_short.format("PNG", 8)
    assert errors[(tmp_path / "cut.jpg").as_posix()] == cut_short.format("JPEG", 2)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"not a gguf file at all", "not a GGUF file (it starts with b'not ', a GGUF file with b'GGUF')"),
        (b"GGUF\x03\x00\x00\x00\x01\x00", "truncated: 10 bytes, fewer than the 24 of a GGUF file's header"),
        (b"", "an empty file, not a GGUF file"),
    ],
)
def test_a_gguf_model_that_is_no_gguf_file_is_refused_at_config_load(tmp_path, tiny_model, content, problem):
    model = tmp_path / "flux-Q8_0.gguf"
    model.write_bytes(content)
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model, quantization="{backend: none}")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    assert str(refused.value) == f"{config}: field 'model': {model.as_posix()}: {problem}"
    the_cli_refuses_with(tmp_path, config, f"source,prompt\n{CAT},x\n", f"error: {config}: field 'model'")


def test_a_gguf_header_passes_the_check(tmp_path, tiny_model):
    model = tmp_path / "flux.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model, quantization="{backend: none}")
    assert load_pipeline_config(config).is_gguf


def test_compile_with_quanto_is_refused_only_where_quanto_quantizes_the_transformer(tmp_path, tiny_model):
    quantized = write_pipeline_config(tmp_path / "q.yaml", tiny_model, compile="regional")
    with pytest.raises(ConfigError, match="compile: regional does not work with quanto-quantized weights .*"
                                          "transformer: qint8.*set quantization.transformer: null"):  # fmt: skip
        load_pipeline_config(quantized)
    encoders_only = write_pipeline_config(tmp_path / "e.yaml", tiny_model, compile="regional",
                                          quantization="{backend: quanto, transformer: null}")  # fmt: skip
    config = load_pipeline_config(encoders_only)
    assert config.compile == "regional" and config.quantization.text_encoder == "qint4"


@pytest.mark.slow  # a real regional compile on the CPU: 15 to 30 s on 2 cores
def test_compile_runs_with_quanto_text_encoders(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "e.yaml", tiny_model, compile="regional", batch_size=1,
                                   quantization="{backend: quanto, transformer: null}",
                                   compile_cache_dir=str(tmp_path / "inductor"))  # fmt: skip
    (tmp_path / "m.yaml").write_text(
        f"jobs: [{{name: j, sources: {CAT}, prompts: x, num_inference_steps: 2, width: 64, height: 48}}]\n"
    )
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")) == 1
