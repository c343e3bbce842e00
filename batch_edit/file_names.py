"""Result file names: a job's `file_name` template checked, filled in per item and made safe, and two items
that one name would serve found before anything runs. The extension comes from the item's format."""

from __future__ import annotations

import re
import string
import typing
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from .parameters import MAX_ITEMS_PER_RUN, MAX_VARIATIONS, axes, labels
from .source_folders import SHEET_PREFIX
from .sources import SourceRef
from .validation import printable


def _value_type(declared) -> type:
    """The Python type of a declared parameter's values: Annotated[int, ...] -> int, Literal["a", "b"] -> str."""
    first = typing.get_args(declared)[0]
    return type(first) if typing.get_origin(declared) is typing.Literal else first


def _declared_samples(declared) -> tuple:
    """Values a declared parameter may take, for checking format specs: a Literal's every value, else the
    inclusive bounds of its range (Annotated[int, Field(ge=16, le=4096)] -> (16, 4096))."""
    if typing.get_origin(declared) is typing.Literal:
        return typing.get_args(declared)
    kind, *fields = typing.get_args(declared)
    bounds = [getattr(rule, name, None) for field in fields for rule in field.metadata for name in ("ge", "le")]
    return tuple(kind(bound) for bound in bounds if bound is not None) or _SAMPLES[kind]


_PARAMETER_FIELDS = {p.file_field: p.name for p in axes() if p.file_field}  # placeholder -> WorkItem field
FILE_NAME_FIELDS = ("stem", "parent", "job", *_PARAMETER_FIELDS, "index", "id", "variation")
# The type each placeholder's value has; format specs are checked against values of it.
_VALUE_TYPES = {
    "stem": str, "parent": str, "job": str, "index": int, "id": str, "variation": int,
    **{p.file_field: _value_type(p.value) for p in axes() if p.file_field},
}  # fmt: skip
_KINDS = {str: "text", int: "a whole number", float: "a decimal number"}
_SAMPLES = {str: ("cat",), int: (0,), float: (0.75,)}
# Values each placeholder may take, the smallest and largest where it has a range ('{x:c}' fails only for large
# numbers), so that a spec refused is refused with a value the placeholder can have.
_FIELD_SAMPLES = {
    "stem": ("cat",), "parent": ("photos",), "job": ("portraits",), "id": ("3f2a9c1d0b7e",),
    "index": (0, MAX_ITEMS_PER_RUN - 1), "variation": (0, MAX_VARIATIONS - 1),
    **{p.file_field: _declared_samples(p.value) for p in axes() if p.file_field},
}  # fmt: skip
DEFAULT_FILE_NAME = "{stem}-{id}"
MAX_NAME_CHARS = 150  # with the extension and a temporary prefix, well under the usual 255-byte limit
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def template_problems(template: str) -> list[str]:
    """What is wrong with a template (unknown or malformed placeholders, a format spec that does not suit the
    placeholder's value), as messages; empty when it is fine."""
    allowed = ", ".join(f"{{{name}}}" for name in FILE_NAME_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"malformed placeholder ({exc}); allowed are {allowed}"]
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        written = printable(placeholder_as_written(field, spec, conversion))
        if field not in FILE_NAME_FIELDS:
            return [f"unknown placeholder {{{printable(field)}}}; allowed are {allowed}"]
        if conversion:
            hint = "format specs are, such as {index:04d}"
            return [f"{written}: a conversion '!{printable(conversion)}' is not supported in a file name; {hint}"]
        if "{" in spec:
            return [f"{written}: a placeholder inside a format spec is not supported; write the spec out"]
        if problem := _spec_problem(field, spec):
            return [f"{written} cannot be filled in: {problem}"]
    return []


