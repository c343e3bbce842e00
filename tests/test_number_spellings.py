"""Numbers as written: a YAML manifest or pipeline config reads a whole number only from plain decimal digits (YAML 1.1
would read 010 as 8, 1:30 as 90) and a fraction only from digits with a point (YAML 1.1 would read 1_0.5 as 10.5),
CSV cells the same, text fields keep number-like text as written, and a refused WebP's size is given as its width
and height."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
import yaml
from PIL import Image

from batch_edit.errors import ConfigError, ManifestError
from batch_edit.manifest import load_manifest
from batch_edit.pipeline_config import dump_pipeline_config, load_pipeline_config
from batch_edit.source_decoding import SourceError, decode_image

from .conftest import PHOTOS, batch_edit, write_pipeline_config

CAT = (PHOTOS / "cat.jpg").as_posix()


def manifest(tmp_path: Path, job: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"jobs:\n  - {{name: j, sources: {CAT}, prompts: a, {job}}}\n")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    return str(refused.value)


@pytest.mark.parametrize(
    "written, problem",
    [
        ("010", "'010' has a leading zero, octal to YAML 1.1 readers (010 is 8)"),
        ("0100", "'0100' has a leading zero, octal to YAML 1.1 readers (0100 is 64)"),
        ("09", "'09' has a leading zero"),
        ("1:30", "'1:30' is base 60 to YAML 1.1 readers (1:30 is 90)"),
        ("0x10", "'0x10' is hexadecimal (0x10 is 16)"),
        ("0b11", "'0b11' is binary (0b11 is 3)"),
        ("+7", "'+7' has a '+' sign"),
        ("1_000", "'1_000' has '_' separators"),
    ],
)
def test_a_whole_number_in_another_spelling_is_refused_naming_file_job_and_field(tmp_path, written, problem):
    path = manifest(tmp_path, f"seed: [1, {written}]")
    expected = f"{path}: jobs[0] ('j'): field 'seed[1]': {problem}: write the number in plain decimal digits"
    assert refusal(path) == expected


def test_every_number_field_refuses_them_one_line_each(tmp_path):
    path = manifest(tmp_path, "width: 0100, num_inference_steps: +7, strength: 1:30.5, variations: 0x2")
    lines = refusal(path).splitlines()
    where = f"{path}: jobs[0] ('j'): field"
    assert sorted(lines) == sorted([
        (f"{where} 'width': '0100' has a leading zero, octal to YAML 1.1 readers (0100 is 64): write the number "
         "in plain decimal digits"),
        f"{where} 'num_inference_steps': '+7' has a '+' sign: write the number in plain decimal digits",
        f"{where} 'strength': '1:30.5' is base 60 to YAML 1.1 readers: write the number in plain decimal digits",
        f"{where} 'variations': '0x2' is hexadecimal (0x2 is 2): write the number in plain decimal digits",
    ])  # fmt: skip


def test_plain_numbers_fractions_and_booleans_read_as_before(tmp_path):
    path = manifest(tmp_path, "seed: [0, 42, 1000], strength: [0.5, .25, 1., 1, 0.125], guidance_scale: 3.5, "
                              "width: 64, keep_sources: yes")  # fmt: skip
    job = load_manifest(path).jobs[0]
    grid = job.grids[0]
    assert grid.seed == (0, 42, 1000) and grid.strength == (0.5, 0.25, 1.0, 1.0, 0.125)
    assert grid.guidance_scale == (3.5,) and grid.width == (64,) and job.keep_sources is True


FRACTIONS_REFUSED = [
    ("1_0.5", "'1_0.5' has '_' separators"),  # 10.5 to YAML 1.1, text to YAML 1.2
    ("0.5_0", "'0.5_0' has '_' separators"),
    ("+.5", "'+.5' has a '+' sign"),
    ("+0.25", "'+0.25' has a '+' sign"),
    ("1.0e-1", "'1.0e-1' has an exponent (1.0e-1 is 0.1)"),  # a float to YAML 1.1
    ("5e-1", "'5e-1' has an exponent (5e-1 is 0.5)"),  # text to YAML 1.1
    ("1:30.0", "'1:30.0' is base 60 to YAML 1.1 readers"),
    (".inf", "'.inf' is infinity"),
    (".nan", "'.nan' is NaN, not a number"),
]


@pytest.mark.parametrize("written, problem", FRACTIONS_REFUSED)
def test_a_fraction_in_another_spelling_is_refused_naming_file_job_and_field(tmp_path, written, problem):
    path = manifest(tmp_path, f"strength: [0.5, {written}]")
    expected = f"{path}: jobs[0] ('j'): field 'strength[1]': {problem}: write the number in plain decimal digits"
    assert refusal(path) == expected


def test_a_csv_cell_takes_the_same_fractions_as_yaml(tmp_path):
    rows = "".join(f"{CAT},a,{written}\n" for written, _ in FRACTIONS_REFUSED)
    path = tmp_path / "rows.csv"
    path.write_text(f"source,prompt,strength\n{rows}{CAT},a,nan\n{CAT},a,Infinity\n{CAT},a,half\n")
    lines = refusal(path).splitlines()
    where = [f"{path}: row {row} (line {row + 1}): field 'strength'" for row in range(1, len(FRACTIONS_REFUSED) + 4)]
    expected = [f"{at}: {problem}: write the number in plain decimal digits" for at, (_, problem) in
                zip(where, [*FRACTIONS_REFUSED, (0, "'nan' is NaN, not a number"), (0, "'Infinity' is infinity")])]  # fmt: skip
    assert lines == [*expected, f"{where[-1]}: input should be a number in decimal digits (got 'half')"]


def test_a_csv_reads_plain_fractions_and_decimal_commas(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text(f"source;prompt;strength;guidance_scale\n{CAT};a; .5 ;3\n{CAT};b;1.;0,5\n")
    grids = load_manifest(path).jobs[0].grids
    assert [(grid.strength, grid.guidance_scale) for grid in grids] == [((0.5,), (3.0,)), ((1.0,), (0.5,))]


def test_text_fields_keep_number_like_text_as_written(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(f"jobs:\n  - {{name: 007, sources: {CAT}, prompts: [010, 1:30, 0x10, 1_0.5, .inf, 1.0e-1]}}\n")
    job = load_manifest(path).jobs[0]
    assert job.name == "007" and job.grids[0].prompts == ("010", "1:30", "0x10", "1_0.5", ".inf", "1.0e-1")


def test_a_pipeline_config_reads_numbers_the_same_way(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, batch_size="010", prompt_cache="1_000")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    assert str(refused.value).splitlines() == [
        (
            f"{config}: field 'batch_size': '010' has a leading zero, octal to YAML 1.1 readers (010 is 8): write "
            "the number in plain decimal digits"
        ),
        f"{config}: field 'prompt_cache': '1_000' has '_' separators: write the number in plain decimal digits",
    ]
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, first_block_cache="0.1_0")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    assert str(refused.value) == (
        f"{config}: field 'first_block_cache': '0.1_0' has '_' separators: write the number in plain decimal digits"
    )
    hub = tmp_path / "hub.yaml"
    hub.write_text("model: black-forest-labs/FLUX.1-dev\nrevision: 0123456\n")  # a commit's digits, not octal
    assert load_pipeline_config(hub).revision == "0123456"


def test_a_config_a_run_keeps_reads_back_its_small_fractions(tmp_path, tiny_model):
    config = load_pipeline_config(write_pipeline_config(tmp_path / "p.yaml", tiny_model, first_block_cache="0.00001"))
    kept = tmp_path / "kept.yaml"
    kept.write_text(dump_pipeline_config(config))  # Python and PyYAML write 1e-05 as 1.0e-05
    assert "first_block_cache: 0.00001\n" in kept.read_text()
    assert load_pipeline_config(kept).first_block_cache == 0.00001


def test_plan_refuses_a_leading_zero_seed_with_exit_2(tmp_path, tiny_config):
    path = manifest(tmp_path, "seed: 010")
    planned = batch_edit("plan", str(path), "--pipeline", str(tiny_config), cwd=tmp_path)
    assert planned.returncode == 2, planned.stderr
    assert f"{path}: jobs[0] ('j'): field 'seed': '010' has a leading zero" in planned.stderr


def webp_with_canvas(width: int, height: int) -> bytes:
    """A small lossy WebP whose VP8X chunk declares a canvas of width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "WEBP")
    body = buffer.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x) + len(body)) + b"WEBP" + vp8x + body


