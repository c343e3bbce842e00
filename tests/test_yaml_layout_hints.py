"""A manifest whose indentation YAML cannot follow names the line, the key and the column to move it to (the
parser says only "expected <block end>, but found ..."), and following the hint makes a manifest that loads."""

from __future__ import annotations

import shutil

import pytest

from .conftest import PHOTOS, batch_edit

JOB = "jobs:\n  - name: a\n    sources: cat.jpg\n"


def _plan(tmp_path, tiny_config, text: str):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "m.yaml").write_text(text)
    return batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)


@pytest.mark.parametrize(
    "text, said, fixed",
    [
        (  # one space short: lines up with no key above
            JOB + "   prompts: x\n",
            "m.yaml:4: not valid YAML: expected <block end>, but found '<block mapping start>'; prompts: on line 4 "
            "starts at column 4, where no key above it starts: line it up (with spaces) with the key it belongs "
            "beside, such as sources: at column 5 on line 3",
            JOB + "    prompts: x\n",
        ),
        (  # indented under a key that holds a value already
            JOB + "      prompts: x\n",
            "m.yaml:4: not valid YAML: mapping values are not allowed here; line 4 is indented deeper than line 3, "
            "whose key sources: holds a value already: start prompts: at column 5, as sources: is",
            JOB + "    prompts: x\n",
        ),
        (  # the job's keys out of the list item
            "jobs:\n  - name: a\n  sources: cat.jpg\n    prompts: x\n",
            "m.yaml:3: not valid YAML: expected <block end>, but found '?'; sources: on line 3 starts at column 3, "
            "where no key above it starts: line it up (with spaces) with the key it belongs beside, such as name: "
            "at column 5 on line 2",
            JOB + "    prompts: x\n",
        ),
        (  # a tab in the indentation
            "jobs:\n  - name: a\n\tsources: cat.jpg\n    prompts: x\n",
            "m.yaml:3: not valid YAML: found character '\\t' that cannot start any token; YAML indents with spaces "
            "only: line 3 has a tab, write spaces instead",
            JOB + "    prompts: x\n",
        ),
    ],
)
def test_the_line_and_the_column_to_move_it_to_are_named(tmp_path, tiny_config, text, said, fixed):
    result = _plan(tmp_path, tiny_config, text)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {said}"
    assert _plan(tmp_path, tiny_config, fixed).returncode == 0  # as the hint says: it loads


def test_a_colon_in_a_value_at_the_right_indentation_keeps_the_quoting_hint(tmp_path, tiny_config):
    result = _plan(tmp_path, tiny_config, JOB + "    prompts: portrait: dramatic light\n")
    assert result.stderr.strip().endswith('must be in quotes: prompts: "portrait: dramatic light"'), result.stderr
