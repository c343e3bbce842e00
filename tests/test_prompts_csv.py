"""Prompts longer than T5 reads, CSV files as Excel saves them (encodings, `sep=`), and sources that moved."""

from __future__ import annotations

import codecs
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from batch_edit.manifest import load_manifest
from batch_edit.pipeline_config import PipelineConfig
from batch_edit.plan import JobPlan, plan_jobs
from batch_edit.prompt_tokens import MOST_LISTED, LongPrompts, planned_long_prompts

from .conftest import PHOTOS, batch_edit, refusal, write_pipeline_config


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photos" / "cat.jpg")
    return tmp_path


def rows(path: Path) -> list[tuple[str, str, int | None]]:
    return [
        (Path(g.sources[0].key).name, g.prompts[0], g.seed[0]) for job in load_manifest(path).jobs for g in job.grids
    ]


# ---------------------------------------------------------------- CSV encodings and Excel's sep= line


def test_a_cp1252_csv_is_refused_at_its_line_and_column_saying_how_to_save_it(folder):
    path = folder / "excel.csv"
    path.write_bytes("source,prompt,seed\nphotos/cat.jpg,café crème,1\n".encode("cp1252"))
    message = refusal(path)
    assert message.startswith(f"{path}: line 2, column 19: not UTF-8 text (byte 0xe9, 'é' in Windows-1252")
    assert '"CSV UTF-8"' in message and "\n" not in message