def test_a_webp_over_the_pixel_limit_is_refused_with_its_width_and_height():
    with pytest.raises(SourceError) as refused:
        decode_image(webp_with_canvas(16384, 16384))
    assert str(refused.value) == (
        "too many pixels: 16384x16384 is 268 megapixels, over the 256-megapixel limit for a source"
    )
    assert refused.value.reason == "too many pixels"


@pytest.mark.parametrize("written", ["1e999999999", "-5e99999999999", "1.0e-999999999", "1e9999999999999999999999"])
def test_a_huge_exponent_is_refused_naming_the_field(tmp_path, written):
    path = manifest(tmp_path, f"strength: {written}")
    expected = f"{path}: jobs[0] ('j'): field 'strength': '{written}' has an exponent: write the number in plain "
    assert refusal(path) == expected + "decimal digits"


def test_a_huge_exponent_in_a_csv_cell_or_a_config_is_refused_with_exit_2(tmp_path, tiny_model, tiny_config):
    rows = tmp_path / "rows.csv"
    rows.write_text(f"source,prompt,strength\n{CAT},a,5e99999999999\n")
    planned = batch_edit("plan", str(rows), "--pipeline", str(tiny_config), cwd=tmp_path)
    assert planned.returncode == 2, planned.stderr
    assert planned.stderr == (
        f"error: {rows}: row 1 (line 2): field 'strength': '5e99999999999' has an exponent: write the number in "
        "plain decimal digits\n"
    )
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, first_block_cache="1e9999999")
    with pytest.raises(ConfigError) as refused:
        load_pipeline_config(config)
    assert str(refused.value) == (
        f"{config}: field 'first_block_cache': '1e9999999' has an exponent: write the number in plain decimal digits"
    )


