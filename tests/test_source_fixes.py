"""Source images and caption files: caption encodings, every caption problem listed, the pixel limit, decoder
errors as one-line reasons, 16-bit grey transparency."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifests
from batch_edit.source_decoding import SourceError, decode_image, to_rgb
from batch_edit.sources import fit_image, source_ref
from tests.http_fixtures import png_header


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


@pytest.mark.slow
def test_a_102_megapixel_camera_jpeg_loads():
    buffer = io.BytesIO()
    Image.new("RGB", (11648, 8736), (120, 130, 140)).save(buffer, "JPEG", quality=90)
    decoded = decode_image(buffer.getvalue())
    assert decoded.size == (11648, 8736)
    assert fit_image(decoded, 1024, 1024, "center-crop").getpixel((5, 5)) == (120, 130, 140)
