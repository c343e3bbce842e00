"""Messages about sources and names worded as they are: a source just over the pixel limit shown over it, every
way Pillow says a file ends early one reason, Pillow's decoder warnings kept off the terminal, a name clash made
by the cut at MAX_NAME_CHARS said so, format specs checked with values a placeholder takes, UTF-32 text read."""

from __future__ import annotations

import codecs
import io
import struct
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from batch_edit.captions import read_caption
from batch_edit.csv_table import decode_csv
from batch_edit.errors import ManifestError
from batch_edit.file_names import MAX_NAME_CHARS, template_problems
from batch_edit.manifest import load_manifests
from batch_edit.plan import plan_jobs
from batch_edit.source_decoding import SourceError, decode_image
from batch_edit.text_encoding import TextEncodingError, decode_text_file
from batch_edit.validation import decode_yaml

from .conftest import PHOTOS
from .http_fixtures import png_header

# ---------------------------------------------------------------- decoding


def test_a_source_just_over_the_pixel_limit_shows_by_how_much():
    with pytest.raises(SourceError) as info:
        decode_image(png_header(16000, 16001))  # 256,016,000 pixels: "256" would read as the limit itself
    assert str(info.value) == (
        "too many pixels: 16000x16001 is 256.02 megapixels, over the 256-megapixel limit for a source"
    )
    with pytest.raises(SourceError, match="is 1600 megapixels, over"):  # no decimals where none are needed
        decode_image(png_header(40000, 40000))


def _saved(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (100, 50, 20)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, cut",
    [("JPEG", 0.5), ("JPEG", 100), ("PNG", 20), ("BMP", 20), ("PNG", 0.5), ("BMP", 0.5), ("TIFF", 0.5)],
)
def test_every_way_pillow_says_a_file_ends_early_is_a_truncated_image(fmt, cut):
    # "Truncated File Read" (a header cut short), "image file is truncated", "truncated PNG file", an EOFError
    data = _saved(fmt)
    with pytest.raises(SourceError) as info:
        decode_image(data[: int(len(data) * cut) if cut < 1 else cut])
    assert (str(info.value), info.value.reason) == ("truncated image", "truncated image")


def test_bytes_that_are_not_cut_short_are_still_a_corrupt_image():
    data = bytearray(_saved("PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 4] = b"\xff\xff\xff\xff"  # the pixels' zlib header
    with pytest.raises(SourceError) as info:
        decode_image(bytes(data))
    assert str(info.value) == "corrupt image: broken data stream when reading image file"
    assert info.value.reason == "corrupt image"


def _jpeg_with_corrupt_exif() -> bytes:
    """A JPEG whose EXIF block says it holds one tag and ends 2 bytes into it (Pillow: "Corrupt EXIF data")."""
    orientation = struct.pack("<HHLHH", 0x0112, 3, 1, 6, 0)  # rotate 90: never read, the entry is cut
    tiff = b"II*\x00" + struct.pack("<LH", 8, 1) + orientation[:10]
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buffer, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


@pytest.mark.parametrize("warning_option", [[], ["-W", "error"]])
def test_pillows_decoder_warnings_print_nothing_and_the_image_still_decodes(tmp_path, warning_option):
    # In a fresh interpreter as the command runs: pytest collects and runs tests inside catch_warnings blocks,
    # which would undo the filter the module installs once on import.
    source = tmp_path / "corrupt-exif.jpg"
    source.write_bytes(_jpeg_with_corrupt_exif())
    code = (
        "import sys; from batch_edit.source_decoding import decode_image; "
        "from pathlib import Path; print(decode_image(Path(sys.argv[1]).read_bytes()).size)"
    )
    command = [sys.executable, *warning_option, "-c", code, str(source)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "(40, 20)\n")


def test_pillows_warnings_stay_visible_to_code_that_asks_for_them():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decode_image(_jpeg_with_corrupt_exif())
    assert any("Corrupt EXIF data" in str(warning.message) for warning in caught)


# ---------------------------------------------------------------- file names


def _plan(tmp_path, file_name: str):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        textwrap.dedent(f"""\
            jobs:
              - {{name: a, sources: {PHOTOS / "cat.jpg"}, prompts: x, resize: [center-crop, pad],
                 file_name: "{file_name}"}}
            """)
    )
    (loaded,) = load_manifests([manifest], output_root=tmp_path / "out")
    return plan_jobs(loaded.jobs, {"model": "x"})


def test_a_clash_made_by_the_cut_at_the_name_limit_says_so(tmp_path):
    with pytest.raises(ManifestError) as info:
        _plan(tmp_path, "{stem}_{width:0>300}_{height}_{resize}")  # {resize} tells them apart, past the cut
    message = str(info.value)
    assert f"names are cut at {MAX_NAME_CHARS} characters and these differ only after that" in message
    assert "write a shorter format" in message and "such as {id}" not in message


def test_a_clash_the_template_makes_still_asks_for_a_placeholder(tmp_path):
    with pytest.raises(ManifestError) as info:
        _plan(tmp_path, "{stem}_{width}")
    assert "add a placeholder that tells them apart, such as {id}" in str(info.value)
    assert "names are cut" not in str(info.value)


def test_format_specs_are_checked_with_values_the_placeholder_takes():
    assert template_problems("{width:c}_{height:c}_{variation:c}") == []  # 16..4096, 0..9999: characters all
    (width,) = template_problems("{width:s}")
    assert "{width} is a whole number (such as 16)" in width
    (steps,) = template_problems("{steps:x}{steps:.2}")
    assert "{steps} is a whole number (such as 1)" in steps
    (seed,) = template_problems("{seed:c}")  # a seed may be as large as SEED_MAX
    assert "(such as 9223372036854775807)" in seed
    (index,) = template_problems("{index:c}")
    assert "(such as 9999999)" in index  # the last item of the largest run
    (resize,) = template_problems("{resize:d}")
    assert "(such as 'center-crop')" in resize


# ---------------------------------------------------------------- UTF-32 text


@pytest.mark.parametrize("encoding", ["utf-32", "utf-32-le", "utf-32-be"])
def test_utf32_text_with_its_byte_order_mark_is_read(encoding):
    text = "name,prompt\ncafé,a 🐈 on a mat\n"
    bom = {"utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}.get(encoding, b"")
    data = bom + text.encode(encoding)
    assert decode_text_file(data, "save it as UTF-8") == text
    assert decode_csv(data) == text and decode_yaml(data) == text


def test_a_utf32_caption_file_gives_its_caption(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_bytes("a tabby cat\r\n".encode("utf-32"))
    assert read_caption(tmp_path / "cat.png").text == "a tabby cat"


@pytest.mark.parametrize("encoding, named", [("utf-32-le", "little-endian"), ("utf-32-be", "big-endian")])
def test_utf32_without_its_byte_order_mark_is_named_as_such(encoding, named):
    with pytest.raises(TextEncodingError) as info:
        decode_text_file("name,prompt\n".encode(encoding), "save it as UTF-8")
    assert str(info.value) == f"the file looks like UTF-32 ({named}) text without a byte-order mark; save it as UTF-8"


def test_invalid_utf32_is_refused_as_utf32():
    with pytest.raises(TextEncodingError, match=r"^not valid UTF-32 text \(.* at byte 4\); save"):
        decode_text_file(codecs.BOM_UTF32_LE + b"\xff\xff\xff\xff", "save it as UTF-8")