SIGNED = {".5": 0.5, "-0.5": -0.5, "-3": -3.0, "-.5": -0.5}  # an optional minus, digits and at most one point


def test_fractions_with_a_minus_and_no_leading_digit_read_in_manifests_and_configs(tmp_path, tiny_model):
    (tmp_path / "l.safetensors").write_bytes(b"x")
    loras = ", ".join(f"{{path: l.safetensors, name: n{i}, scale: {written}}}" for i, written in enumerate(SIGNED))
    path = manifest(tmp_path, f"loras: [{loras}]")
    assert [lora.scale for lora in load_manifest(path).jobs[0].loras] == list(SIGNED.values())
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, loras=f"[{loras}]")
    assert [lora.scale for lora in load_pipeline_config(config).loras] == list(SIGNED.values())
    path = manifest(tmp_path, "strength: -.5")  # read as a number: the field's range refuses it
    assert refusal(path) == f"{path}: jobs[0] ('j'): field 'strength': input should be greater than 0 (got -0.5)"


def test_a_csv_cell_reads_the_same_signed_fractions(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("".join(f"{CAT},a,{written}\n" for written in SIGNED).join(["source,prompt,guidance_scale\n", ""]))
    # guidance_scale takes no negative value: the cells read as numbers, refused by the field's range
    lines = refusal(path).splitlines()
    assert len(lines) == 3 and all("input should be greater than or equal to 0" in line for line in lines)
    path.write_text(f"source,prompt,strength\n{CAT},a,.5\n")
    assert load_manifest(path).jobs[0].grids[0].strength == (0.5,)


def test_a_config_an_earlier_version_kept_reads_back_its_exponent_fractions(tmp_path, tiny_model):
    written = write_pipeline_config(tmp_path / "p.yaml", tiny_model, first_block_cache="0.00005")
    data = yaml.safe_load(dump_pipeline_config(load_pipeline_config(written)))
    data["loras"] = [{"path": str(tmp_path / "l.safetensors"), "scale": 1e-05}]
    (tmp_path / "l.safetensors").write_bytes(b"x")
    kept = tmp_path / "out" / "j" / ".batch-edit" / "pipelines" / "abc.yaml"
    kept.parent.mkdir(parents=True)
    kept.write_text(yaml.safe_dump(data, sort_keys=False))  # as earlier versions kept it
    assert "first_block_cache: 5.0e-05\n" in kept.read_text() and "scale: 1.0e-05\n" in kept.read_text()
    config = load_pipeline_config(kept)  # found in a job folder's kept configs
    assert config.first_block_cache == 0.00005 and config.loras[0].scale == 0.00001
    by_hand = tmp_path / "by-hand.yaml"
    by_hand.write_text(kept.read_text())
    assert load_pipeline_config(by_hand, recorded=True).first_block_cache == 0.00005  # reproduce's kept config
    with pytest.raises(ConfigError) as refused:  # a config written by hand keeps to plain digits
        load_pipeline_config(by_hand)
    assert "field 'first_block_cache': '5.0e-05' has an exponent (5.0e-05 is 0.00005)" in str(refused.value)
