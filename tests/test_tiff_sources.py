"""Compressed TIFF sources, which Pillow decodes with libtiff: what libtiff warns about never reaches stderr (it
would cut through the progress line), and a TIFF it cannot decode is still its item's one-line failure."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batch_edit.source_decoding import SourceError, _decode_error, decode_image

SOFTWARE = b"batch-edit-test"


def _lzw_tiff(software: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="TIFF", compression="tiff_lzw", tiffinfo={305: SOFTWARE.decode()})
    return out.getvalue()


def _tiff_libtiff_warns_about(path: Path) -> None:
    """A compressed TIFF whose Software tag lacks its closing NUL: reading its directory, libtiff warns
    ("TIFFFetchNormalTag: Warning, ASCII value for tag "Software" does not end in null byte")."""
    data = _lzw_tiff()
    assert data.count(SOFTWARE + b"\0") == 1
    path.write_bytes(data.replace(SOFTWARE + b"\0", SOFTWARE + b"X"))


# Opens the file with the libtiff Pillow loaded, with libtiff's own warning handler (stderr): shows that the file
# does make libtiff warn, so that the test below can fail. Linux only (the library is found in /proc/self/maps).
LIBTIFF_OPEN = """
import ctypes, sys
from PIL import Image
Image.init()
paths = {line.split()[-1] for line in open("/proc/self/maps") if "libtiff" in line.rsplit("/", 1)[-1]}
if len(paths) != 1:
    sys.exit(3)
libtiff = ctypes.CDLL(paths.pop())
libtiff.TIFFOpen.restype = ctypes.c_void_p
libtiff.TIFFClose(ctypes.c_void_p(libtiff.TIFFOpen(sys.argv[1].encode(), b"r")))
"""

DECODE = """
import sys
from batch_edit.source_decoding import decode_image
image = decode_image(open(sys.argv[1], "rb").read())
print(image.mode, image.size)
"""


def _python(script: str, *args: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter: libtiff's warning handler is process-wide, so no earlier decode in this
    process may have set it."""
    command = [sys.executable, "-c", textwrap.dedent(script), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def test_libtiff_warnings_while_a_source_decodes_stay_off_stderr(tmp_path):
    source = tmp_path / "warns.tif"
    _tiff_libtiff_warns_about(source)
    opened = _python(LIBTIFF_OPEN, str(source))
    if opened.returncode == 3:
        pytest.skip("Pillow's libtiff not found in /proc/self/maps")
    assert opened.returncode == 0 and "does not end in null byte" in opened.stderr, opened.stderr
    decoded = _python(DECODE, str(source))
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout.strip() == "RGB (48, 32)" and decoded.stderr == ""


def test_a_compressed_tiff_libtiff_cannot_decode_is_the_items_failure():
    data = bytearray(_lzw_tiff())
    start = Image.open(io.BytesIO(bytes(data))).tag_v2[273][0]  # the first strip's offset
    # after its first codes, 9-bit codes of 511: far past the 258 entries an LZW table starts with
    data[start + 4 : start + 104] = b"\xff" * 100
    with pytest.raises(SourceError, match=r"^corrupt image: ") as refused:
        decode_image(bytes(data))
    assert refused.value.reason == "corrupt image"  # what the summary counts it by
    # libtiff's failure comes as a bare status code: said in words, the code after them
    assert (
        str(refused.value) == "corrupt image: the file's compressed data cannot be decoded (Pillow: decoder error -2)"
    )


def test_a_decoder_status_code_without_a_meaning_known_here_is_still_said_in_words():
    error = _decode_error(OSError("decoder error -7"), b"II*\x00", 1000)
    assert str(error) == "corrupt image: the decoder failed on the file's image data (Pillow: decoder error -7)"
    assert error.reason == "corrupt image"
