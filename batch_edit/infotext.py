"""The `parameters` text ("infotext") in the AUTOMATIC1111 layout that every result carries (formats.save_image
puts it where each format keeps it, beside the full record as JSON): read by the WebUI's PNG Info, ComfyUI
loaders, sd-parsers..."""

from __future__ import annotations

import json
import re

from . import __version__
from .parameters import LAST, labels

# Every character str.splitlines() breaks on: A1111 readers split the chunk into lines, so a prompt must be one.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# Readers split the prompt text at "Negative prompt:" wherever it stands (sd-parsers), or at a line starting so.
_NEGATIVE_LABEL = re.compile(r"(negative prompt)\s*:", re.IGNORECASE)


def a1111_parameters(row: dict) -> str:
    """The prompt on ONE line, then the settings line. A1111 readers take the last line with settings as the
    settings and text after `Negative prompt:` as the negative prompt, so in this chunk the prompt's line breaks
    are written as spaces and its own `Negative prompt:` as `Negative prompt :`: prompt text can forge neither,
    and every value that could (a source path, a model name) is JSON-quoted. The exact prompt is in the
    `batch-edit` chunk."""
    placed = [  # (place, label, value): the parameters' labels among the settings that are no parameters
        (1, "Sampler", "Euler"),  # FLUX's flow-matching Euler scheduler
        # FLUX's guidance is distilled (an input of the model, one pass per step): Forge writes it so and real CFG as
        # 1; a reader taking "CFG scale: 3.5" would run two passes per step at CFG 3.5, another image
        (2, "CFG scale", "1"),
        (5, "Model", row.get("model", "")),
        *([(5, "Task", row["task"])] if row.get("task") else []),  # recorded where it is not img2img
        (7, "Source", row["source"]),
        (9, "Quantization", row.get("quantization", "")),
        *([(LAST, "Mask", row["mask"])] if row.get("mask") else []),
        (LAST + 1, "Item id", row["item_id"]),
        (LAST + 2, "Version", f"batch-edit {__version__}"),
        # the value the result has (its size, not the one asked); width and height as one "Size: WxH"
        *(
            (at, label, "x".join(str(row[p.name]) for p in shown))
            for label, (at, shown) in labels("a1111").items()
            # mask blur: only where there is a mask; a parameter the task does not take (strength): no label
            if all((p.needs is None or row.get(p.needs)) and row.get(p.name) is not None for p in shown)
        ),
    ]
    fields = sorted(placed, key=lambda entry: entry[0])
    settings = ", ".join(f"{key}: {_a1111_quote(str(value))}" for _, key, value in fields)
    loras = f" {row['loras']}" if row.get("loras") else ""  # the WebUI writes LoRAs as <lora:name:scale> in the prompt
    prompt = _NEGATIVE_LABEL.sub(r"\1 :", one_line(row["prompt"]))
    return f"{prompt}{loras}\n{settings}"


def one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _a1111_quote(text: str) -> str:
    """As the WebUI writes infotext: values with ',', ':' or a line break become JSON strings."""
    if not any(c in text for c in ',:"') and one_line(text) == text:
        return text
    # json.dumps escapes the ASCII line breaks but leaves these three raw; they would split the settings line
    return re.sub("[\x85\u2028\u2029]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))
