"""Manifest parsing and every refusal: each names the file, the job and the field."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from batch_edit.errors import ManifestError
from batch_edit.grid_checks import denoising_steps
from batch_edit.manifest import load_manifest, load_manifests
from batch_edit.prompts import template_fields

from .conftest import PHOTOS, refusal


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.jpg", "coffee.jpg", "cat.txt"):
        shutil.copy(PHOTOS / name, folder / name)
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_grid_with_defaults_and_relative_paths(tmp_path, photos):
    path = write(
        tmp_path,
        "run.yaml",
        """
        output_root: out
        pipeline: conf/p.yaml
        defaults:
          width: 512
          strength: [0.5, 0.9]
        jobs:
          - name: sweep
            sources: photos/cat.jpg
            prompts: ["a tiger", "a lion"]
            seed: [1, 2, 3]
          - name: folder
            sources: photos
            prompts: "{stem}, watercolor"
            strength: 0.7
            height: 256
        """,
    )
    manifest = load_manifest(path)
    assert manifest.output_root == (tmp_path / "out").resolve()
    assert manifest.pipeline == (tmp_path / "conf" / "p.yaml").resolve()
    sweep, folder = manifest.jobs
    (grid,) = sweep.grids
    assert [ref.key for ref in grid.sources] == [(photos / "cat.jpg").resolve().as_posix()]
    assert grid.prompts == ("a tiger", "a lion")
    assert grid.strength == (0.5, 0.9) and grid.seed == (1, 2, 3)
    assert grid.width == (512,) and grid.height == (1024,)  # default merged, reference default kept
    assert grid.num_inference_steps == (28,) and grid.guidance_scale == (3.5,) and grid.resize == ("center-crop",)
    (grid,) = folder.grids
    assert [Path(ref.key).name for ref in grid.sources] == ["cat.jpg", "coffee.jpg"]
    assert grid.strength == (0.7,) and grid.height == (256,)


def test_caption_template_needs_a_caption_for_every_source(tmp_path, photos):
    path = write(tmp_path, "m.yaml", "jobs: [{name: j, sources: photos, prompts: '{caption}, watercolor'}]\n")
    message = refusal(path)
    assert "uses {caption}" in message and "coffee.jpg" in message and "cat.jpg" not in message


def test_csv_rows_are_items_and_jobs(tmp_path, photos):
    path = write(
        tmp_path,
        "aug.csv",
        """\
        source,prompt,job,caption,strength,seed,width,height,resize
        photos/cat.jpg,"{caption}, snow",,a cat on a table,0.8,7,256,128,pad
        photos/coffee.jpg,a cup,other,,,,,,
        photos/missing.jpg,a ghost,,,,,,,
        """,
    )
    manifest = load_manifest(path)
    assert [job.name for job in manifest.jobs] == ["aug", "other"]
    first, missing = manifest.jobs[0].grids
    assert first.sources[0].caption == "a cat on a table"
    assert (first.strength, first.seed, first.width, first.height, first.resize) == (
        (0.8,),
        (7,),
        (256,),
        (128,),
        ("pad",),
    )
    # a missing file is not a refusal: it becomes a failed item at run time
    assert missing.sources[0].fingerprint == ""
    (other,) = manifest.jobs[1].grids
    assert other.strength == (0.9,) and other.seed == (None,) and other.width == (1024,)


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strenght: 0.5}]",
            ["unknown key 'strenght'", "did you mean 'strength'", "jobs[0]"],
        ),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strength: 1.5}]",
            ["field 'strength'", "less than or equal to 1", "1.5"],
        ),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strength: [0.5, 0]}]",
            ["strength[1]", "greater than 0"],
        ),
        ("jobs: [{name: a, sources: photos/cat.jpg, prompts: x, width: 500}]", ["field 'width'", "multiple of 16"]),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, num_inference_steps: 0}]",
            ["num_inference_steps", "greater than or equal to 1"],
        ),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, num_inference_steps: '28'}]",
            ["num_inference_steps", "valid integer"],
        ),
        ("jobs: [{name: a, sources: photos/cat.jpg, prompts: x, resize: crop}]", ["resize", "center-crop", "'fit'"]),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strength: 0.000000000000000001}]",
            ["strength 1e-18 with 28 steps leaves no denoising step"],
        ),
        ("jobs: [{name: ../escape, sources: photos/cat.jpg, prompts: x}]", ["'../escape' is not allowed", "'..'"]),
        ("jobs: [{name: a..b, sources: photos/cat.jpg, prompts: x}]", ["'a..b' is not allowed"]),
        ("jobs: [{name: a/b, sources: photos/cat.jpg, prompts: x}]", ["'a/b' is not allowed"]),
        ("jobs: [{name: a, sources: 'photos/*.png', prompts: x}]", ["sources[0]", "photos/*.png", "matches no image"]),
        (
            "jobs: [{name: a, sources: photos/cat.jpg, prompts: x}, {name: a, sources: photos/cat.jpg, prompts: y}]",
            ["job name 'a' is used twice"],
        ),
        ("jobs: [{name: a, sources: photos/cat.jpg, prompts: 'x {style}'}]", ["unknown placeholder {style}"]),
        ("jobs: [{name: a, sources: photos/cat.jpg, prompts: 'x {stem.__class__}'}]", ["unknown placeholder"]),
        ("jobs: [{name: a, prompts: x}]", ["field 'sources'", "field required"]),
        ("jobs: []", ["the manifest lists no jobs", "at least one job"]),
        ("jobz: []", ["unknown key 'jobz'", "did you mean 'jobs'"]),
        ("jobs: [{name: a, sources: photos/cat.jpg, prompts: x]", ["not valid YAML", ":1"]),
        ("- just a list", ["must be a mapping"]),
        ("jobs: [{name: a, sources: 'file:///etc/passwd', prompts: x}]", ["sources[0]"]),
    ],
)
def test_refusals_name_the_problem(tmp_path, photos, body, expected):
    path = write(tmp_path, "bad.yaml", body + "\n")
    message = refusal(path)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_yaml_tags_that_would_run_code_are_refused(tmp_path, photos):
    marker = tmp_path / "pwned"
    path = write(tmp_path, "evil.yaml", f"jobs: !!python/object/apply:os.system ['touch {marker}']\n")
    message = refusal(path)
    assert "not valid YAML" in message and "python/object/apply" in message
    assert not marker.exists()


def test_alias_expansion_bomb_is_refused(tmp_path, photos):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    path = write(
        tmp_path, "bomb.yaml", "\n".join(lines) + "\njobs: [{name: a, sources: photos/cat.jpg, prompts: *a8}]\n"
    )
    assert "aliases expand to more than" in refusal(path)


def test_every_problem_is_reported_at_once(tmp_path, photos):
    path = write(
        tmp_path,
        "two.yaml",
        "jobs: [{name: a, sources: photos/cat.jpg, prompts: x, strength: 2}, {name: b, sources: nothing/*, prompts: y}]\n",
    )
    message = refusal(path)
    assert "jobs[0] ('a')" in message and "jobs[1] ('b')" in message


@pytest.mark.parametrize(
    "csv_text, expected",
    [
        ("source,prompt,strenght\nphotos/cat.jpg,x,0.5\n", ["unknown column 'strenght'", "did you mean 'strength'"]),
        ("source,text\nphotos/cat.jpg,x\n", ["lacks the required column 'prompt'", "unknown column 'text'"]),
        (
            "source,prompt,strength\nphotos/cat.jpg,x,0.5\nphotos/cat.jpg,y,abc\n",
            ["row 2 (line 3)", "field 'strength'", "'abc'"],
        ),
        ("source,prompt,width\nphotos/cat.jpg,x,100\n", ["row 1", "multiple of 16"]),
        ("source,prompt\nphotos,x\n", ["row 1", "folder"]),
        ("source,prompt,job\nphotos/cat.jpg,x,../up\n", ["'../up' is not allowed"]),
        ("source,prompt\n", ["no rows"]),
        ("source,prompt\nphotos/cat.jpg,x,extra\n", ["row 1", "more cells than header columns"]),
    ],
)
def test_csv_refusals(tmp_path, photos, csv_text, expected):
    path = write(tmp_path, "bad.csv", csv_text)
    message = refusal(path)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_duplicate_job_names_across_manifests(tmp_path, photos):
    yaml_path = write(tmp_path, "a.yaml", "jobs: [{name: aug, sources: photos/cat.jpg, prompts: x}]\n")
    csv_path = write(tmp_path, "aug.csv", "source,prompt\nphotos/cat.jpg,y\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([yaml_path, csv_path])
    assert "job name 'aug' is used twice" in str(info.value)


def test_other_suffix_and_missing_file(tmp_path):
    assert "must be a .yaml, .yml or .csv" in refusal(write(tmp_path, "m.json", "{}"))
    assert "file not found" in refusal(tmp_path / "nope.yaml")


def test_denoising_steps_matches_diffusers():
    assert denoising_steps(28, 0.9) == 26  # the reference: 26 transformer passes
    assert denoising_steps(28, 1.0) == 28
    assert denoising_steps(4, 0.2) == 1  # int() truncates: 4 - int(3.2)
    assert denoising_steps(10, 0.55) == 6
    assert denoising_steps(28, 1e-18) == 0  # 28 - 28 * 1e-18 rounds to 28.0


def test_template_fields():
    assert template_fields("{caption}, {stem} {{literal}}") == {"caption", "stem"}
    with pytest.raises(ValueError, match="unknown placeholder"):
        template_fields("{style}")
    with pytest.raises(ValueError, match="conversion '!r' is not supported"):
        template_fields("{caption!r}")
    with pytest.raises(ValueError, match="malformed"):
        template_fields("a {caption")
