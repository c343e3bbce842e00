"""Manifest problems worded as what is actually wrong, refused before anything runs: format specs that do not
suit a placeholder's value, specs and conversions where none are taken, the per-run item limit, globs in CSV
rows; and contact sheets numbering variations as file names do."""

from __future__ import annotations

import random
import shutil
import textwrap

import pytest

from batch_edit.manifest_models import JobDefaults
from batch_edit.parameters import SEED_MAX
from batch_edit.plan import derive_seed
from batch_edit.sheet_arrangement import arrange

from .conftest import PHOTOS, batch_edit

CAT = str(PHOTOS / "cat.jpg")


def plan(tmp_path, config, text: str, name: str = "m.yaml", command: str = "plan"):
    manifest = tmp_path / name
    manifest.write_text(textwrap.dedent(text))
    return batch_edit(command, str(manifest), "--pipeline", str(config), "--output-root", str(tmp_path / "out"))


def refused(result) -> str:
    """The one-line error of a manifest refused before anything ran."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


# --- file-name format specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "placeholder, kind",
    [
        ("{strength:d}", "decimal number"),
        ("{guidance:d}", "decimal number"),
        ("{stem:d}", "text"),
        ("{steps:s}", "whole number"),
        ("{seed:.2s}", "whole number"),
        ("{seed:c}", "whole number"),  # fine for a small seed, not for every seed a job may have
        ("{id:+}", "text"),
    ],
)
def test_a_file_name_format_spec_that_does_not_suit_its_value_is_refused_naming_it(
    tmp_path, tiny_config, placeholder, kind
):
    result = plan(tmp_path, tiny_config, f"jobs: [{{name: r4, sources: {CAT}, prompts: p, file_name: '{placeholder}-{{id}}'}}]")  # fmt: skip
    line = refused(result)
    assert "jobs[0] ('r4'): field 'file_name':" in line and f"{placeholder} cannot be filled in" in line
    assert kind in line and "format spec" in line
    assert not (tmp_path / "out").exists()


def test_run_refuses_an_unsuitable_file_name_spec_before_loading_the_model(tmp_path, tiny_config):
    result = plan(tmp_path, tiny_config, f"jobs: [{{name: r4, sources: {CAT}, prompts: p, file_name: '{{strength:d}}'}}]", command="run")  # fmt: skip
    assert "{strength:d} cannot be filled in" in refused(result) and "loading" not in result.stdout + result.stderr


def test_file_name_format_specs_that_suit_their_values_still_plan(tmp_path, tiny_config):
    template = "{strength:.2f}_{guidance:03.0f}_{steps:04d}_{seed:08x}_{index:04d}_{variation:02d}_{stem:.3}_{id:.6}"
    result = plan(tmp_path, tiny_config, f"jobs: [{{name: ok, sources: {CAT}, prompts: p, seed: {SEED_MAX}, file_name: '{template}'}}]")  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- specs and conversions where none are taken ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, written, what",
    [("{stem:>5} photo", "{stem:>5}", "format spec ':>5'"), ("{caption!r}, photo", "{caption!r}", "conversion '!r'")],
)
def test_a_prompt_placeholder_with_a_spec_or_conversion_says_so(tmp_path, tiny_config, prompt, written, what):
    line = refused(plan(tmp_path, tiny_config, f"jobs: [{{name: a, sources: {CAT}, prompts: '{prompt}'}}]"))
    assert "unknown placeholder" not in line
    assert f"{written}: a {what} is not supported in a prompt" in line and "write {" in line


def test_a_file_name_conversion_says_so_and_points_at_format_specs(tmp_path, tiny_config):
    line = refused(plan(tmp_path, tiny_config, f"jobs: [{{name: a, sources: {CAT}, prompts: p, file_name: '{{index!r}}-{{id}}'}}]"))  # fmt: skip
    assert "unknown placeholder" not in line
    assert "field 'file_name': {index!r}: a conversion '!r' is not supported in a file name" in line
    assert "{index:04d}" in line


def test_a_placeholder_inside_a_format_spec_is_refused_without_a_traceback(tmp_path, tiny_config):
    line = refused(plan(tmp_path, tiny_config, f"jobs: [{{name: a, sources: {CAT}, prompts: p, file_name: '{{index:{{width}}}}-{{id}}'}}]"))  # fmt: skip
    assert "field 'file_name': {index:{width}}:" in line and "placeholder inside a format spec" in line


# --- the per-run item limit -----------------------------------------------------------------------------------


def test_a_job_over_the_run_limit_is_told_to_split_over_runs_and_shows_no_mask_axes(tmp_path, tiny_config):
    seeds, steps = list(range(3000)), list(range(1, 1001))
    line = refused(plan(tmp_path, tiny_config, f"""
        jobs:
          - {{name: big, sources: {CAT}, prompts: p, seed: {seeds}, num_inference_steps: {steps},
             strength: [0.5, 0.6, 0.7, 0.8]}}
    """))  # fmt: skip
    assert "12,000,000 items" in line and "3000 seed" in line
    assert "several jobs" not in line and "mask" not in line and "composite" not in line
    assert "per run" in line and "run each separately" in line


def test_a_file_name_clash_without_masks_names_no_mask_parameters(tmp_path, tiny_config):
    line = refused(plan(tmp_path, tiny_config, f"jobs: [{{name: t, sources: {CAT}, prompts: a, strength: [0.5, 0.9], file_name: '{{stem}}'}}]"))  # fmt: skip
    assert "gives two items the name 'cat'" in line and "strength 0.5" in line
    assert "mask" not in line and "composite" not in line


# --- globs in CSV rows ----------------------------------------------------------------------------------------


def test_a_glob_in_a_csv_source_is_refused_at_its_line(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat.jpg")
    text = f"source,prompt\n{tmp_path}/*.jpg,a\n{tmp_path}/cat.jpg,b\n"
    line = refused(plan(tmp_path, tiny_config, text, name="m.csv"))
    assert "row 1 (line 2): field 'source':" in line and "*.jpg" in line and "is a glob" in line
    assert "a CSV row names one image" in line and "sources:" in line
    assert "a CSV row names one image" in refused(plan(tmp_path, tiny_config, text, name="m.csv", command="run"))


def test_a_csv_source_literally_named_with_glob_characters_still_works(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "cat [1]*.jpg")
    result = plan(tmp_path, tiny_config, f"source,prompt\n{tmp_path}/cat [1]*.jpg,a\n", name="m.csv")
    assert result.returncode == 0, result.stderr


# --- variations on contact sheets -----------------------------------------------------------------------------


def test_sheet_labels_number_variations_as_the_file_names_do():
    """`{variation}` and README count from 0; the sheet labels each image with the variation its seed was derived
    for, whatever order the rows come in."""
    seeds = {f"v{v}": derive_seed(CAT, "a tiger", v) for v in range(3)}
    rows = [
        {"source": CAT, "prompt": "a tiger", "seed": s, "seed_derived": "True", "name": n} for n, s in seeds.items()
    ]
    random.Random(1).shuffle(rows)
    grid, _ = arrange(rows)
    by_label = dict(zip(grid.row_labels or grid.headers, (cell["name"] for _, cell in sorted(grid.cells.items()))))
    assert by_label == {"variation 0": "v0", "variation 1": "v1", "variation 2": "v2"}


def test_a_name_used_twice_is_reported_with_the_other_jobs_problems(tmp_path, tiny_config):
    result = plan(tmp_path, tiny_config, f"""
        jobs:
          - {{name: a, sources: {CAT}, prompts: p}}
          - {{name: a, sources: {CAT}, prompts: q, strength: 5}}
    """)  # fmt: skip
    assert result.returncode == 2
    assert "jobs[1] ('a'): job name 'a' is used twice (also in" in result.stderr
    assert "jobs[1] ('a'): field 'strength'" in result.stderr


def test_an_unknown_top_level_key_is_reported_with_the_jobs_problems(tmp_path, tiny_config):
    result = plan(tmp_path, tiny_config, f"""
        jobs:
          - {{name: a, sources: {CAT}, prompts: p, strength: 5}}
        foo: 1
    """)  # fmt: skip
    assert result.returncode == 2
    assert "unknown key 'foo'" in result.stderr and "jobs[0] ('a'): field 'strength'" in result.stderr
    assert not (tmp_path / "out").exists()


def error_lines(result) -> list[str]:
    """Every problem of a manifest refused before anything ran, the first without its 'error: '."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr.removeprefix("error: ").splitlines()


