"""`plan` says which JPEG items the run would fail at stage `encode` because their metadata (EXIF) would be over the
65,533 bytes a JPEG holds (a very long prompt of emoji, a long path), naming the job, the item and the field that
makes it too long, and what to do; worked out as the encoder is handed it, without building an image."""

from __future__ import annotations

import argparse
import shutil

import pandas as pd
from PIL import Image

from .conftest import PHOTOS, batch_edit

PROMPT = "\U0001f600" * 3900  # 16 bytes of EXIF each: 62,400 bytes


def _manifest(tmp_path, format: str = "jpeg"):
    deep = tmp_path.joinpath(*["d" * 200] * 5)  # 1,000 characters more of path: some 3,000 bytes more of EXIF
    deep.mkdir(parents=True)
    shutil.copy(PHOTOS / "cat.jpg", deep / "cat.jpg")
    shutil.copy(PHOTOS / "rocket.jpg", tmp_path / "rocket.jpg")
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: j, sources: [{deep / 'cat.jpg'}, rocket.jpg], prompts: ['{PROMPT}', short],"
        f" format: {format}, width: 32, height: 32, num_inference_steps: 2, strength: 0.5, seed: 1}}\n"
    )
    return deep / "cat.jpg"


def _command(tmp_path, config, *args):
    return batch_edit(*args, "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)


def test_plan_names_the_jpeg_item_whose_metadata_would_be_too_long_and_the_run_fails_it(tmp_path, tiny_config):
    long_path = _manifest(tmp_path)
    planned = _command(tmp_path, tiny_config, "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    [warning] = [line for line in planned.stderr.splitlines() if "stage encode" in line]
    assert warning.startswith("warning: job j: 1 item(s) would fail at stage encode: the metadata (EXIF) a JPEG ")
    assert f"source {long_path}: " in warning and "of them for its prompt of 3,900 characters" in warning, warning
    assert warning.endswith("write the job as format png or webp (no such limit), or shorten its prompt")

    ran = _command(tmp_path, tiny_config, "run")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "3 written, 0 already done, 1 failed (EXIF data is too long: 1)" in ran.stdout, ran.stdout
    [failed] = pd.read_csv(tmp_path / "out" / "j" / "failures.csv", dtype=str).to_dict("records")
    assert failed["stage"] == "encode" and f"item {failed['item_id']}, source {long_path}: " in warning
    again = _command(tmp_path, tiny_config, "plan")
    assert "1 item(s) would fail at stage encode" in again.stderr  # still pending (failed): said again


def test_the_planned_exif_bounds_the_bytes_each_written_jpeg_carries(tmp_path, tiny_config):
    from batch_edit.planning import prepare
    from batch_edit.result_files import pipeline_fields, planned_exif_length

    _manifest(tmp_path)
    assert _command(tmp_path, tiny_config, "run").returncode == 1
    args = argparse.Namespace(manifests=[tmp_path / "m.yaml"], pipeline=tiny_config, output_root=tmp_path / "out")
    config, root, [plan], _ = prepare(args, for_run=False, warn=False, echo=False)
    written = 0
    for item in plan.items:
        path = root / "j" / item.output_name
        if not path.exists():
            continue
        with Image.open(path) as image:
            carried = len(image.info["exif"])
        low, high = (planned_exif_length(item, pipeline_fields(config), False, widest=w) for w in (False, True))
        assert low <= carried <= high and high - low < 16, (low, carried, high)
        written += 1
    assert written == 3


def test_a_png_or_webp_job_is_not_warned(tmp_path, tiny_config):
    for format in ("png", "webp"):
        (tmp_path / format).mkdir()
        _manifest(tmp_path / format, format)
        planned = _command(tmp_path / format, tiny_config, "plan")
        assert planned.returncode == 0 and "stage encode" not in planned.stderr, planned.stderr