def test_the_line_of_a_bad_byte_counts_crlf_and_cr_line_ends_once(folder):
    path = folder / "excel.csv"
    path.write_bytes(b"source,prompt\r\nphotos/cat.jpg,a\r\rphotos/cat.jpg,\x81b\r\n")
    assert "line 4, column 16: not UTF-8 text (byte 0x81); save the file as" in refusal(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_its_byte_order_mark_is_read(folder, codec):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-delimited."""
    path = folder / "unicode.txt.csv"
    bom = codecs.BOM_UTF16_LE if codec == "utf-16-le" else codecs.BOM_UTF16_BE
    path.write_bytes(bom + "source\tprompt\tseed\r\nphotos/cat.jpg\tcafé crème\t1\r\n".encode(codec))
    assert rows(path) == [("cat.jpg", "café crème", 1)]


def test_utf16_without_a_byte_order_mark_is_refused_at_the_first_nul(folder):
    path = folder / "unicode.csv"
    path.write_bytes("source,prompt\n".encode("utf-16-le"))
    assert refusal(path).startswith(f"{path}: the file looks like UTF-16 (little-endian) text without a byte-order")


def test_utf8_with_a_byte_order_mark_is_read(folder):
    path = folder / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + "source,prompt\nphotos/cat.jpg,café\n".encode())
    assert rows(path) == [("cat.jpg", "café", None)]


@pytest.mark.parametrize("sep_line", ["sep=;", "SEP=;", '"sep=;"', '"sep=;";;', "sep=; "])
def test_excels_sep_line_sets_the_delimiter_and_is_not_the_header(folder, sep_line):
    path = folder / "sep.csv"
    path.write_text(f"{sep_line}\nsource;prompt;seed\nphotos/cat.jpg;a tiger, watercolor;1\n")
    assert rows(path) == [("cat.jpg", "a tiger, watercolor", 1)]


def test_the_sep_line_keeps_the_files_line_numbers(folder):
    path = folder / "sep.csv"
    path.write_text("sep=,\nsource,prompt,strength\nphotos/cat.jpg,a tiger,2\n")
    assert "row 1 (line 3)" in refusal(path)


def test_a_sep_line_naming_another_delimiter_is_refused(folder):
    path = folder / "sep.csv"
    path.write_text("sep=|\nsource|prompt\nphotos/cat.jpg|a tiger\n")
    assert refusal(path) == (
        f"{path}: line 1: 'sep=' declares the delimiter '|'; only comma, semicolon and tab are read"
    )


# ---------------------------------------------------------------- prompts longer than T5 reads

SHORT = "a cat"
# The tiny model's T5 tokenizer makes a token of about every character: far over a limit of 16.
LONG_A = "a tiger with stripes, in the snow, at dusk, version one"
LONG_B = "a tiger with stripes, in the snow, at dusk, version two"


def long_prompt_run(folder: Path, tiny_model: Path, command: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    config = write_pipeline_config(folder / "t5-16.yaml", tiny_model, max_sequence_length=16)
    manifest = folder / "long.yaml"
    manifest.write_text(
        "jobs:\n  - {name: long, sources: photos/cat.jpg, width: 16, height: 16, num_inference_steps: 2,\n"
        f"     strength: 0.5, seed: [1, 2], prompts: ['{SHORT}', '{LONG_A}', '{LONG_B}']}}\n"
    )
    result = batch_edit(command, str(manifest), "--pipeline", str(config), "--output-root", str(folder / "out"))
    assert result.returncode == 0, result.stderr
    return result, [line for line in result.stderr.splitlines() if "T5 tokens" in line]


def tokens_in(line: str) -> int:
    return int(re.search(r"has ([0-9,]+) T5 tokens", line).group(1).replace(",", ""))


def test_run_warns_once_per_prompt_that_t5_reads_only_in_part(folder, tiny_model):
    _, warnings = long_prompt_run(folder, tiny_model, "run")
    assert len(warnings) == 2  # each long prompt once, though two items (seeds) use it; the short one not at all
    for warning, prompt in zip(warnings, (LONG_A, LONG_B)):
        assert warning.startswith(
            f"WARNING job long: prompt '{prompt[:30]} … {prompt[-20:]} ({len(prompt)} characters)' has "
        )
        assert tokens_in(warning) > 16
        assert (
            "the pipeline reads the first 16 (max_sequence_length; CLIP reads 77): the rest of the prompt is "
            in warning
        )


def test_plan_counts_the_same_tokens_with_the_models_tokenizer_and_no_weights(folder, tiny_model):
    _, warnings = long_prompt_run(folder, tiny_model, "plan")
    assert [line.split("'")[1] for line in warnings] == [
        f"{p[:30]} … {p[-20:]} ({len(p)} characters)" for p in (LONG_A, LONG_B)
    ]
    assert all(line.startswith("warning: job long: prompt ") for line in warnings)
    _, ran = long_prompt_run(folder, tiny_model, "run")
    assert list(map(tokens_in, warnings)) == list(map(tokens_in, ran))  # the run's pipeline counts the same


def test_past_ten_long_prompts_one_line_says_more_are_not_listed():
    long_prompts = LongPrompts(len, limit=3)
    uses = [("j", f"prompt {n}") for n in range(MOST_LISTED + 5)] + [("j", "abc")]
    warnings = long_prompts.warnings(uses)
    assert len(warnings) == MOST_LISTED + 1
    assert warnings[-1] == "job j: more prompts are over 3 T5 tokens (not listed one by one)"
    assert long_prompts.warnings(uses) == []  # each prompt is checked once


def test_plan_reads_a_hub_models_tokenizer_from_the_cache_and_skips_one_not_there(tmp_path, tiny_model, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--example--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model / "tokenizer_2", snapshot / "tokenizer_2")
    (tmp_path / "hub" / "models--example--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--example--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    plans = [_one_item_plan(LONG_A)]
    cached = PipelineConfig.model_validate({"model": "example/tiny", "max_sequence_length": 16})
    assert planned_long_prompts(cached, plans)[0].startswith("job j: prompt 'a tiger with")
    assert planned_long_prompts(cached.model_copy(update={"model": "example/elsewhere"}), plans) == []


def _one_item_plan(prompt: str) -> JobPlan:
    from batch_edit.manifest import Grid, JobSpec
    from batch_edit.sources import SourceRef

    ref = SourceRef(key="/data/cat.jpg", is_url=False, stem="cat", fingerprint="", caption=None)
    grid = Grid(sources=(ref,), prompts=(prompt,), strength=(0.5,), num_inference_steps=(4,), guidance_scale=(3.5,),
                seed=(1,), width=(16,), height=(16,), resize=("center-crop",))  # fmt: skip
    return plan_jobs([JobSpec(name="j", origin="test", grids=(grid,))], {"model": "m"})[0]


# ---------------------------------------------------------------- sources that moved


def test_plan_and_run_say_that_results_of_moved_sources_run_again(tmp_path, tiny_config):
    project = tmp_path / "project"
    (project / "photos").mkdir(parents=True)
    for name in ("cat.jpg", "coffee.jpg"):
        shutil.copy(PHOTOS / name, project / "photos" / name)
    (project / "m.yaml").write_text(
        "output_root: out\njobs:\n  - {name: j, sources: photos/, prompts: a tiger, width: 16, height: 16,\n"
        "     num_inference_steps: 2, strength: 0.5, seed: 7}\n"
    )
    assert batch_edit("run", str(project / "m.yaml"), "--pipeline", str(tiny_config)).returncode == 0
    moved = project.rename(tmp_path / "moved")
    planned = batch_edit("plan", str(moved / "m.yaml"), "--pipeline", str(tiny_config))
    note = (
        f"2 item(s) to run were made before from the same images at another path (e.g. {project}/photos/cat.jpg): "
        "items are identified by their source's path too, so they will run again (`prune` then moves the old "
        "results out)"
    )
    assert f"job j: 2 item(s), 0 already done -> {moved}/out/j\n  note: {note}\n" in planned.stdout
    ran = batch_edit("run", str(moved / "m.yaml"), "--pipeline", str(tiny_config))
    assert ran.returncode == 0 and f"note: job j: {note}\n" in ran.stderr
    again = batch_edit("plan", str(moved / "m.yaml"), "--pipeline", str(tiny_config))
    assert "2 already done" in again.stdout and "made before" not in again.stdout  # the items ran again
    # what is left to say: the old path's results stay until `prune` moves them out
    assert "note: 2 result(s) of items the plan no longer has stay as they are" in again.stdout, again.stdout


def test_no_moved_sources_note_for_urls_or_for_the_same_content_at_two_planned_paths():
    from dataclasses import replace

    from batch_edit.result_files import item_fields
    from batch_edit.source_identity import moved_sources_note

    item = _one_item_plan(SHORT).items[0]
    other = {**item_fields(item), "status": "ok", "source": "/elsewhere/cat.jpg"}
    url = replace(item, source=replace(item.source, key="https://example.com/cat.jpg", is_url=True))
    assert moved_sources_note([url], {"x": {**other, "source_sha256": ""}}) is None  # nothing known of a URL
    sha = "a" * 64
    local = replace(item, source=replace(item.source, fingerprint=sha))
    assert moved_sources_note([local], {"x": {**other, "source_sha256": sha}}).startswith("1 item(s) to run were")
    # another prompt, or another strength, of the same image is a new item, not a moved one
    assert moved_sources_note([local], {"x": {**other, "source_sha256": sha, "prompt": "other"}}) is None
    assert moved_sources_note([local], {"x": {**other, "source_sha256": sha, "strength": 0.25}}) is None
    # made with another pipeline config: not the same item at another path
    made = {"x": {**other, "source_sha256": sha, "pipeline_config": "a" * 16}}
    assert moved_sources_note([local], made, "b" * 16) is None and moved_sources_note([local], made, "a" * 16)
    twin = replace(item, source=replace(item.source, key="/elsewhere/cat.jpg", fingerprint=sha))
    assert moved_sources_note([local, twin], {"x": {**other, "source_sha256": sha}}) is None  # both still planned
