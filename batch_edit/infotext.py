"""The `parameters` text ("infotext") in the AUTOMATIC1111 layout that every result carries (formats.save_image
puts it where each format keeps it, beside the full record as JSON): read by the WebUI's PNG Info, ComfyUI
loaders, sd-parsers..."""

from __future__ import annotations

import json
import re

from . import __version__

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
    fields = {
        "Steps": row["num_inference_steps"],
        "Sampler": "Euler",  # FLUX's flow-matching Euler scheduler
        "CFG scale": row["guidance_scale"],
        "Seed": row["seed"],
        "Size": f"{row['width']}x{row['height']}",
        "Model": row.get("model", ""),
        "Denoising strength": row["strength"],
        "Source": row["source"],
        "Resize": row["resize"],
        "Quantization": row.get("quantization", ""),
        "Item id": row["item_id"],
        "Version": f"batch-edit {__version__}",
    }
    settings = ", ".join(f"{key}: {_a1111_quote(str(value))}" for key, value in fields.items())
    loras = f" {row['loras']}" if row.get("loras") else ""  # the WebUI writes LoRAs as <lora:name:scale> in the prompt
    prompt = _NEGATIVE_LABEL.sub(r"\1 :", one_line(row["prompt"]))
    return f"{prompt}{loras}\n{settings}"


def one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _a1111_quote(text: str) -> str:
    """As the WebUI writes infotext: values with ',', ':' or a line break become JSON strings."""
    if not any(c in text for c in ",:\"") and one_line(text) == text:
        return text
    # json.dumps escapes the ASCII line breaks but leaves these three raw; they would split the settings line
    return re.sub("[\x85\u2028\u2029]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))
