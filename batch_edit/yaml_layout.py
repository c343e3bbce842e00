"""What to do about a YAML file whose indentation the parser cannot follow, in the file's own terms: the key that
starts at a column where none of the keys above it does, the line indented under a key that holds a value
already, the tab among the leading spaces. The parser says only "expected <block end>, but found ..."."""

from __future__ import annotations

import re

from .validation import printable

# A line holding a key: its indentation, a list item's dash, the key (plain spellings only)
_KEY_LINE = re.compile(r"( *)(- +)?([A-Za-z_][\w-]*):(?:\s+(\S.*))?\s*$")


def layout_hint(lines: list[str], index: int, problem: str) -> str:
    """A hint for the parser's `problem` at line `index` (0-based) of `lines`, or "" where none applies."""
    line = lines[index] if 0 <= index < len(lines) else ""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if "\t" in indent or problem.startswith("found character '\\t'"):
        return f"; YAML indents with spaces only: line {index + 1} has a tab, write spaces instead"
    found = _KEY_LINE.fullmatch(line)
    if not found:
        return ""
    column, key = _key_column(found), found[3]
    above = [(at, _KEY_LINE.fullmatch(text)) for at, text in enumerate(lines[:index]) if _meaningful(text)]
    keys = [(at, match) for at, match in above if match]
    if not above:
        return ""
    last_at, last = above[-1]
    if last and last[4] and not last[4].startswith(("|", ">", "&", "#")) and column > _key_column(last):
        return (
            f"; line {index + 1} is indented deeper than line {last_at + 1}, whose key {printable(last[3])}: holds a "
            f"value already: start {printable(key)}: at column {_key_column(last) + 1}, as {printable(last[3])}: is"
        )
    if "block end" not in problem or any(_key_column(match) == column for _, match in keys):
        return ""
    # the key above nearest in column, the lowest such line first (most likely the sibling meant)
    at, nearest = min(reversed(keys), key=lambda entry: abs(_key_column(entry[1]) - column))
    return (
        f"; {printable(key)}: on line {index + 1} starts at column {column + 1}, where no key above it starts: "
        f"line it up (with spaces) with the key it belongs beside, such as {printable(nearest[3])}: at column "
        f"{_key_column(nearest) + 1} on line {at + 1}"
    )


def _key_column(match: re.Match) -> int:
    return len(match[1]) + len(match[2] or "")


def _meaningful(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")