def file_name_fields(template: str) -> set[str]:
    """The placeholders a valid template uses."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def placeholder_as_written(field: str, spec: str, conversion: str | None) -> str:
    """A placeholder as the template wrote it, from string.Formatter().parse's pieces."""
    return "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def _spec_problem(field: str, spec: str) -> str | None:
    """Why `spec` cannot format every value the placeholder may have, or None: checked with the smallest and
    largest (an int's ':c' fails only for large values), so no item fails to be named after planning starts."""
    kind = _KINDS[_VALUE_TYPES[field]]
    for value in _FIELD_SAMPLES[field]:
        try:
            format(value, spec)
        except (ValueError, TypeError, OverflowError) as exc:
            return f"{{{field}}} is {kind} (such as {value!r}) and the format spec {spec!r} does not suit it ({exc})"
    return None


def default_name(ref: SourceRef, item_id: str) -> str:
    """Human-readable and collision-free: the source's stem, then the item id."""
    return f"{safe_stem(ref.stem)}-{item_id}"


def safe_stem(stem: str) -> str:
    """A source's stem as a file name may start: what the default result names and the kept copies begin with."""
    return _UNSAFE.sub("_", stem).strip("._-")[:48] or "image"


def parent_name(ref: SourceRef) -> str:
    """`{parent}`: the name of the folder holding the source (a URL's last folder, else its host), made safe as a
    stem is: two `cat.jpg` of `photos/a/` and `photos/b/` told apart."""
    if ref.is_url:
        parts = urlsplit(ref.key)
        folder = PurePosixPath(unquote(parts.path)).parent.name or parts.hostname or ""
    else:
        folder = PurePosixPath(ref.key).parent.name
    return safe_stem(folder) if folder else "root"


def namer(job_name: str, template: str):
    """The template as a function of a work item; the default one in its fast form (planning 100,000 items)."""
    stems: dict[str, str] = {}  # per source, sanitized once

    def stem(ref: SourceRef) -> str:
        if ref.key not in stems:
            stems[ref.key] = safe_stem(ref.stem)
        return stems[ref.key]

    if template == DEFAULT_FILE_NAME:
        return lambda item: f"{stem(item.source)}-{item.item_id}"
    return lambda item: _filled(template, job_name, stem(item.source), item)[:MAX_NAME_CHARS] or "image"


def _filled(template: str, job_name: str, stem: str, item) -> str:
    """The template filled in for the item and made safe, before the cut at MAX_NAME_CHARS."""
    fields = dict(
        stem=stem, parent=parent_name(item.source), job=job_name, index=item.index, id=item.item_id,
        variation=item.variation,
        **{placeholder: getattr(item, name) for placeholder, name in _PARAMETER_FIELDS.items()},
    )  # fmt: skip
    # no path separators, no leading dot (a hidden file, or "..")
    return _UNSAFE.sub("_", template.format_map(fields)).lstrip(".")


def name_clash(template: str, items) -> str | None:
    """The first two items the template gives one name, described; None when every name is distinct."""
    if template == DEFAULT_FILE_NAME:
        return None  # the id makes every default name unique
    seen: dict = {}
    for item in items:
        other = seen.setdefault(item.name.lower(), item)  # lower: case-insensitive file systems
        if other is not item:
            clash = (
                f"field 'file_name': '{printable(template)}' gives two items the name '{printable(item.name)}': "
                f"{_describe(other, item)} and {_describe(item, other)}"
            )
            if _cut_apart(template, other, item):
                cut = f"names are cut at {MAX_NAME_CHARS} characters and these differ only after that"
                return f"{clash}; {cut}: write a shorter format"
            return f"{clash}; add a placeholder that tells them apart, such as {{id}}"
    return None


def _cut_apart(template: str, one, other) -> bool:
    """Whether two items given one name would have had two before names are cut at MAX_NAME_CHARS."""
    full = [_filled(template, item.job, safe_stem(item.source.stem), item).lower() for item in (one, other)]
    return full[0] != full[1]


