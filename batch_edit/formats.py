"""Result image files: PNG, JPEG or WebP, each carrying the item's parameters where the usual readers look.

PNG: a `parameters` text chunk (AUTOMATIC1111's layout) and a `batch-edit` chunk with the record as JSON.
JPEG and WebP: what the WebUI writes for them, the `parameters` text in EXIF UserComment (tag 0x9286 of the Exif
IFD, the 8-byte "UNICODE\\0" prefix then UTF-16 big-endian, as piexif's `UserComment.dump(..., "unicode")`), and
the record as ASCII-only JSON in EXIF ImageDescription (tag 0x010E), which tools that keep EXIF keep as well.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
DEFAULT_QUALITY = 95  # jpeg and webp; png is lossless and takes none
EXIF_IFD, USER_COMMENT, IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E
JPEG_EXIF_MOST = 65533  # the EXIF bytes one JPEG APP1 segment holds: Pillow refuses more ("EXIF data is too long")
UNICODE_PREFIX = b"UNICODE\0"


@dataclass(frozen=True)
class OutputOptions:
    """How an item's result is written: not part of its id, so changing them never changes seeds or ids."""

    format: str = "png"
    quality: int | None = None  # jpeg/webp: 1-100 (DEFAULT_QUALITY when not given); png: None
    captions: bool = False  # a `<image stem>.txt` with the prompt beside the image


def with_extension(stem: str, format: str) -> str:
    """The one place a result's extension is chosen: an item's planned file name follows its format."""
    return stem + EXTENSIONS[format]


def caption_name(file_name: str) -> str:
    """kohya/sd-scripts' convention: the caption of `cat-1.jpg` is `cat-1.txt`, in the same folder."""
    return str(Path(file_name).with_suffix(".txt"))


def save_image(handle: BinaryIO, image: Image.Image, options: OutputOptions, parameters: str, record: dict) -> None:
    record_json = json.dumps(record, ensure_ascii=options.format != "png", sort_keys=True)
    if options.format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
        info.add_text("batch-edit", record_json)
        image.save(handle, format="PNG", pnginfo=info)
        return
    exif = _exif(parameters, record_json)
    image.save(handle, format=options.format.upper(), quality=options.quality or DEFAULT_QUALITY, exif=exif)


def _exif(parameters: str, record_json: str) -> Image.Exif:
    exif = Image.Exif()
    exif[IMAGE_DESCRIPTION] = record_json  # ASCII-only JSON: EXIF ASCII fields take nothing else
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = UNICODE_PREFIX + parameters.encode("utf-16-be")
    return exif


def exif_length(parameters: str, record: dict) -> int:
    """The bytes of the EXIF block a JPEG or WebP result carrying `parameters` and `record` gets, as the encoder
    is handed it (JPEG holds at most JPEG_EXIF_MOST); nothing encoded."""
    return len(_exif(parameters, json.dumps(record, ensure_ascii=True, sort_keys=True)).tobytes())


def embedded_record(image: Image.Image) -> dict | None:
    """The JSON record a result carries (PNG chunk or EXIF ImageDescription); None if it has none."""
    text = image.info.get("batch-edit") if image.format == "PNG" else image.getexif().get(IMAGE_DESCRIPTION)
    try:
        record = json.loads(text) if text else None
    except (TypeError, ValueError, RecursionError):  # an edited file: not JSON, nested too deep, a huge number
        return None
    return record if isinstance(record, dict) else None


def as_stored(image: Image.Image, stored: Image.Image) -> Image.Image:
    """`image` encoded and decoded the way `stored` was (its format, and the quality its record names), so a
    re-rendered result compares with a lossy file pixel for pixel: the same pixels encode to the same file."""
    if stored.format not in ("JPEG", "WEBP"):
        return image
    record = embedded_record(stored) or {}
    options = OutputOptions(stored.format.lower(), record.get("quality") or DEFAULT_QUALITY)
    buffer = io.BytesIO()
    save_image(buffer, image.convert("RGB"), options, "", {})
    buffer.seek(0)
    return Image.open(buffer)
