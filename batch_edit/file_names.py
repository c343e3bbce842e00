"""Result file names: a job's `file_name` template checked, filled in per item and made safe, and two items
that one name would serve found before anything runs. The extension comes from the item's format."""

from __future__ import annotations

import re
import string

from .parameters import axes, labels
from .sources import SourceRef

_PARAMETER_FIELDS = {p.file_field: p.name for p in axes() if p.file_field}  # placeholder -> WorkItem field
FILE_NAME_FIELDS = ("stem", "job", *_PARAMETER_FIELDS, "index", "id", "variation")
DEFAULT_FILE_NAME = "{stem}-{id}"
MAX_NAME_CHARS = 150  # with the extension and a temporary prefix, well under the usual 255-byte limit
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def template_problems(template: str) -> list[str]:
    """What is wrong with a template (unknown or malformed placeholders), as messages; empty when it is fine."""
    allowed = ", ".join(f"{{{name}}}" for name in FILE_NAME_FIELDS)
    try:
        fields = [(field, conversion) for _, field, _, conversion in string.Formatter().parse(template)]
    except ValueError as exc:
        return [f"malformed placeholder ({exc}); allowed are {allowed}"]
    for field, conversion in fields:
        if field is not None and (field not in FILE_NAME_FIELDS or conversion):
            return [f"unknown placeholder {{{field}}}; allowed are {allowed}"]
    try:  # a format spec that does not suit the value, such as {stem:d}
        template.format_map({**{name: 1 for name in FILE_NAME_FIELDS}, "stem": "x", "job": "x", "id": "x"})
    except (ValueError, TypeError) as exc:
        return [f"{template!r} cannot be filled in: {exc}"]
    return []


def default_name(ref: SourceRef, item_id: str) -> str:
    """Human-readable and collision-free: the source's stem, then the item id."""
    return f"{_safe_stem(ref.stem)}-{item_id}"


def _safe_stem(stem: str) -> str:
    return _UNSAFE.sub("_", stem).strip("._-")[:48] or "image"


def namer(job_name: str, template: str):
    """The template as a function of a work item; the default one in its fast form (planning 100,000 items)."""
    stems: dict[str, str] = {}  # per source, sanitized once

    def stem(ref: SourceRef) -> str:
        if ref.key not in stems:
            stems[ref.key] = _safe_stem(ref.stem)
        return stems[ref.key]

    if template == DEFAULT_FILE_NAME:
        return lambda item: f"{stem(item.source)}-{item.item_id}"

    def name(item) -> str:
        fields = dict(
            stem=stem(item.source), job=job_name, index=item.index, id=item.item_id, variation=item.variation,
            **{placeholder: getattr(item, name) for placeholder, name in _PARAMETER_FIELDS.items()},
        )  # fmt: skip
        # no path separators, no leading dot (a hidden file, or "..")
        return _UNSAFE.sub("_", template.format_map(fields)).lstrip(".")[:MAX_NAME_CHARS] or "image"

    return name


def name_clash(template: str, items) -> str | None:
    """The first two items the template gives one name, described; None when every name is distinct."""
    if template == DEFAULT_FILE_NAME:
        return None  # the id makes every default name unique
    seen: dict = {}
    for item in items:
        other = seen.setdefault(item.name.lower(), item)  # lower: case-insensitive file systems
        if other is not item:
            return (
                f"{template!r} gives two items the name {item.name!r}: {_describe(other)} and {_describe(item)}; "
                "add a placeholder that tells them apart, such as {id}"
            )
    return None


def _describe(item) -> str:
    """The item as its contact-sheet labels would show it: "(row 2, cat, strength 0.5, seed 1, ...)"."""
    where = f"row {item.row}, " if item.row is not None else ""
    shown = sorted(labels("sheet").items(), key=lambda entry: entry[1][0])
    values = ", ".join(f"{label} {'x'.join(str(getattr(item, p.name)) for p in ps)}" for label, (_, ps) in shown)
    return f"({where}{item.source.stem}, {values})"
