"""Names and checks worded from what a job gives: fitted sources kept once whatever the result names, file-name
clashes reported with other jobs' errors, mask parameters not blamed on a job whose masks failed to pair, and
`resize: fit` sizes that make one image twice warned of."""

from __future__ import annotations

import re
import textwrap

import pandas as pd
from PIL import Image

from batch_edit.manifest import load_manifests
from batch_edit.plan import plan_jobs
from batch_edit.plan_checks import fit_duplicates
from batch_edit.result_files import source_file_name

from .conftest import PHOTOS, batch_edit, image_file, write_pipeline_config

CAT = str(PHOTOS / "cat.jpg")


def _write(tmp_path, text: str, name: str = "m.yaml"):
    manifest = tmp_path / name
    manifest.write_text(textwrap.dedent(text))
    return manifest


def _plan(tmp_path, config, text: str):
    manifest = _write(tmp_path, text)
    return batch_edit("plan", str(manifest), "--pipeline", str(config), "--output-root", str(tmp_path / "out"))


def _planned(tmp_path, text: str):
    manifests = load_manifests([_write(tmp_path, text)], output_root=tmp_path / "out")
    return plan_jobs([job for manifest in manifests for job in manifest.jobs], {"model": "x"})


# --- kept sources ------------------------------------------------------------------------------------------------


def test_kept_source_named_from_the_source_whatever_the_file_name(tmp_path):
    """The default template's kept names are what they always were; a template naming each item apart names no
    copy apart (the copy was once one per item, `cat_s1.png-<digest>.png`)."""
    default, templated = _planned(
        tmp_path,
        f"""
        jobs:
          - {{name: plain, sources: {CAT}, prompts: x, seed: [1, 2]}}
          - {{name: named, sources: {CAT}, prompts: x, seed: [1, 2], file_name: "{{job}}-{{index:04d}}-s{{seed}}"}}
        """,
    )
    kept = {source_file_name(item, (64, 48)) for plan in (default, templated) for item in plan.items}
    old_default = {f"sources/{item.output_name.rsplit('-', 1)[0]}-" for item in default.items}
    assert len(kept) == 1 and re.fullmatch(r"sources/cat-[0-9a-f]{12}\.png", kept.pop())
    assert {source_file_name(item, (64, 48))[: len("sources/cat-")] for item in default.items} == old_default
    masks = {source_file_name(item, (64, 48), item.source) for item in templated.items}
    assert len(masks) == 1 and masks.pop().startswith("sources/cat-mask-")


def test_keep_sources_writes_each_fitted_source_once_with_a_file_name_template(tmp_path, tiny_config):
    manifest = _write(
        tmp_path,
        f"""
        output_root: out
        jobs:
          - name: ks
            sources: {CAT}
            prompts: a tiger
            seed: [1, 2, 3]
            width: 64
            height: 48
            num_inference_steps: 2
            strength: 0.5
            keep_sources: true
            file_name: "{{stem}}_s{{seed}}"
        """,
    )
    result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    kept = sorted(path.name for path in (tmp_path / "out" / "ks" / "sources").iterdir())
    assert len(kept) == 1 and re.fullmatch(r"cat-[0-9a-f]{12}\.png", kept[0])
    rows = pd.read_csv(tmp_path / "out" / "ks" / "metadata.csv")
    assert list(rows["file_name"]) == ["cat_s1.png", "cat_s2.png", "cat_s3.png"]
    assert set(rows["source_image_file_name"]) == {f"sources/{kept[0]}"}


# --- clashes reported with the other jobs' errors ---------------------------------------------------------------


def test_file_name_clash_reported_with_another_jobs_errors(tmp_path, tiny_config):
    result = _plan(
        tmp_path,
        tiny_config,
        f"""
        jobs:
          - {{name: a, sources: {CAT}, prompts: x, seed: [1, 2], file_name: "{{stem}}"}}
          - {{name: b, sources: {CAT}, prompts: x, strength: 7}}
          - {{name: c, sources: {CAT}, prompts: x, file_name: "contact-sheet-{{seed}}"}}
          - {{name: d, sources: {CAT}, prompts: x, seed: [1, 2], file_name: "{{stem}}-{{id}}"}}
        """,
    )
    assert result.returncode == 2, result.stderr
    assert "jobs[1] ('b'): field 'strength'" in result.stderr
    assert "jobs[0] ('a'): field 'file_name': '{stem}' gives two items the name 'cat'" in result.stderr
    assert "jobs[2] ('c'): field 'file_name': 'contact-sheet-{seed}' gives" in result.stderr
    assert "('d')" not in result.stderr


