"""CSV manifests: one row per item (a `job` column groups rows into jobs), read with the same checks as YAML
grids; a column only YAML can express is refused with what to write instead."""

from __future__ import annotations

import re
import typing
from collections import Counter
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from .csv_table import CsvRecord, CsvTable, CsvTableError, decode_csv, read_csv_table
from .errors import ManifestError
from .grid_checks import check_grid, check_job_name, output_options, param, without_random_seed, without_untaken
from .manifest_models import CsvRow, Grid, JobModel, JobSpec, Manifest, ManifestModel
from .other_tools import other_tool_hint
from .parameters import DEFAULT_TASK, PARAMETERS, axis_names
from .sources import SourceSpecError, row_source_ref
from .validation import (
    MAX_FILE_BYTES,
    PLAIN_FLOAT,
    describe_validation_error,
    number_spelling,
    printable,
    read_text_file,
)

# CSV cells: where a semicolon or tab delimits, "0,75" is a decimal comma.
DECIMAL_COMMA = re.compile(r"\s*[0-9]+,[0-9]+\s*")
# A whole-number cell is digits (a sign only for the range check to explain): "42.0", "+7" or "1_000" would be read
# as a number by pydantic, where YAML refuses 42.0 and the same manifest must mean the same in both.
WHOLE_NUMBER = re.compile(r"\s*-?[0-9]+\s*")
WHOLE_NUMBER_COLUMNS = tuple(p.name for p in PARAMETERS if p.csv and typing.get_args(p.value)[:1] == (int,))
# A fraction cell likewise: digits with at most one point (validation.PLAIN_FLOAT), where pydantic would also read
# "1_0.5", "+.5", "5e-1", "nan" or "inf" as a number and YAML refuses them.
FRACTION_COLUMNS = tuple(p.name for p in PARAMETERS if p.csv and typing.get_args(p.value)[:1] == (float,))
# Keys a CSV row cannot express.
YAML_ONLY_HINTS = {
    "name": " (a CSV names jobs in a 'job' column)",
    "sources": " (a CSV row has one 'source')",
    "prompts": " (a CSV row has one 'prompt')",
    "defaults": " (empty CSV cells take the defaults)",
    "exclude": " (a CSV row names one file: leave out the rows of the files to skip)",
}


def load_csv(path: Path, task: str = DEFAULT_TASK, valid: list[JobSpec] | None = None) -> Manifest:
    """`valid`, if given, gets each job made of its rows whose own fields are valid, even where others' are not."""
    text = read_text_file(path, lambda message: ManifestError([message]), decode=decode_csv)
    try:
        table = read_csv_table(text, max_field=MAX_FILE_BYTES)
    except CsvTableError as exc:
        raise ManifestError([f"{path}: {exc}"]) from None
    problems = _check_csv_header(path, table.header)
    if problems:
        raise ManifestError(problems)
    grids: dict[str, list[Grid]] = {}
    valid_rows: dict[str, list[Grid]] = {}  # the task's checks need no more than valid fields
    origins: dict[str, str] = {}
    named: dict[str, list[tuple[int, int]]] = {}  # jobs a row's `job` cell names: those rows' numbers and lines
    for number, record in enumerate(table.rows, start=1):
        where, before = f"{path}: row {number} (line {record.line})", len(problems)
        row = _csv_values(table, record, where, problems)
        grid, job = _grid_from_row(row, path, where, problems, task) if row is not None else (None, "")
        if row is not None and row.get("job", "").strip():
            named.setdefault(job, []).append((number, record.line))
        if grid is not None:
            grid = replace(grid, row=number)
            grids.setdefault(job, []).append(grid)
            if len(problems) == before:
                valid_rows.setdefault(job, []).append(grid)
            origins.setdefault(job, f"{path}: job '{job}'")
    if not grids and not problems:
        problems.append(f"{path}: the CSV has a header but no rows")
    for job in grids:
        if job not in named:  # no row names it: the file's stem
            fix = ": add a 'job' column naming the job, or rename the file"
            check_job_name(job, origins[job], problems, "the job is named after the CSV file", fix)
        else:
            check_job_name(job, _rows_naming(path, named[job]), problems, "column 'job'")
    if valid is not None:
        valid.extend(JobSpec(name, origins[name], tuple(rows)) for name, rows in valid_rows.items())
    if problems:
        raise ManifestError(problems)
    jobs = tuple(JobSpec(name=name, origin=origins[name], grids=tuple(rows)) for name, rows in grids.items())
    return Manifest(path=path, jobs=jobs)


