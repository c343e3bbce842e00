"""Source bytes -> a fully loaded image: which decoders read them, the pixel limit, and any Pillow mode made RGB.

Whatever a decoder makes of bad bytes (Pillow raises OSError, ValueError, SyntaxError, struct.error and more,
some while opening, some while loading) becomes a one-line SourceError: the item's failure, never a traceback.
The pixel limit is ours, not Pillow's process-wide MAX_IMAGE_PIXELS, which would refuse a 180-megapixel camera
photo and print a warning between one and two times its limit: `open_image` is the one way this project opens an
image it did not make (sources for the run, the contact sheet's source, the sizes `plan` measures). Pillow's
limit still applies inside its decoders (a TIFF's pixel buffer, a WebP's canvas, a GIF frame past the screen), so
it is set to refuse exactly what ours refuses, and its refusals are given our message.
A file that starts like an image but ends before its header does is a truncated image, not "not an image".
Pillow's own warnings about what it skipped while decoding (a corrupt EXIF block, a malformed MPO) are silenced:
the image still decodes, and on a terminal they would print two traceback-like lines in the middle of a run.
libtiff's warnings (a text tag without its closing NUL, say) never print: Pillow's libtiff decoder sets no warning
handler before each file it opens. Its errors, for a compressed TIFF that fails to decode, do go to stderr (Pillow
offers no way to stop them), beside that item's one-line failure. They are not silenced by pointing file
descriptor 2 elsewhere around the decode: that is process-wide, and the prefetch thread decodes while the main
thread writes the progress line and the log, which would be lost meanwhile.
"""

from __future__ import annotations

import re
import struct
import warnings
from io import BytesIO
from typing import BinaryIO

from PIL import Image, ImageOps

# Only decoders for the suffixes sources read: fewer parsers exposed to whatever a URL hands us.
DECODER_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# A 200-megapixel phone photo or a stitched panorama decodes; decoded it takes 3 bytes a pixel (768 MB at the limit,
# more while converting), so a source past it is refused before its pixels are read.
MAX_SOURCE_PIXELS = 256_000_000
# What each decoder's signature starts with: a file shorter than its signature is not yet taken by the decoder
# (which needs all of it), yet it is an image cut short. "?" stands for any byte (a RIFF chunk's size).
_SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "GIF": (b"GIF87a", b"GIF89a"),
               "WEBP": (b"RIFF????WEBPVP8?",), "TIFF": (b"II*\x00", b"MM\x00*")}  # fmt: skip
_PILLOW_BOMB = re.compile(r"Image size \((\d+) pixels\)")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Pillow's libtiff decoder reports a failure as its status code alone ("decoder error -2"): what each code means
# (Pillow's own names: buffer overrun, broken data stream, unrecognized data stream contents, codec configuration
# error, out of memory).
_DECODER_CODE = re.compile(r"decoder error (-?\d+)")
_DECODER_CODES = {
    -1: "the file's image data does not fit the image's size",
    -2: "the file's compressed data cannot be decoded",
    -3: "the file's image data is in a form the decoder does not recognise",
    -8: "the decoder cannot be set up for the file's compression or layout",
    -9: "not enough memory to decode the file's image data",
}
# Once for the process, not catch_warnings around each decode: that swaps the global filter list, which is not
# thread-safe, and the prefetch thread decodes while the main thread runs. Only the plain UserWarnings Pillow's
# decoders and EXIF reader give (a DecompressionBombWarning is a RuntimeWarning, its deprecations are not this).
warnings.filterwarnings(
    "ignore", category=UserWarning, module=r"PIL\.(Image|TiffImagePlugin|JpegImagePlugin|PngImagePlugin)$"
)
# Pillow warns between one and two times its limit: with its limit half of ours, that is below our limit.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


ORIENTATION_TAG = 0x0112  # EXIF Orientation: how the stored pixels are turned for display
ORIENTATION_INFO = "batch-edit orientation"  # a decoded image's info: the EXIF orientation applied to its pixels
# what exif_transpose does for each orientation (Pillow's table); 5 to 8 swap width and height
TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # fmt: skip


def applied_orientation(img: Image.Image) -> int:
    """The EXIF orientation `decode_image` turned the image's stored pixels by (1: none)."""
    return img.info.get(ORIENTATION_INFO, 1)


