"""Caption files: the text of the same-stem .txt beside a local image, which a prompt's {caption} takes.

Read as editors save text (text_encoding): UTF-8 with or without its byte-order mark, UTF-16 or UTF-32 with
one. A .txt that is there but cannot give a caption (empty, not UTF-8, unreadable) is a problem of that source,
said with the file and, for the encoding, the line, column and byte; it refuses a manifest only where a prompt
uses {caption}, so notes beside photos that no prompt reads refuse nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .fetch_options import human_bytes
from .local_files import NotRegularFile, TooLarge, read_capped
from .text_encoding import TextEncodingError, decode_text_file

MAX_CAPTION_BYTES = 1024 * 1024  # far above any prompt; a bigger .txt is not a caption
SAVE_AS_UTF8 = "save it as UTF-8 (Notepad: Save As, Encoding UTF-8)"


class CaptionFileRefused(ValueError):
    """A .txt that refuses the manifest whatever the prompts: a FIFO, a device, a socket, or over the cap (it is
    never what the user meant as a caption, and reading it could block or never end)."""


@dataclass(frozen=True)
class Caption:
    text: str | None  # None: no usable caption
    problem: str = ""  # why a .txt that is there gives none ("" where there is no .txt)


def read_caption(image: Path) -> Caption:
    txt = image.with_suffix(".txt")
    if txt == image:
        return Caption(None)
    shown = f"caption file '{txt.as_posix()}'"
    try:
        data = read_capped(txt, MAX_CAPTION_BYTES)
    except NotRegularFile as exc:
        if exc.kind == "folder":
            return Caption(None)
        raise CaptionFileRefused(f"{shown} is {exc}: remove it or make it a plain text file") from None
    except TooLarge:
        raise CaptionFileRefused(
            f"{shown} is larger than {human_bytes(MAX_CAPTION_BYTES)} (the caption limit)"
        ) from None
    except FileNotFoundError:
        return Caption(None)
    except OSError as exc:
        return Caption(None, f"{shown} cannot be read ({exc.strerror or exc})")
    try:
        text = decode_text_file(data, SAVE_AS_UTF8).strip()
    except TextEncodingError as exc:
        return Caption(None, f"{shown}: {exc}")
    return Caption(text) if text else Caption(None, f"{shown} is empty")


def missing_caption(key: str, is_url: bool, problem: str) -> str:
    """Why a source has no caption, for a prompt that uses {caption}."""
    if problem:
        return problem
    if is_url:
        return "a URL has no caption file (a CSV manifest's 'caption' column can give one)"
    return f"no caption file '{PurePosixPath(key).with_suffix('.txt')}'"
