"""CSV manifests as spreadsheets write them: delimiters, header names, empty rows, quoting, long cells."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifest

from .conftest import PHOTOS, refusal


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "photos").mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / "photos" / name)
    return tmp_path


def write(folder: Path, text: str, name: str = "rows.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode("utf-8"))  # bytes: the line endings are the test's
    return path


def items(path: Path) -> list[tuple]:
    """(source file name, prompt, strength, guidance, seed) per row, in order."""
    return [
        (Path(g.sources[0].key).name, g.prompts[0], g.strength[0], g.guidance_scale[0], g.seed[0])
        for job in load_manifest(path).jobs
        for g in job.grids
    ]


EXPECTED = [("cat.jpg", "a tiger, watercolor", 0.75, 2.5, 1), ("coffee.jpg", "tea; green", 0.9, 3.5, None)]


@pytest.mark.parametrize(
    "text",
    [
        # a European spreadsheet: semicolons, decimal commas, capitalised and padded header names, CRLF
        'Source ; Prompt ; Strength ; Guidance_Scale ; SEED\r\nphotos/cat.jpg;"a tiger, watercolor";0,75;2,5;1\r\n'
        'photos/coffee.jpg;"tea; green";;;\r\n',
        "source\tprompt\tstrength\tguidance_scale\tseed\nphotos/cat.jpg\ta tiger, watercolor\t0.75\t2.5\t1\n"
        "photos/coffee.jpg\ttea; green\t\t\t\n",
        '"source","prompt","strength","guidance_scale","seed"\nphotos/cat.jpg,"a tiger, watercolor",0.75,2.5,1\n'
        "photos/coffee.jpg,tea; green,,,\n",
    ],
    ids=["semicolon", "tab", "comma-quoted-header"],
)
def test_delimiters_and_header_names_as_spreadsheets_write_them(folder, text):
    assert items(write(folder, text)) == EXPECTED


def test_fully_empty_rows_are_skipped_and_lines_still_counted(folder):
    text = (
        "\nsource;prompt;strength;;\n;;;;\nphotos/cat.jpg;a tiger;0,5;;\n  ; ;\t;;\n\nphotos/coffee.jpg;tea;;;\n;;;;\n"
    )
    assert [(name, prompt) for name, prompt, *_ in items(write(folder, text))] == [
        ("cat.jpg", "a tiger"),
        ("coffee.jpg", "tea"),
    ]
    # the line named in a refusal is the file's own line, blank rows included
    bad = text.replace("photos/coffee.jpg;tea;;;", "photos/coffee.jpg;tea;2;;")
    assert "row 2 (line 7): field 'strength'" in refusal(write(folder, bad))


def test_unnamed_columns_may_only_be_blank(folder):
    ok = "source,prompt,,\nphotos/cat.jpg,a tiger,,\nphotos/coffee.jpg,tea, ,\n"
    assert len(items(write(folder, ok))) == 2
    message = refusal(write(folder, "source,prompt,,\nphotos/cat.jpg,a tiger,,x\n"))
    assert "row 1 (line 2): a value in column 4, which has no name in the header" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("source,prompts\nphotos/cat.jpg,x\n", "column 'prompts': only YAML manifests support 'prompts'"),
        ("source,prompt,Recursive\nphotos/cat.jpg,x,true\n", "only YAML manifests support 'recursive'"),
        ("source,prompt,keep_sources\nphotos/cat.jpg,x,true\n", "only YAML manifests support 'keep_sources'"),
        ("source,prompt,loras\nphotos/cat.jpg,x,a\n", "only YAML manifests support 'loras'"),
        ("source,prompt,defaults\nphotos/cat.jpg,x,a\n", "only YAML manifests support 'defaults'"),
        ("source,prompt,name\nphotos/cat.jpg,x,a\n", "names jobs in a 'job' column"),
        ("sources,prompt\nphotos/cat.jpg,x\n", "a CSV row has one 'source'"),
        ("source,prompt,Prompt\nphotos/cat.jpg,x,y\n", "column 'prompt' appears 2 times in the header"),
        ("source,prompt,strenght\nphotos/cat.jpg,x,0.5\n", "unknown column 'strenght' (did you mean 'strength'?)"),
        ("source|prompt\nphotos/cat.jpg|x\n", "lacks the required column 'source' (header read: source|prompt)"),
        ("", "line 1: the file is empty: expected a header line"),
        (
            "source,prompt\nphotos/cat.jpg,x,extra\n",
            "row 1 (line 2): more cells than header columns: expected at most 2",
        ),
        ("source;prompt\nphotos/cat.jpg;strength 0,5\n", None),  # a decimal comma only in number columns
    ],
)
def test_what_cannot_be_understood_is_refused_saying_what_was_expected(folder, text, expected):
    path = write(folder, text)
    if expected is None:
        assert items(path)[0][1] == "strength 0,5"
    else:
        message = refusal(path)
        assert expected in message, message
        assert "unknown column" not in message or "only YAML" not in message  # one reason per column


def test_a_long_caption_parses_and_the_field_limit_is_restored(folder):
    """csv's default field limit (131,072 characters) crashed the reader; it is raised only while a manifest is
    read, to the manifest size cap (no cell of an accepted file can be larger)."""
    caption = "a cat " * 40_000  # 240,000 characters
    before = csv.field_size_limit()
    path = write(folder, f'source,prompt,caption\nphotos/cat.jpg,a tiger,"{caption}"\n')
    [job] = load_manifest(path).jobs
    assert job.grids[0].sources[0].caption == caption
    assert csv.field_size_limit() == before
    long_prompt = write(folder, f"source,prompt\nphotos/cat.jpg,{'x' * 200_000}\n", "long.csv")
    message = refusal(long_prompt)  # the prompt-length limit, not a csv error
    assert "row 1 (line 2)" in message and "prompt" in message and re.search("4,?000 characters", message)


@pytest.mark.parametrize(
    "text, line",
    [
        # never closed: every later row would become part of the prompt
        ('source,prompt\nphotos/cat.jpg,a cat\nphotos/cat.jpg,"a tiger\nphotos/coffee.jpg,tea\nphotos/cat.jpg,x\n', 3),
        # closed by the quote of a later cell, mid-cell
        ('source,prompt\nphotos/cat.jpg,"a tiger\nphotos/coffee.jpg,tea\nphotos/cat.jpg,"a lion"\n', 2),
        # closed cleanly by a later cell that happens to end in a quote
        ('source,prompt\nphotos/cat.jpg,"a tiger\nphotos/coffee.jpg,tea\nphotos/cat.jpg,12" vinyl"\n', 2),
        ('source;prompt\nphotos/cat.jpg;"a tiger\nhttps://example.com/x;tea"\n', 2),
    ],
)
def test_an_unterminated_quote_is_refused_at_the_line_it_opens(folder, text, line):
    message = refusal(write(folder, text))
    assert f"line {line}: unterminated quote" in message, message


def test_a_quote_closed_mid_cell_is_refused_but_a_closed_multi_line_prompt_is_one_cell(folder):
    message = refusal(write(folder, 'source,prompt\nphotos/cat.jpg,"a tiger" at night\n'))
    assert "line 2: a quoted cell must end with its closing quote followed by a comma" in message
    text = 'source,prompt,seed\nphotos/cat.jpg,"a tiger,\non a sofa; ""quoted""",1\nphotos/coffee.jpg,tea,2\n'
    assert [prompt for _, prompt, *_ in items(write(folder, text))] == ['a tiger,\non a sofa; "quoted"', "tea"]
    assert "row 2 (line 4)" in refusal(write(folder, text.replace(",tea,2", ",tea,x")))