class SourceError(Exception):
    """One source failed to load; str() is a short reason the user can act on, `reason` the same without what
    varies from file to file (its path, its size, the decoder's detail): what a run's summary groups failures by."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def decode_image(data: bytes, convert=None) -> Image.Image:
    """Bytes -> the fully loaded image (first frame, camera rotation applied; `convert` instead of `to_rgb` picks
    another mode), or SourceError."""
    img = open_image(BytesIO(data))
    try:
        img.load()  # open_image only read the header: broken pixel data shows up here
        orientation = img.getexif().get(ORIENTATION_TAG, 1)
        decoded = (convert or to_rgb)(ImageOps.exif_transpose(img))
        if orientation in TRANSPOSES:  # what was turned: a mask drawn on the stored pixels is turned alike (masks)
            decoded.info[ORIENTATION_INFO] = orientation
        return decoded
    except Image.DecompressionBombError as exc:  # a TIFF's pixels or a GIF frame past the screen: over our limit
        raise _too_many_pixels(exc) from None
    except MemoryError:
        raise SourceError("not enough memory to decode the image") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder makes of bad bytes is this source's failure
        raise _decode_error(exc, data[:12], len(data)) from None


def open_image(fp: BinaryIO) -> Image.ImageFile.ImageFile:
    """The image's header read from a seekable binary file by the first decoder that takes it, as Image.open does,
    with our pixel limit in place of Pillow's (which it neither warns nor errors about), or SourceError. Nothing
    is decoded yet; the caller closes `fp`."""
    Image.init()
    # Pillow refuses above twice its limit (and only warns below): the same pixels as ours. Set on each opening,
    # always to the same value, so that the limit a caller sets is the one both apply.
    Image.MAX_IMAGE_PIXELS = (MAX_SOURCE_PIXELS + 1) // 2
    head = fp.read(16)
    size = fp.seek(0, 2)
    taken_by = None  # the first decoder whose signature the file starts with
    for fmt in DECODER_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(head):
            continue
        taken_by = taken_by or fmt
        fp.seek(0)
        try:
            img = factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error) as exc:
            if fp.tell() >= size:  # it read to the end of the file: a header cut short, whatever it says
                raise _truncated_header(fmt, size) from None
            error = exc
            continue  # not this format after all, as Image.open sees it
        except Image.DecompressionBombError as exc:  # a WebP's canvas, checked before it is made
            fp.seek(0)
            canvas = _webp_canvas(fp.read(30))
            if canvas:
                _check_pixels(*canvas)
            raise _too_many_pixels(exc) from None
        except Exception as exc:  # noqa: BLE001 - a decoder that reads pixels while opening (WebP) fails here
            raise _decode_error(exc, head, size) from None
        _check_pixels(*img.size)
        return img
    if taken_by is not None:
        words = " ".join(str(error).split()) or type(error).__name__
        raise SourceError(f"corrupt image: a {taken_by} file whose header cannot be read ({words})", "corrupt image")
    if cut := next((fmt for fmt, starts in _SIGNATURES.items() if any(_starts(head, s) for s in starts)), None):
        raise _truncated_header(cut, size)
    raise SourceError("not an image")


def _starts(head: bytes, signature: bytes) -> bool:
    """Whether `head`, shorter than `signature` (and two bytes at least), is its beginning."""
    if not 2 <= len(head) < len(signature):
        return False
    return all(want in (got, ord("?")) for got, want in zip(head, signature))


def _truncated_header(fmt: str, size: int) -> SourceError:
    noun = "byte" if size == 1 else "bytes"
    return SourceError(f"truncated image: a {fmt} file that ends within its header ({size} {noun})", "truncated image")


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_SOURCE_PIXELS:
        raise SourceError(
            f"too many pixels: {width}x{height} is {_megapixels(width * height)} megapixels, over the "
            f"{MAX_SOURCE_PIXELS / 1e6:g}-megapixel limit for a source",
            "too many pixels",
        )


def _too_many_pixels(exc: Image.DecompressionBombError) -> SourceError:
    """Pillow's refusal from inside a decoder (no width and height known here), in our words."""
    found = _PILLOW_BOMB.search(str(exc))
    pixels = f"{_megapixels(int(found.group(1)))} megapixels" if found else "the image's size"
    return SourceError(
        f"too many pixels: {pixels}, over the {MAX_SOURCE_PIXELS / 1e6:g}-megapixel limit for a source",
        "too many pixels",
    )


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    """A WebP's width and height from its first chunk (Pillow refuses an over-limit canvas without them): VP8X's
    canvas (24-bit sides less one), a lossless VP8L's (14-bit sides less one after its 0x2f signature), a lossy
    VP8's key frame (14-bit sides after its start code). None for anything else."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def _megapixels(pixels: int) -> str:
    """Pixels over the limit in megapixels, with the fewest decimals that show them over it (256.02, not 256)."""
    decimals = 0
    while round(pixels / 1e6, decimals) <= MAX_SOURCE_PIXELS / 1e6 and decimals < 6:
        decimals += 1
    return f"{pixels / 1e6:.{decimals}f}"


def _decode_error(exc: Exception, head: bytes, size: int) -> SourceError:
    """One line: 'truncated image' where the file ends too early, else 'corrupt image: <the decoder's words>' (a
    bare status code said in words, the code after them).
    Pillow says a file ended early in several ways: "Truncated File Read" (a header cut short), "image file is
    truncated" (pixel data), "truncated PNG file", "Truncated IHDR chunk", or an EOFError."""
    if "truncated" in str(exc).lower() or isinstance(exc, EOFError) or _riff_cut_short(head, size):
        return SourceError("truncated image")
    words = " ".join(str(exc).split()) or type(exc).__name__
    if code := _DECODER_CODE.fullmatch(words):  # a bare status code (libtiff's), in words with the code after
        meaning = _DECODER_CODES.get(int(code.group(1)), "the decoder failed on the file's image data")
        return SourceError(f"corrupt image: {meaning} (Pillow: {words})", "corrupt image")
    return SourceError(f"corrupt image: {words}", "corrupt image")