def test_file_name_clash_alone_still_refused(tmp_path, tiny_config):
    result = _plan(
        tmp_path, tiny_config, f"jobs:\n  - {{name: a, sources: {CAT}, prompts: x, seed: [1, 2], file_name: x}}\n"
    )
    assert result.returncode == 2 and result.stderr.count("gives two items the name 'x'") == 1, result.stderr


# --- masks that failed to pair ------------------------------------------------------------------------------------


def test_mask_blur_not_blamed_on_a_job_whose_masks_failed_to_pair(tmp_path):
    photos = tmp_path / "photos"
    image_file(photos / "cat.jpg")
    image_file(photos / "cat.png", mode="L", color=255)
    config = write_pipeline_config(tmp_path / "p.yaml", tmp_path / "nomodel", task="inpaint")
    result = _plan(
        tmp_path,
        config,
        "jobs:\n  - {name: masked, sources: photos/cat.jpg, masks: photos/, prompts: x, mask_blur: [0, 8]}\n",
    )
    assert result.returncode == 2, result.stderr
    assert "field 'masks': two masks have the stem 'cat'" in result.stderr
    assert "field 'mask_blur'" not in result.stderr and result.stderr.count("error") == 1


# --- resize: fit making one size of two ---------------------------------------------------------------------------


def test_fit_sizes_fitting_to_one_size_warned_by_run(tmp_path, tiny_config):
    image_file(tmp_path / "src" / "odd.png", size=(77, 53))
    manifest = _write(
        tmp_path,
        """
        output_root: out
        defaults: {num_inference_steps: 2, strength: 0.5}
        jobs:
          - {name: fitdup, sources: src/odd.png, prompts: x, width: [64, 128], height: [64, 128], resize: fit}
          - {name: crop, sources: src/odd.png, prompts: x, width: [64, 128], height: [64, 128]}
        """,
    )
    result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "resize fit makes" in line]
    expected = (
        "warning: job fitdup: resize fit makes 64x128 and 128x64 one size, 112x80, for odd.png, with the same seed: "
        "those items make the same image under different ids; ask for sizes of other areas, or another resize mode"
    )
    assert warnings == [expected]
    assert "job fitdup: 4 written" in result.stdout + result.stderr  # the items are kept: their ids do not change


def test_fit_duplicates_measure_the_source_as_rotated(tmp_path):
    """A camera-rotated photo is fitted upright: its header's size, turned."""
    stored = Image.new("RGB", (53, 77))
    exif = stored.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to show it
    stored.save(tmp_path / "turned.jpg", exif=exif)
    image_file(tmp_path / "plain.png", size=(80, 80))
    [plan] = _planned(
        tmp_path,
        """
        jobs:
          - {name: j, sources: [turned.jpg, plain.png], prompts: x, width: [64, 128], height: [64, 128], resize: fit}
        """,
    )
    warning = fit_duplicates("j", plan.items)
    # plain.png: 96x96 for both too
    assert "64x128 and 128x64 one size, 112x80, for turned.jpg (and 1 more source(s))," in warning
    assert fit_duplicates("j", [item for item in plan.items if item.width == item.height]) is None


def test_a_clash_of_sources_sharing_a_stem_names_their_files(tmp_path, tiny_config):
    for name in ("a.png", "a.jpg", "x/b.png", "y/b.png"):
        image_file(tmp_path / name)
    for sources, shown in (
        ("[a.png, a.jpg]", ("(a.png,", "(a.jpg,")),
        ("[x/b.png, y/b.png]", ("x/b.png,", "y/b.png,")),
    ):
        text = f"jobs:\n  - {{name: a, sources: {sources}, prompts: x, file_name: '{{stem}}'}}\n"
        result = _plan(tmp_path, tiny_config, text)
        assert result.returncode == 2 and all(part in result.stderr for part in shown), result.stderr
    result = _plan(
        tmp_path, tiny_config, f"jobs:\n  - {{name: a, sources: {CAT}, prompts: x, seed: [1, 2], file_name: x}}\n"
    )
    assert "(cat, " in result.stderr  # one source: its stem, as the contact sheets label it
