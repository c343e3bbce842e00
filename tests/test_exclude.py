"""`exclude:` leaves images out of a job's folders and globs: a name (`*_thumb.jpg`, `rejects`) at any depth, or a
path from the folder or glob's start (`old/**`, `2019/raw`). A file listed by name is never left out. `plan` counts
what was left out; a pattern leaving out nothing is warned of (plan and run); one leaving out every image of a
folder is refused, as are patterns that cannot work. Results of a file excluded later are no longer planned (not
kept as archived), also once the file is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_edit.source_folders import excluded_by

from .conftest import batch_edit, image_file, run_manifest


@pytest.mark.parametrize(
    "path, patterns, pattern",
    [
        ("a.jpg", ("*_thumb.jpg",), None),
        ("a_thumb.jpg", ("*_thumb.jpg",), "*_thumb.jpg"),
        ("x/y/a_thumb.jpg", ("*_thumb.jpg",), "*_thumb.jpg"),  # a name: at any depth
        ("rejects/a.jpg", ("rejects",), "rejects"),  # a folder's name: everything below
        ("x/rejects/deep/a.jpg", ("rejects",), "rejects"),
        ("old/2019/a.jpg", ("old/**",), "old/**"),
        ("new/old/a.jpg", ("old/**",), None),  # a path starts at the root
        ("2019/raw/a.jpg", ("2019/raw",), "2019/raw"),  # a folder matched: everything below
        ("2019/rawer/a.jpg", ("2019/raw",), None),
        ("a/b/c.gif", ("**/*.gif",), "**/*.gif"),
        ("A_THUMB.jpg", ("*_thumb.jpg",), None),  # case-sensitive, as globs are
    ],
)
def test_excluded_by(path, patterns, pattern):
    root = Path("/photos")
    assert excluded_by(root / path, root, patterns) == pattern


def _photos(tmp_path):
    for name in ("a.png", "b.png", "c_thumb.png", "rejects/r.png", "old/o.png"):
        image_file(tmp_path / "photos" / name, (32, 32), color=len(name) * 20)


def _manifest(tmp_path, sources="photos/", exclude='["*_thumb.png", rejects]', recursive="true", defaults=""):
    (tmp_path / "m.yaml").write_text(
        f"{defaults}jobs:\n  - {{name: j, sources: {sources}, recursive: {recursive}, exclude: {exclude}, "
        "prompts: p, width: 16, height: 16, strength: 0.5, num_inference_steps: 2}\n"
    )


def test_a_folder_job_leaves_out_what_exclude_names(tmp_path, tiny_config):
    _photos(tmp_path)
    _manifest(tmp_path, exclude='["*_thumb.png", rejects, "nothing*"]')
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 3 item(s)" in planned and "  sources: a, b, o" in planned, planned
    assert "excluded: 2 image(s) of its folders and globs (exclude)" in planned
    unused = "warning: job j: exclude pattern(s) 'nothing*' leave out no image of its folders and globs"
    assert unused in planned
    printed = run_manifest(tmp_path, tiny_config, "run")
    assert unused in printed and "3 written" in printed
    rows = (tmp_path / "out" / "j" / "metadata.csv").read_text()
    assert "thumb" not in rows and "rejects" not in rows


def test_a_glob_job_takes_paths_from_its_start_and_files_named_stay(tmp_path, tiny_config):
    _photos(tmp_path)
    _manifest(tmp_path, sources='["photos/**/*.png", photos/old/o.png]', exclude='["old/**"]')
    planned = run_manifest(tmp_path, tiny_config, "plan")
    # old/o.png is left out of the glob but named as a file; rejects/r.png and the thumb are the glob's
    assert "job j: 5 item(s)" in planned and "excluded: 1 image(s)" in planned, planned


def test_exclude_leaving_out_every_image_and_bad_patterns_are_refused(tmp_path, tiny_config):
    _photos(tmp_path)
    _manifest(tmp_path, exclude='["*.png"]')
    refused = run_manifest(tmp_path, tiny_config, "plan", code=2)
    assert "field 'sources[0]': source 'photos/': exclude leaves out every image it finds (5): '*.png'" in refused
    for pattern, why in [
        ("/photos/a.png", "must be relative to the folder or glob it applies to"),
        ("../x", "may not go up (..)"),
        ("'  '", "is empty"),
    ]:
        _manifest(tmp_path, exclude=f"[{pattern}]")
        refused = run_manifest(tmp_path, tiny_config, "plan", code=2)
        assert "field 'exclude[0]': " + why in refused, refused


def test_defaults_exclude_on_a_job_without_folders_warns_of_nothing(tmp_path, tiny_config):
    _photos(tmp_path)
    _manifest(tmp_path, sources="photos/a.png", exclude='["*_thumb.png"]', defaults="defaults: {exclude: rejects}\n")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 1 item(s)" in planned and "warning" not in planned, planned


def test_results_of_a_file_excluded_later_are_no_longer_planned_even_once_it_is_deleted(tmp_path, tiny_config):
    _photos(tmp_path)
    _manifest(tmp_path, exclude='["*_thumb.png", rejects, old]')
    run_manifest(tmp_path, tiny_config, "run")  # a and b made
    _manifest(tmp_path, exclude='["*_thumb.png", rejects, old, b.png]')
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 1 item(s), 1 already done" in planned, planned
    (tmp_path / "photos" / "b.png").unlink()
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 1 item(s), 1 already done" in planned and "gone" not in planned, planned
    pruned = run_manifest(tmp_path, tiny_config, "prune")
    assert "moved 1" in pruned, pruned


def test_a_csv_manifest_is_told_how_to_leave_files_out(tmp_path, tiny_config):
    (tmp_path / "m.csv").write_text("source,prompt,exclude\nphotos/a.png,p,x\n")
    result = batch_edit("plan", "m.csv", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert "column 'exclude': only YAML manifests support 'exclude' (a CSV row names one file" in result.stderr