def reserved_clash(template: str, items) -> str | None:
    """The first item whose name starts as the job's contact sheets do (contact-sheet-<stem>.png, also read as
    sheets, never results, where a job folder is a source), described; None when no name does. Case ignored, as
    some file systems ignore it. The runner's other files cannot clash: CSVs, and folders `sources/` and
    `.batch-edit/` (a result name has an image extension and no leading dot or separator)."""
    stems: dict[str, bool] = {}  # per source: whether the default name starts so
    for item in items:
        if item.name:
            reserved = item.name.lower().startswith(SHEET_PREFIX)
        elif (reserved := stems.get(item.source.key)) is None:
            reserved = stems[item.source.key] = default_name(item.source, "").lower().startswith(SHEET_PREFIX)
        if reserved:
            return _reserved_message(template, item)
    return None


def _reserved_message(template: str, item) -> str:
    """The clash as the user can fix it: a name they chose is theirs to change; a default name comes from the
    source's file name, which is all a CSV row (no 'file_name' column) can change."""
    sheets = f"starts as the job's contact sheets are named ('{SHEET_PREFIX}<stem>.png')"
    if template != DEFAULT_FILE_NAME:
        return (
            f"field 'file_name': '{printable(template)}' gives {_describe(item)} the name "
            f"'{printable(item.output_name)}', which {sheets}; "
            "choose a name that starts otherwise"
        )
    ref = item.source
    shown = printable(ref.key if ref.is_url else PurePosixPath(ref.key).name)
    where = f"row {item.row}: " if item.row is not None else ""
    fix = "rename the source file" + ("" if item.row is not None else " or set a 'file_name' that starts otherwise")
    return f"{where}source '{shown}': the default result name '{printable(item.output_name)}' {sheets}; {fix}"


def _describe(item, other=None) -> str:
    """The item as its contact-sheet labels would show it: "(row 2, cat, strength 0.5, seed 1, ...)"; beside
    `other`, the item it clashes with, only what tells the two apart: "(cat, prompt 'a red car')", its source by
    file name, or path, where `other`'s has the same stem (a.png and a.jpg; x/a.png and y/a.png). A derived seed
    is left out where what it is derived from differs (source, prompt, variation)."""
    where = f"row {item.row}, " if item.row is not None else ""
    source = item.source.stem
    if other is not None and other.source.stem == source and other.source.key != item.source.key:
        name, others = PurePosixPath(item.source.key).name, PurePosixPath(other.source.key).name
        source = name if name != others else item.source.key
    shown = sorted(labels("sheet").items(), key=lambda entry: entry[1][0])
    values = [
        (label, tuple(getattr(item, p.name) for p in ps))
        for label, (_, ps) in shown
        if all(p.needs is None or getattr(item, p.needs) is not None for p in ps)  # mask blur: only with a mask
    ]
    if other is not None:
        differing = _differing(item, other, values)
        if differing:
            return f"({where}{printable(source)}, {', '.join(differing)})"
    listed = ", ".join(f"{label} {'x'.join(str(v) for v in value)}" for label, value in values)
    return f"({where}{printable(source)}, {listed})"


def _differing(item, other, values: list[tuple[str, tuple]]) -> list[str]:
    """The prompt, mask, variation and sheet labels in which `item` differs from `other`, as `item` has them."""
    found = [f"prompt '{printable(item.prompt)}'"] if item.prompt != other.prompt else []
    if item.mask != other.mask:
        found.append(f"mask {printable(PurePosixPath(item.mask.key).name) if item.mask else 'none'}")
    if item.variation != other.variation:
        found.append(f"variation {item.variation}")
    derived_apart = item.seed_derived and other.seed_derived and (found or item.source.key != other.source.key)
    for label, value in values:
        if label == "seed" and derived_apart:
            continue  # follows from what differs above
        if value != tuple(getattr(other, p.name) for p in labels("sheet")[label][1]):
            found.append(f"{label} {'x'.join(str(v) for v in value)}")
    return found