def test_an_unknown_key_in_defaults_leaves_the_jobs_their_other_defaults(tmp_path, tiny_config):
    result = plan(tmp_path, tiny_config, f"""
        defaults:
          sources: {CAT}
          strenght: 0.5
        jobs:
          - {{name: a, prompts: p}}
          - {{name: b, prompts: q}}
    """)  # fmt: skip
    allowed = ", ".join(JobDefaults.model_fields)
    assert error_lines(result) == [
        f"{tmp_path / 'm.yaml'}: defaults: unknown key 'strenght' (did you mean 'strength'?); allowed keys: {allowed}"
    ]
    assert not (tmp_path / "out").exists()


def test_a_refused_default_is_reported_once_not_as_missing_in_each_job_taking_it(tmp_path, tiny_config):
    result = plan(tmp_path, tiny_config, f"""
        defaults:
          sources: 5
          prompts: p
        jobs:
          - {{name: a}}
          - {{name: b, sources: {CAT}}}
          - {{name: c, sources: {CAT}, strength: 5}}
    """)  # fmt: skip
    manifest = tmp_path / "m.yaml"
    assert error_lines(result) == [
        f"{manifest}: defaults: field 'sources': input should be a valid string (got 5)",
        f"{manifest}: jobs[2] ('c'): field 'strength': input should be less than or equal to 1 (got 5)",
    ]
