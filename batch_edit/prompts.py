"""Prompt templates: the {caption} and {stem} placeholders, rendering, and the limits on a final prompt."""

from __future__ import annotations

import re
import string

from .file_names import placeholder_as_written
from .sources import SourceRef
from .validation import printable

TEMPLATE_FIELDS = ("caption", "stem")
MAX_PROMPT_CHARS = 4000  # checked on the final prompt, once {caption} and {stem} are filled in
# Control characters other than tab and newline (CR included: line ends are normalised when files are read).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def template_fields(template: str) -> set[str]:
    """Placeholders a prompt uses: only {caption} and {stem}, without format specs or conversions ('{{' is a
    literal brace)."""
    return placeholders(template, TEMPLATE_FIELDS, "a prompt")


def placeholders(template: str, allowed: tuple[str, ...], used_in: str) -> set[str]:
    """The placeholders `template` uses, each one of `allowed`, filled in as it is: no format spec or conversion
    (the text goes in as it is: nothing there has a use for padding or repr()). ValueError saying why not."""
    fields = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        literal = "'}}' for a literal '}'" if str(exc).startswith("Single '}'") else "'{{' for a literal '{'"
        raise ValueError(f"malformed placeholder ({exc}); write {literal}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed:  # {x}, {0}, {stem.x}, {stem[x]}
            names = " and ".join(f"{{{name}}}" for name in allowed)
            rule = f"allowed are {names}" if len(allowed) > 1 else f"only the placeholder {names} is allowed"
            # text in braces meant as it is ("a {red} car", {red|blue}, JSON): braces are written doubled
            written = printable(placeholder_as_written(field, spec, conversion))
            raise ValueError(
                f"unknown placeholder {written}: {rule}; for the text {written} itself write {{{written}}}"
            )
        if spec or conversion:
            written = printable(placeholder_as_written(field, spec, conversion))
            what = f"conversion '!{printable(conversion)}'" if conversion else f"format spec ':{printable(spec)}'"
            raise ValueError(f"{written}: a {what} is not supported in {used_in}; write {{{field}}}")
        fields.add(field)
    return fields


def render_prompt(template: str, ref: SourceRef) -> str:
    return template.format_map({"caption": ref.caption or "", "stem": ref.stem})


def prompt_problem(prompt: str) -> str | None:
    """Why a final prompt is refused (too long, or a control character other than tab and newline), or None."""
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}"
    control = _CONTROL.search(prompt)
    if control:
        return f"contains the control character {printable(control.group())} at character {control.start() + 1}"
    return None
