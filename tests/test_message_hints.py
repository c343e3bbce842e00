"""Messages for a newcomer's usual slips say how to fix them: a manifest's `pipeline:` resolved against its own
folder, braces meant as text in a prompt, an unquoted value holding ': ', and an empty list (said once)."""

from __future__ import annotations

import shutil

import yaml

from .conftest import PHOTOS, batch_edit


def test_a_pipeline_path_relative_to_the_working_folder_names_the_manifest_key_and_the_path_to_write(
    tmp_path, tiny_config
):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "m.yaml").write_text(
        f"pipeline: {tiny_config.name}\njobs: [{{name: a, sources: {PHOTOS / 'cat.jpg'}, prompts: x}}]\n"
    )
    result = batch_edit("plan", "manifests/m.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: manifests/m.yaml: field 'pipeline': file not found: {tmp_path}/manifests/tiny.yaml")
    assert f"(relative paths resolve against the manifest's folder, {tmp_path}/manifests)" in line
    assert line.endswith("; for the tiny.yaml in the working folder write pipeline: ../tiny.yaml")
    (tmp_path / "manifests" / "m.yaml").write_text((tmp_path / "manifests" / "m.yaml").read_text().replace(
        "pipeline: tiny.yaml", "pipeline: ../tiny.yaml"
    ))  # fmt: skip
    assert batch_edit("plan", "manifests/m.yaml", cwd=tmp_path).returncode == 0  # the path it said works


def _plan(tmp_path, tiny_config, job: str):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "m.yaml").write_text(f"jobs:\n  - name: a\n    sources: cat.jpg\n{job}")
    return batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)


def test_braces_in_a_prompt_are_shown_doubled_for_the_text_itself(tmp_path, tiny_config):
    result = _plan(tmp_path, tiny_config, "    prompts: ['a {red} car', '{red|blue} car']\n")
    assert result.returncode == 2
    assert "unknown placeholder {red}: allowed are {caption} and {stem}; for the text {red} itself write {{red}}" in (
        result.stderr
    )
    assert "for the text {red|blue} itself write {{red|blue}}" in result.stderr
    fixed = _plan(tmp_path, tiny_config, "    prompts: ['a {{red}} car']\n")
    assert fixed.returncode == 0, fixed.stderr


def test_an_unquoted_value_holding_a_colon_is_told_to_be_quoted_with_the_line_as_it_should_be(tmp_path, tiny_config):
    result = _plan(tmp_path, tiny_config, "    prompts: portrait: dramatic light\n")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("error: m.yaml:4: not valid YAML: mapping values are not allowed here; a value holding ': '")
    hinted = line.split("must be in quotes: ", 1)[1]
    assert hinted == 'prompts: "portrait: dramatic light"'
    assert yaml.safe_load(hinted) == {"prompts": "portrait: dramatic light"}  # the line it gives is right
    other = _plan(tmp_path, tiny_config, "    prompts:\n      - portrait: dramatic: light\n")  # which ': '?
    assert other.stderr.strip().endswith("; a value holding ': ' (a colon and a space) must be in quotes")


def test_an_empty_list_is_said_once_per_field(tmp_path, tiny_config):
    result = _plan(tmp_path, tiny_config, "    prompts: []\n    strength: []\n")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].endswith("jobs[0] ('a'): field 'prompts': the list is empty; give at least one value")
    assert lines[1].endswith("jobs[0] ('a'): field 'strength': the list is empty; give at least one value")
    assert "valid string" not in result.stderr and "valid number" not in result.stderr
