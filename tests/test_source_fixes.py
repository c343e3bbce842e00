"""Source images and caption files: caption encodings, every caption problem listed, the pixel limit and JPEG's
reduced decode, decoder errors as one-line reasons, 16-bit grey transparency."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit.errors import ManifestError
from batch_edit.fetch import FetchOptions
from batch_edit.manifest import load_manifests
from batch_edit.sources import (
    SourceError,
    decode_image,
    decode_source,
    fit_decoded,
    fit_image,
    reduced_scale,
    source_ref,
    to_rgb,
)
from batch_edit.worker import SourceCache
from tests.http_fixtures import png_header

from .conftest import batch_edit

IMAGES = Path(__file__).resolve().parents[1] / "jobs" / "images"


def captioned(tmp_path: Path, raw: bytes, name: str = "cat"):
    Image.new("RGB", (16, 16)).save(tmp_path / f"{name}.png")
    (tmp_path / f"{name}.txt").write_bytes(raw)
    return source_ref(f"{name}.png", tmp_path)


def problems(tmp_path: Path, prompt: str = "'{caption}, x'") -> str:
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - {{name: a, sources: '{tmp_path}', prompts: {prompt}}}\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([tmp_path / "m.yaml"])
    return str(info.value)


# ---------------------------------------------------------------- caption encodings


@pytest.mark.parametrize("raw", ["a red card".encode("utf-8-sig"), "a red card".encode("utf-16")])
def test_a_caption_with_a_byte_order_mark_is_its_text(tmp_path, raw):
    assert captioned(tmp_path, raw).caption == "a red card"


def test_a_windows_1252_caption_is_refused_naming_the_file_line_column_and_byte(tmp_path):
    ref = captioned(tmp_path, "café au lait".encode("cp1252"))
    assert ref.caption is None
    message = problems(tmp_path)
    assert f"caption file '{(tmp_path / 'cat.txt').as_posix()}': line 1, column 4: not UTF-8 text" in message
    assert "(byte 0xe9, 'é' in Windows-1252); save it as UTF-8" in message and "\ufffd" not in message


def test_a_utf16_caption_without_byte_order_mark_is_named(tmp_path):
    captioned(tmp_path, "a cat".encode("utf-16-le"))
    message = problems(tmp_path)
    assert "cat.txt' : " not in message and "cat.txt': the file looks like UTF-16 (little-endian)" in message
    assert "control character" not in message


def test_an_undecodable_caption_refuses_nothing_where_no_prompt_uses_it(tmp_path):
    captioned(tmp_path, b"caf\xe9")
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - {{name: a, sources: '{tmp_path}', prompts: x}}\n")
    assert load_manifests([tmp_path / "m.yaml"])[0].jobs[0].grids[0].sources[0].caption is None


# ---------------------------------------------------------------- every caption problem, said for what it is


def test_an_empty_caption_file_is_said_to_be_empty_and_every_caption_problem_is_listed(tmp_path):
    captioned(tmp_path, b"", "a")
    captioned(tmp_path, "hi".encode("utf-16-be"), "b")
    captioned(tmp_path, b"a \x07 bell", "c")
    Image.new("RGB", (16, 16)).save(tmp_path / "d.png")
    message = problems(tmp_path)
    assert f"caption file '{(tmp_path / 'a.txt').as_posix()}' is empty" in message
    assert "no caption was found" not in message
    assert "b.txt': the file looks like UTF-16 (big-endian)" in message
    assert r"for source '" + (tmp_path / "c.png").as_posix() + r"' contains the control character \x07" in message
    assert f"no caption file '{(tmp_path / 'd.txt').as_posix()}'" in message


def test_caption_problems_are_listed_up_to_twenty_then_counted(tmp_path):
    for n in range(25):
        Image.new("RGB", (16, 16)).save(tmp_path / f"p{n:02}.png")
    lines = problems(tmp_path).splitlines()
    assert len(lines) == 21 and "p19.txt" in lines[19]
    assert lines[20].endswith("... and 5 more source(s) with the same kind of problem")


# ---------------------------------------------------------------- decoding: limit, errors, transparency


def test_a_source_between_pillows_limit_and_ours_decodes_without_a_warning():
    # 100 megapixels (a camera's) in a header-only PNG: read past the size check, then found cut short.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SourceError, match="^truncated image$"):
            decode_image(png_header(11000, 9100))


def test_a_truncated_webp_is_a_truncated_image_and_a_corrupt_one_one_line(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "WEBP")
    data = buffer.getvalue()
    with pytest.raises(SourceError, match="^truncated image$"):
        decode_image(data[: len(data) // 2])
    broken = data[:20] + bytes(len(data) - 20)
    with pytest.raises(SourceError) as info:
        decode_image(broken)
    assert str(info.value).startswith("corrupt image") and "\n" not in str(info.value)


def test_a_16_bit_grey_png_with_a_transparent_level_is_composited_over_white():
    arr = np.full((8, 8), 1000, np.uint16)
    arr[0, 1] = 1001  # one level off: not transparent, stays dark
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "PNG", transparency=1000)
    rgb = decode_image(buffer.getvalue())
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == (4, 4, 4)


def test_a_32_bit_grey_image_with_a_transparent_level_is_composited_over_white():
    img = Image.fromarray(np.array([[1000, 3000]], np.int32))  # mode "I", as older Pillows open 16-bit PNGs
    img.info["transparency"] = 1000
    assert to_rgb(img).tobytes() == bytes([255, 255, 255, 12, 12, 12])


# ---------------------------------------------------------------- JPEG decoded at reduced scale


def photo_jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    photo = Image.open(IMAGES / "cat.jpg").convert("RGB").resize(size, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["center-crop", "fit", "pad", "stretch"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_jpeg_decoded_at_reduced_scale_fits_as_the_full_decode_does(mode, orientation):
    data = photo_jpeg((1808, 1200), orientation)
    decoded = decode_source(data, scale_for=reduced_scale(128, 96, mode))
    assert decoded.scale == (8 if mode == "pad" and orientation == 6 else 4) and decoded.size == (
        (1200, 1808) if orientation == 6 else (1808, 1200)
    )
    reduced, full = fit_decoded(decoded, 128, 96, mode), fit_image(decode_image(data), 128, 96, mode)
    assert reduced.size == full.size
    difference = np.abs(np.asarray(reduced, dtype=int) - np.asarray(full, dtype=int))
    assert difference.mean() < 1.0 and difference.max() <= 8
    again = fit_decoded(decode_source(data, scale_for=reduced_scale(128, 96, mode)), 128, 96, mode)
    assert again.tobytes() == reduced.tobytes()  # deterministic: resume and reproduce fit it the same


def test_reduction_only_by_a_scale_dividing_both_sides_with_the_margin_kept():
    assert reduced_scale(128, 96, "center-crop")((1808, 1200)) == 4  # 12.5 source pixels per fitted pixel
    assert reduced_scale(128, 96, "center-crop")((1809, 1200)) == 1  # 1809 is odd
    assert reduced_scale(512, 512, "center-crop")((1808, 1200)) == 1  # 2.3 per pixel: under twice the margin


def test_the_source_cache_keeps_a_jpeg_per_scale_its_fits_need(tmp_path):
    (tmp_path / "big.jpg").write_bytes(photo_jpeg((1808, 1200)))
    ref = source_ref("big.jpg", tmp_path)
    cache = SourceCache(FetchOptions())
    small, large = cache.get(ref, (128, 96, "center-crop")), cache.get(ref, (1024, 768, "center-crop"))
    assert (small.scale, large.scale) == (4, 1) and cache.get(ref, (200, 200, "pad")) is small
    assert cache.get(ref, (128, 96, "center-crop")) is small


def test_a_run_from_a_reduced_jpeg_reproduces_identically(tmp_path, tiny_config):
    (tmp_path / "big.jpg").write_bytes(photo_jpeg((1024, 768)))  # 64x48: decoded at 1/8
    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {name: j, sources: big.jpg, prompts: x, width: 64, height: 48, num_inference_steps: 2}\n"
    )
    run = batch_edit("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metadata = pd.read_csv(tmp_path / "out" / "j" / "metadata.csv")
    same = batch_edit("reproduce", str(tmp_path / "out" / "j" / "metadata.csv"), "--item", metadata["item_id"][0])
    assert same.returncode == 0 and same.stdout.startswith("identical"), same.stdout + same.stderr


@pytest.mark.slow
def test_a_102_megapixel_camera_jpeg_loads():
    buffer = io.BytesIO()
    Image.new("RGB", (11648, 8736), (120, 130, 140)).save(buffer, "JPEG", quality=90)
    decoded = decode_source(buffer.getvalue(), scale_for=reduced_scale(1024, 1024, "center-crop"))
    assert decoded.size == (11648, 8736) and decoded.scale == 4
    assert fit_decoded(decoded, 1024, 1024, "center-crop").getpixel((5, 5)) == (120, 130, 140)