def _rows_naming(path: Path, rows: list[tuple[int, int]]) -> str:
    """Where a job's name is given: its first row (and how many more name it)."""
    (number, line), more = rows[0], len(rows) - 1
    return f"{path}: row {number} (line {line})" + (f" and {more} more row{'s' * (more > 1)}" if more else "")


def _check_csv_header(path: Path, header: tuple[str, ...]) -> list[str]:
    """Header names are already stripped and lower-cased; a column without a name is allowed (left blank)."""
    allowed = list(CsvRow.model_fields)
    yaml_only = [key for key in (*JobModel.model_fields, *ManifestModel.model_fields) if key not in allowed]
    problems = [
        f"{path}: the header lacks the required column '{name}' (header read: {', '.join(filter(None, header))})"
        for name in ("source", "prompt")
        if name not in header
    ]
    for column, count in Counter(filter(None, header)).items():
        if count > 1:
            problems.append(f"{path}: column '{column}' appears {count} times in the header")
        if column in yaml_only:
            hint = YAML_ONLY_HINTS.get(column, "")
            problems.append(f"{path}: column '{column}': only YAML manifests support '{column}'{hint}")
        elif column not in allowed:
            close = [c for c in allowed if c.startswith(column[:4])]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            if other := other_tool_hint(column, allowed):  # another tool's name: what it means here
                hint = f": {other}"
            problems.append(f"{path}: unknown column '{column}'{hint}; allowed columns: {', '.join(allowed)}")
    return problems


def _csv_values(table: CsvTable, record: CsvRecord, where: str, problems: list[str]) -> dict | None:
    try:
        values = table.values(record)
    except CsvTableError as exc:
        problems.append(f"{where}: {exc}")
        return None
    if table.delimiter != ",":  # spreadsheets that write ';' or tabs often write decimal commas: 0,75
        for name in (p.name for p in PARAMETERS if p.decimal_comma):
            if DECIMAL_COMMA.fullmatch(values.get(name, "")):
                values[name] = values[name].replace(",", ".")
    for name in WHOLE_NUMBER_COLUMNS:
        if name in values and not WHOLE_NUMBER.fullmatch(values[name]):
            cell = printable(values.pop(name))  # left out: one message for the cell, not a range error too
            problems.append(f"{where}: field '{name}': input should be a whole number in digits (got '{cell}')")
    for name in FRACTION_COLUMNS:
        if name in values and not PLAIN_FLOAT.fullmatch(values[name].strip()):
            cell = values.pop(name)  # left out: one message for the cell, not a range error too
            why = (
                number_spelling(cell.strip()) or f"input should be a number in decimal digits (got '{printable(cell)}')"
            )
            problems.append(f"{where}: field '{name}': {why}")
    return values


def _grid_from_row(
    row: dict, path: Path, where: str, problems: list[str], task: str = DEFAULT_TASK
) -> tuple[Grid | None, str]:
    row = without_random_seed(without_untaken(row, task, where, problems), where, problems)
    try:
        model = CsvRow.model_validate(row)
    except ValidationError as exc:
        problems.extend(describe_validation_error(exc, where, CsvRow))
        return None, ""
    try:
        ref = row_source_ref(model.source, path.parent)
    except SourceSpecError as exc:
        problems.append(f"{where}: field 'source': {exc}")
        return None, ""
    if model.caption is not None:
        ref = replace(ref, caption=model.caption, caption_problem="")  # the row's caption, not the .txt
    try:
        masks = () if model.mask is None else (row_source_ref(model.mask, path.parent),)
    except SourceSpecError as exc:
        message = str(exc).replace("source ", "mask ", 1).replace("'sources:'", "'masks:'")
        problems.append(f"{where}: field 'mask': {message}")
        return None, ""
    grid = Grid(
        sources=(ref,),
        masks=masks,
        prompts=(model.prompt,),
        **{name: (param(model, name, task),) for name in axis_names()},
        output=output_options(model, where, problems, task),
        variations=param(model, "variations", task),
    )
    check_grid(grid, where, problems)
    return grid, model.job or path.stem
