"""The caption of a source that is gone together with its caption file (archived or renamed with it, as image and
caption pairs are): its finished items were made with a `{caption}` prompt whose text their records hold, so the
caption last used with the content last seen there is taken from those prompts, and its items keep their ids
(done, listed and kept by `prune`) instead of being planned again with an empty caption."""

from __future__ import annotations

import re
import string
from dataclasses import replace

from .prompts import render_prompt, template_fields


def with_gone_captions(grid, records):
    """`grid` with each local source that is gone (no stat), has no caption and whose content the records keep
    given the caption its finished items were made with, where a prompt of the grid uses {caption}. `records`: the
    job's, in written order (read only where such a source is there)."""
    templates = [template for template in grid.prompts if "caption" in _fields(template)]
    wanted = [
        ref
        for ref in grid.sources
        if not ref.is_url and not ref.stat and ref.caption is None and len(ref.fingerprint) == 64
    ]
    if not templates or not wanted or not records:
        return grid
    keys = {(ref.key, ref.fingerprint) for ref in wanted}
    prompts: dict[tuple[str, str], list[str]] = {}
    for record in records:
        key = (record.get("source"), record.get("source_sha256"))
        if key in keys and record.get("status") == "ok" and isinstance(record.get("prompt"), str):
            prompts.setdefault(key, []).append(record["prompt"])
    given = {}
    for ref in wanted:
        caption = _caption(templates, ref, prompts.get((ref.key, ref.fingerprint), []))
        if caption is not None:
            given[ref] = replace(ref, caption=caption)
    if not given:
        return grid
    return replace(grid, sources=tuple(given.get(ref, ref) for ref in grid.sources))


def _fields(template: str) -> set[str]:
    try:
        return template_fields(template)
    except ValueError:
        return set()  # refused with the manifest


def _caption(templates: list[str], ref, made: list[str]) -> str | None:
    """The caption that gives the most of the prompts `made` (the last made first among equals), or None."""
    if not made:
        return None
    found: dict[str, int] = {}  # caption -> where it was last made
    for at, prompt in enumerate(made):
        for template in templates:
            if (match := _pattern(template, ref.stem).fullmatch(prompt)) is not None:
                found[match.group("caption")] = at
    if not found:
        return None
    made_set = set(made)

    def score(caption: str) -> tuple[int, int]:
        with_it = replace(ref, caption=caption)
        return sum(render_prompt(template, with_it) in made_set for template in templates), found[caption]

    return max(found, key=score)


def _pattern(template: str, stem: str) -> re.Pattern:
    parts, named = [], False
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field == "stem":
            parts.append(re.escape(stem))
        elif field == "caption":
            parts.append("(?P=caption)" if named else "(?P<caption>.*)")
            named = True
    return re.compile("".join(parts), re.DOTALL)