def _riff_cut_short(head: bytes, size: int) -> bool:
    """A WebP holds fewer bytes than its RIFF header says it has (libwebp reports only that it failed)."""
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and size < 8 + int.from_bytes(head[4:8], "little")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited over white, high bit depths are scaled, not clipped."""
    if img.mode.startswith("I") or img.mode == "F":
        return _over_white(_deep_to_rgb(img), _deep_alpha(img))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _over_white(img.convert("RGBA"), None)  # P/L/RGB + tRNS and premultiplied modes all land here
    return img if img.mode == "RGB" else img.convert("RGB")


def _over_white(img: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """`img` composited over white through its alpha (or `alpha`); RGB without either."""
    if alpha is None and img.mode != "RGBA":
        return img
    rgba = img.convert("RGBA")
    if alpha is not None:
        rgba.putalpha(alpha)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _deep_alpha(img: Image.Image) -> Image.Image | None:
    """A 16-bit grey PNG's tRNS names one grey level as transparent: its mask, compared at full depth (the 8-bit
    grey would also hide the 256 levels around it). None without one."""
    key = img.info.get("transparency")
    if not isinstance(key, int) or isinstance(key, bool):
        return None
    import numpy as np  # here, as below: only deep images need it, and its import is a tenth of `plan`'s start

    return Image.fromarray(np.where(np.asarray(img) == key, 0, 255).astype(np.uint8))


def _deep_to_rgb(img: Image.Image) -> Image.Image:
    # convert("L") would clip 16-bit values to 255 (a white picture); scale the range instead.
    import numpy as np

    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Floats in 0..1 are the common convention (linear/normalized data); anything else is taken as 0..255.
        scaled = arr * 255.0 if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else arr
    elif img.mode == "I" and arr.size and arr.max() <= 255:
        # 32-bit "I" says nothing of the range (Pillow opens 16-bit PNGs as I;16): values that fit 0..255 are
        # 8-bit data (a TIFF written from an int32 array of 0/255), which scaling as 16-bit would turn black.
        scaled = arr.astype(np.float64)
    else:  # I;16* are 16-bit by definition; an "I" image beyond 255 is taken as 16-bit, above 65535 white
        scaled = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
