"""Reading user-written YAML safely, echoing user text safely, and turning pydantic errors into messages
that name the field."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from decimal import Context, Decimal, DecimalException
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .local_files import NotRegularFile, TooLarge, read_capped
from .other_tools import other_tool_hint
from .text_encoding import decode_text_file

MAX_FILE_BYTES = 20 * 1024 * 1024
# Aliases can make a small YAML file stand for an exponentially large tree; count nodes as they would expand.
MAX_YAML_NODES = 1_000_000
# Manifests and configs nest a few levels; deeper input would only exhaust the parser's recursion.
MAX_YAML_DEPTH = 100
ECHO_CHARS = 80  # user text quoted in a message or in `plan` output is cut after this many characters


def printable(value: object, limit: int = ECHO_CHARS) -> str:
    """User text made safe to print: control and other invisible characters escaped (ESC as \\x1b, so no
    terminal sequence gets through), and text longer than `limit` cut, saying how long it was."""
    text = str(value)
    cut = text if len(text) <= limit else text[:limit]
    escaped = "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in cut)
    return escaped if cut is text else f"{escaped}… ({len(text):,} characters)"


def escaped(text: object) -> str:
    """Text for the terminal: control characters escaped on each line (a path may hold ESC), nothing cut."""
    return "\n".join(printable(line, limit=len(line)) for line in str(text).split("\n"))


def shown_path(path: object) -> str:
    """A path for a message: escaped like any user text, but long paths kept whole enough to find."""
    return printable(path, limit=1000)


class _StrictLoader(yaml.SafeLoader):
    """safe_load's loader (no tags that run code) that also refuses duplicate keys and deep nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        # The composer recurses once per level: stop long before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        # Checked on the composed keys, before merges (`<<: *defaults` then overrides) are flattened in.
        node = super().compose_mapping_node(anchor)
        first_line: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in first_line:
                problem = f"duplicate key '{printable(key_node.value)}' (first on line {first_line[key] + 1})"
                raise yaml.composer.ComposerError(None, None, problem, key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return node


# YAML 1.1, which PyYAML reads, takes 010 for octal 8, 1:30 for 90 (base 60), and 0x10, 0b10, +7 and 1_000 for
# numbers; YAML 1.2 readers and CSV cells read most of these otherwise. Only plain decimal digits (a minus sign
# allowed) are read as a whole number: any other spelling stays the text written, which a number field refuses
# saying why (`number_spelling`) and a text field (a prompt, a job name, a revision) keeps as written.
PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
# Fractions likewise: digits with at most one decimal point (0.5, .5, 2., 3), a minus sign allowed. YAML 1.1 also
# reads 1_0.5 as 10.5, 1:30.0 as 90.0, .inf, .nan and 1.0e-3 (but 1e-3 is text to it), and a CSV reader takes
# still others (+.5, 1e-3, nan, Infinity, 1_0): each stays text here, refused by a number field saying why.
PLAIN_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FRACTION = r"(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)"  # digits and a point, '_' separators among them


def _base60(text: str) -> int:
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    value = 0
    for part in digits.replace("_", "").split(":"):
        value = value * 60 + int(part)
    return sign * value


def _octal(text: str) -> int:
    return int(text.replace("_", ""), 8)


def plain_decimal(value: float | str, limit: int = 24) -> str | None:
    """A finite number (or its text with an exponent, 5e-1) in plain decimal digits (0.5); None where that would
    take over `limit` characters (1e-300, 1e999999999: an exponent past Decimal's own limits included)."""
    try:
        decimal = Decimal(value if isinstance(value, str) else repr(value))
    except DecimalException:  # an exponent past what Decimal holds at all
        return None
    if not decimal.is_finite() or (decimal and abs(decimal.adjusted()) > limit):
        return None
    if not decimal:  # zero, whatever its exponent
        return "-0" if decimal.is_signed() else "0"
    text = format(decimal.normalize(_EXACT), "f")
    return text if len(text) <= limit else None


_EXACT = Context(prec=1000)  # normalize() drops trailing zeros only: digits within the limit are never rounded


class PlainNumberDumper(yaml.SafeDumper):
    """yaml.safe_dump's dumper writing fractions in plain decimal digits (1e-05 as 0.00001: Python's and PyYAML's
    own spelling is one read_yaml_file refuses), so that a file it writes reads back."""

    def represent_float(self, data: float) -> yaml.ScalarNode:
        text = plain_decimal(data, limit=400) if math.isfinite(data) else None
        if text is None:
            return super().represent_float(data)
        return self.represent_scalar("tag:yaml.org,2002:float", text if "." in text else f"{text}.0")


PlainNumberDumper.add_representer(float, PlainNumberDumper.represent_float)


_SPELLINGS = (  # (spelling, what it is, how YAML 1.1 reads it)
    (re.compile(r"[-+]?0x[0-9a-fA-F_]+"), "is hexadecimal", lambda text: int(text.replace("_", ""), 16)),
    (re.compile(r"[-+]?0b[01_]+"), "is binary", lambda text: int(text.replace("_", ""), 2)),
    (re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+"), "is base 60 to YAML 1.1 readers", _base60),
    (re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"), "is base 60 to YAML 1.1 readers", None),
    (re.compile(r"[-+]?0[0-7_]+"), "has a leading zero, octal to YAML 1.1 readers", _octal),
    (re.compile(r"[-+]?0[0-9_]+"), "has a leading zero", None),
    (re.compile(r"\+[0-9]+"), "has a '+' sign", None),
    (re.compile(r"[-+]?[0-9][0-9_]*"), "has '_' separators", None),
    # fractions
    (re.compile(r"[-+]?\.?inf(?:inity)?", re.IGNORECASE), "is infinity", None),
    (re.compile(r"[-+]?\.?nan", re.IGNORECASE), "is NaN, not a number", None),
    (re.compile(rf"(?=.*_)[-+]?{_FRACTION}(?:[eE][-+]?[0-9_]+)?"), "has '_' separators", None),
    (re.compile(rf"[-+]?{_FRACTION}[eE][-+]?[0-9]+"), "has an exponent", plain_decimal),
    (re.compile(rf"\+{_FRACTION}"), "has a '+' sign", None),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node)
    return int(text) if PLAIN_INT.fullmatch(text) else text


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node)
    return float(text) if PLAIN_FLOAT.fullmatch(text) else text


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
# YAML 1.1 reads .5 as a number but -.5 as text: both are plain fractions here, as in a CSV cell.
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^-\.[0-9]+$"), ["-"])


class _RecordedLoader(_StrictLoader):
    """For a file batch-edit wrote (a kept pipeline config): earlier versions wrote fractions as PyYAML does, with
    an exponent where Python's repr has one (5e-05 as 5.0e-05), read back as the numbers they are."""


KEPT_FLOAT = re.compile(r"-?[0-9]+\.[0-9]*e[-+][0-9]+")  # yaml.safe_dump's spelling of 1e-05 and 1e+16


def _construct_kept_float(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node)
    return float(text) if PLAIN_FLOAT.fullmatch(text) or KEPT_FLOAT.fullmatch(text) else text


_RecordedLoader.add_constructor("tag:yaml.org,2002:float", _construct_kept_float)


def number_spelling(value: object) -> str | None:
    """Why text a number field got is no number where it looks like one (YAML 1.1 would read 010 as 8, 1_0.5 as
    10.5): what it is and how to write it; None for other values (a quoted plain number, words)."""
    if not isinstance(value, str) or PLAIN_INT.fullmatch(value):
        return None
    for spelling, what, yaml_reads in _SPELLINGS:
        if spelling.fullmatch(value):
            read = yaml_reads(value.removeprefix("+")) if yaml_reads else None
            read = f" ({printable(value)} is {read})" if read is not None else ""
            return f"'{printable(value)}' {what}{read}: write the number in plain decimal digits"
    return None


def read_yaml_file(path: Path, error: type[Exception], recorded: bool = False):
    """Load a YAML file safely (no tags that run code), with size, nesting, duplicate-key and alias-expansion
    limits. `recorded`: a file an earlier version of batch-edit wrote, whose fractions may have an exponent."""
    text = read_text_file(path, error)
    loader = _RecordedLoader if recorded else _StrictLoader
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - both are SafeLoaders
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown_path(path)}:{mark.line + 1}" if mark else f"{shown_path(path)}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        from .yaml_layout import layout_hint

        lines = text.splitlines()
        hint = layout_hint(lines, mark.line, problem) if mark else ""
        if not hint and problem == _COLON_PROBLEM:
            hint = _colon_hint(lines[mark.line] if mark and mark.line < len(lines) else "")
        raise error(f"{where}: not valid YAML: {problem}{hint}") from None
    nodes, depth = _measure(data)
    if nodes > MAX_YAML_NODES:
        raise error(f"{shown_path(path)}: refused: its aliases expand to more than {MAX_YAML_NODES:,} values")
    if depth > MAX_YAML_DEPTH:
        raise error(f"{shown_path(path)}: refused: its aliases nest deeper than {MAX_YAML_DEPTH} levels")
    return data


_COLON_PROBLEM = "mapping values are not allowed here"  # a second ': ' on a line: "prompts: portrait: dark"
_KEY_AND_VALUE = re.compile(r"\s*([A-Za-z_][\w-]*):\s+(.+?)\s*")  # a list item's line: which ': ' was meant?


def _colon_hint(line: str) -> str:
    """The usual cause of a second mapping on one line, a value holding ': ', and that value quoted."""
    hint = "; a value holding ': ' (a colon and a space) must be in quotes"
    found = _KEY_AND_VALUE.fullmatch(line)
    if not found or found[2][0] in "'\"[{" or "#" in found[2]:
        return hint
    key, value = found[1], found[2]
    quoted = f'"{value}"' if '"' not in value and "\\" not in value else "'" + value.replace("'", "''") + "'"
    return f"{hint}: {printable(key)}: {printable(quoted)}"


SAVE_AS_UTF8 = "save the file as UTF-8 (in the editor's Save As, choose the UTF-8 encoding)"


def decode_yaml(data: bytes) -> str:
    """A YAML file's text as text_encoding reads CSV manifests: UTF-8 with or without its byte-order mark, UTF-16
    with one; a code page refused at the line and column where it shows."""
    return decode_text_file(data, SAVE_AS_UTF8)


def read_text_file(path: Path, error: type[Exception], decode: Callable[[bytes], str] = decode_yaml) -> str:
    """A manifest or config as text: a regular file (symlinks followed) of at most MAX_FILE_BYTES, counted
    while reading, so a link to /dev/zero or a FIFO is refused instead of read forever. `decode` may refuse
    the bytes with a ValueError whose message says where and why."""
    where = shown_path(path)
    try:
        return decode(read_capped(path, MAX_FILE_BYTES))
    except FileNotFoundError:
        raise error(f"{where}: file not found") from None
    except NotRegularFile as exc:
        raise error(f"{where}: is a folder, not a file" if exc.kind == "folder" else f"{where}: {exc}") from None
    except TooLarge:
        raise error(f"{where}: larger than the {MAX_FILE_BYTES:,}-byte limit") from None
    except OSError as exc:
        raise error(f"{where}: could not read: {exc.strerror or exc}") from None
    except ValueError as exc:  # TextEncodingError included: its message says where in the file
        raise error(f"{where}: {exc}") from None


def _measure(data) -> tuple[int, int]:
    """(nodes, depth) as aliases expand them, without recursion; stops counting past either limit."""
    count, deepest, stack = 0, 0, [(data, 1)]
    while stack and count <= MAX_YAML_NODES and deepest <= MAX_YAML_DEPTH:
        node, depth = stack.pop()
        count, deepest = count + 1, max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in (*node.keys(), *node.values()))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return count, deepest


