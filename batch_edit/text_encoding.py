"""Text files as editors and spreadsheets save them -> str with universal newlines.

UTF-8 (a byte-order mark dropped), or UTF-16 or UTF-32 where a byte-order mark says so (Notepad's "Unicode",
Excel's "Unicode Text"; UTF-32 from a few editors and scripts). Anything else is refused where it stops being
UTF-8, at its line and column with the byte: a file saved in the computer's code page (Windows-1252 in Western
Europe) cannot be told apart from other code pages for sure, so it is never guessed at. A file of a well-known
binary format (an image, a weights file) is named as such. Manifests (YAML and CSV), pipeline configs and caption
files read their text here.
"""

from __future__ import annotations

import codecs


class TextEncodingError(ValueError):
    """Bytes that are not text in an encoding read here; the message says where and what to do (`advice`)."""


# Files given where text was meant (an image as the manifest, a weights file as the pipeline config): said so,
# not refused at their first byte with advice on saving text as UTF-8
BINARY_STARTS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (or an Office document)"),
)


def binary_kind(data: bytes) -> str | None:
    """What a file of a well-known binary format is ("a PNG image", "a safetensors weights file"), else None."""
    for start, kind in BINARY_STARTS:
        if data.startswith(start):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    if data[:4] == b"GGUF" and data[5:8] == b"\0\0\0":  # a small version number, little-endian
        return "a GGUF model file"
    if data[8:10] == b'{"' and 0 < int.from_bytes(data[:8], "little") <= len(data) - 8:  # a JSON header's length
        return "a safetensors weights file"
    return None


def decode_text_file(data: bytes, advice: str, code_page_note: str = "") -> str:
    """The text of `data`, or TextEncodingError ending with `advice` (how to save the file as UTF-8).
    `code_page_note` follows the Windows-1252 reading of a refused byte (which program saves in that code page)."""
    if kind := binary_kind(data):
        raise TextEncodingError(f"{kind}, not a text file")
    encoding = _bom_encoding(data)
    if encoding == "utf-8-sig" and (unicode := _unmarked_unicode(data)):
        # read as UTF-8 or Windows-1252 it would be refused at a byte and a position that mean nothing to the user
        raise TextEncodingError(f"the file looks like {unicode} text without a byte-order mark; {advice}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8-sig":
            raise TextEncodingError(
                f"not valid {encoding.upper()} text ({exc.reason} at byte {exc.start}); {advice}"
            ) from None
        raise TextEncodingError(_not_utf8(data, exc.start, advice, code_page_note)) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:  # UTF-16 without its byte-order mark reads as UTF-8 with a NUL in every other byte
        where = _position(text[: text.index("\x00")])
        raise TextEncodingError(f"{where}: a NUL character (UTF-16 text without a byte-order mark?); {advice}")
    return text


def _bom_encoding(data: bytes) -> str:
    """The codec a byte-order mark names; UTF-32's are looked for first, as its little-endian one starts as
    UTF-16's does (FF FE) and read as UTF-16 its text would be a NUL after every character."""
    if data[:4] in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):
        return "utf-32"
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    return "utf-8-sig"


def _unmarked_unicode(data: bytes) -> str | None:
    """'UTF-16 (little-endian)', 'UTF-32 (big-endian)' and so on where the file's start looks like that text
    without its byte-order mark, else None: each ASCII character is a byte and one NUL in UTF-16 (after it
    little-endian, before it big-endian), a byte and three NULs in UTF-32; text in UTF-8 or a code page has no NUL
    at all."""
    sample = data[:512]
    if len(sample) < 2 or 0 not in sample:
        return None
    for width in (4, 2):  # UTF-32 first: its NULs would also pass for UTF-16's
        units = len(sample) // width
        for order, ascii_at in (("little-endian", 0), ("big-endian", width - 1)):
            nul_columns = [sample[at::width][:units] for at in range(width) if at != ascii_at]
            # half the characters ASCII or more, as a header is
            if units and all(column.count(0) * 2 >= units for column in nul_columns):
                return f"UTF-{8 * width} ({order})"
    return None


def _not_utf8(data: bytes, start: int, advice: str, code_page_note: str) -> str:
    before = data[:start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8-sig")  # the first error
    byte = data[start]
    guess = bytes([byte]).decode("cp1252", errors="ignore")
    meaning = f", '{guess}' in Windows-1252{code_page_note}" if guess.isprintable() and guess else ""
    return f"{_position(before)}: not UTF-8 text (byte 0x{byte:02x}{meaning}); {advice}"


def _position(before: str) -> str:
    """'line L, column C' of the character that follows `before`."""
    lines = before.split("\n")
    return f"line {len(lines)}, column {len(lines[-1]) + 1}"