def test_a_job_name_refused_says_whether_the_job_column_or_the_file_name_gave_it(folder):
    (folder / "my jobs.csv").write_text("source,prompt\ncat.jpg,x\n")
    with pytest.raises(ManifestError) as refused:
        load_manifest(folder / "my jobs.csv")
    (problem,) = refused.value.problems
    assert problem.startswith(f"{folder / 'my jobs.csv'}: job 'my jobs': the job is named after the CSV file: ")
    assert problem.endswith(": add a 'job' column naming the job, or rename the file") and "field 'name'" not in problem
    (folder / "jobs.csv").write_text("job,source,prompt\nbad job,cat.jpg,x\n")
    with pytest.raises(ManifestError) as refused:
        load_manifest(folder / "jobs.csv")
    assert refused.value.problems == [
        f"{folder / 'jobs.csv'}: row 1 (line 2): column 'job': 'bad job' is not allowed: it names the output folder, "
        "so use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, with no '..'"
    ]
    # the first row naming it, and how many more do
    (folder / "jobs.csv").write_text("job,source,prompt\nok,cat.jpg,x\n\nbad job,cat.jpg,y\nbad job,cat.jpg,z\n")
    with pytest.raises(ManifestError) as refused:
        load_manifest(folder / "jobs.csv")
    (problem,) = refused.value.problems
    assert problem.startswith(f"{folder / 'jobs.csv'}: row 2 (line 4) and 1 more row: column 'job': 'bad job' is ")