NUMBER_TYPES = ("int_type", "float_type")  # a strict number field given text


def describe_validation_error(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: where, which field, what is wrong, and what is allowed."""
    return describe_errors(exc.errors(), where, model)


def describe_errors(errors: list[dict], where: str, model: type[BaseModel] | None = None) -> list[str]:
    """describe_validation_error for some of a ValidationError's errors (`exc.errors()`, a few left out)."""
    lines = []
    for err in _one_branch_per_field(errors):
        loc = [str(part) for part in err["loc"]]
        field = _field_path(err["loc"])
        if err["type"] == "extra_forbidden":
            key = printable(field or loc[-1])  # its section's path too: 'quantization.transformr', 'loras[0].scal'
            lines.append(f"{where}: unknown key '{key}'{_suggestion(loc[-1], model, err['loc'])}")
            continue
        got = err.get("input")
        if err["type"] in NUMBER_TYPES and (spelling := number_spelling(got)):
            lines.append(f"{where}: field '{field}': {spelling}")
            continue
        if err["type"] == "too_short" and got == []:
            lines.append(f"{where}: field '{field}': the list is empty; give at least one value")
            continue
        shown = f" (got {_shown_input(got)})" if not isinstance(got, (dict, list)) else ""
        if not field and err["type"] == "value_error":  # a check across fields: its message names the keys
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
            continue
        lines.append(f"{where}: field '{field}': {_message(err)}{shown}")
    return lines


def _shown_input(got: object) -> str:
    """A refused value as written (quoted); a long text's start, with its own length (not its quoted form's)."""
    if isinstance(got, str) and len(got) > ECHO_CHARS:
        start = repr(got[:ECHO_CHARS])
        return f"{printable(start, limit=len(start))}… ({len(got):,} characters)"
    return printable(repr(got))


def _one_branch_per_field(errors: list[dict]) -> list[dict]:
    """A `value | list[value]` field fails in both branches; keep the branch that matches what was written."""
    by_field: dict[str, list[dict]] = {}
    for err in errors:
        by_field.setdefault(_field_path(err["loc"]).split("[")[0], []).append(err)
    kept = []
    for group in by_field.values():
        if len(group) > 1:
            scalar = [e for e in group if e["type"] != "list_type" and not isinstance(e.get("input"), list)]
            # a list written: its own branch's errors (`[]`: too short), not the value branch's "a valid string"
            group = scalar or [e for e in group if any(str(p).startswith("list[") for p in e["loc"])] or group
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
    if other := other_tool_hint(key, fields):  # another tool's name: what it means here, not a spelling guess
        return f": {other}; allowed keys: {', '.join(fields)}"
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
