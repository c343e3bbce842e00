"""Reading user-written YAML safely and turning pydantic errors into messages that name the field."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

MAX_FILE_BYTES = 20 * 1024 * 1024
# Aliases can make a small YAML file stand for an exponentially large tree; count nodes as they would expand.
MAX_YAML_NODES = 1_000_000


def read_yaml_file(path: Path, error: type[Exception]):
    """safe_load a file (no tags that run code), with size and alias-expansion limits."""
    text = read_text_file(path, error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else f"{path}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: not valid YAML: {problem}") from None
    if _count_nodes(data) > MAX_YAML_NODES:
        raise error(f"{path}: refused: its aliases expand to more than {MAX_YAML_NODES:,} values")
    return data


def read_text_file(path: Path, error: type[Exception]) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise error(f"{path}: {size:,} bytes is larger than the {MAX_FILE_BYTES:,}-byte limit")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _count_nodes(data, limit: int = MAX_YAML_NODES) -> int:
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def describe_validation_error(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: where, which field, what is wrong, and what is allowed."""
    lines = []
    for err in _one_branch_per_field(exc.errors()):
        loc = [str(part) for part in err["loc"]]
        field = _field_path(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{loc[-1]}'{_suggestion(loc[-1], model, err['loc'])}")
            continue
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
        lines.append(f"{where}: field '{field}': {_message(err)}{shown}")
    return lines


def _one_branch_per_field(errors: list[dict]) -> list[dict]:
    """A `value | list[value]` field fails in both branches; keep the branch that matches what was written."""
    by_field: dict[str, list[dict]] = {}
    for err in errors:
        by_field.setdefault(_field_path(err["loc"]).split("[")[0], []).append(err)
    kept = []
    for group in by_field.values():
        if len(group) > 1:
            group = [e for e in group if e["type"] != "list_type" and not isinstance(e.get("input"), list)] or group
        kept.extend(_merge_alternatives(group))
    return kept


def _merge_alternatives(group: list[dict]) -> list[dict]:
    """`int | 'auto'` rejects one value once per branch: say it once, "should be a valid integer or 'auto'"."""
    prefix = "Input should be "
    same_value = len({repr(e.get("input")) for e in group}) == 1 and len({_field_path(e["loc"]) for e in group}) == 1
    if len(group) < 2 or not same_value or not all(e["msg"].startswith(prefix) for e in group):
        return group
    return [{**group[0], "msg": prefix + " or ".join(e["msg"].removeprefix(prefix) for e in group)}]


def _field_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_union_tag(part):
            text += f".{part}" if text else str(part)
    return text


def _is_union_tag(part: str) -> bool:
    # pydantic names union branches in the location ("list[...]", "function-after[...]"): not field names
    return not part.isidentifier() or part in {"str", "int", "float", "bool", "none"}


def _message(err: dict) -> str:
    message = err["msg"]
    return message[0].lower() + message[1:] if message else message


def _suggestion(key: str, model: type[BaseModel] | None, loc: tuple) -> str:
    fields = _fields_at(model, loc[:-1]) if model else []
    if not fields:
        return ""
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; allowed keys: {', '.join(fields)}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at a location, following nested models through the location's names."""
    current = model
    for part in loc:
        if isinstance(part, int) or _is_union_tag(str(part)):
            continue
        field = current.model_fields.get(str(part))
        inner = _nested_model(field.annotation) if field else None
        if inner is None:
            return []
        current = inner
    return list(current.model_fields)


def _nested_model(annotation) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for arg in getattr(candidate, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
