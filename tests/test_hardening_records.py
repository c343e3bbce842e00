"""The job folder is the runner's to write, never through a link; its records are validated, name the exact
pipeline config and the source's content; refused runs leave nothing; CSVs and sheets say the latest truth."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from batch_edit import outputs, source_identity
from batch_edit.engine import Engine
from batch_edit.errors import OutputError, UnsafeOutputError
from batch_edit.outputs import STATE_DIR, JobOutput
from batch_edit.pipeline_config import PipelineConfig, QuantizationConfig
from batch_edit.plan import make_item
from batch_edit.planning import prepare
from batch_edit.result_files import Failure
from batch_edit.runner import RunOptions, run
from batch_edit.source_decoding import SourceError
from batch_edit.sources import SourceRef, load_image

from .conftest import PHOTOS, _command, batch_edit, write_pipeline_config

JOB = "job"


def manifest(tmp_path: Path, source: Path, prompts=("a tiger",), name: str = JOB, steps: int = 2) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"jobs:\n  - name: {name}\n    sources: {json.dumps(str(source))}\n    prompts: {json.dumps(list(prompts))}\n"
        f"    strength: 1.0\n    num_inference_steps: {steps}\n    seed: 1\n    width: 16\n    height: 16\n"
    )
    return path


def run_cli(tmp_path: Path, manifest_path: Path, config: Path, *extra: str):
    arguments = ("run", str(manifest_path), "--pipeline", str(config), "--output-root", "out", *extra)
    return batch_edit(*arguments, cwd=tmp_path)


def plan_cli(tmp_path: Path, manifest_path: Path, config: Path):
    return batch_edit("plan", str(manifest_path), "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)


def rows(folder: Path, name: str = "metadata.csv") -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def one_line_error(result) -> None:
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- links are never followed


@pytest.mark.parametrize(
    "entry, is_folder",
    [
        (".batch-edit", True),
        (".batch-edit/records.jsonl", False),
        (".batch-edit/owner", False),
        (".batch-edit/lock", False),
        (".batch-edit/pipeline.yaml", False),
        (".batch-edit/pipelines", True),
        (".batch-edit/pipelines/0123456789abcdef.yaml", False),
        ("sources", True),
        ("metadata.csv", False),
        ("failures.csv", False),
        ("contact-sheet-cat.png", False),
    ],
)
def test_a_linked_state_file_or_folder_is_refused_before_anything_runs(tmp_path, tiny_config, entry, is_folder):
    folder = tmp_path / "out" / JOB
    (folder / STATE_DIR).mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    if is_folder:
        outside.mkdir()
        (outside / ".keep.tmp").write_text("precious")
    else:
        outside.write_text("precious")
    link = folder / entry
    if link.is_dir():
        link.rmdir()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    for result in (plan_cli(tmp_path, job, tiny_config), run_cli(tmp_path, job, tiny_config)):
        assert result.returncode == 2, result.stdout + result.stderr
        one_line_error(result)
        assert str(link) in result.stderr and "symbolic link" in result.stderr
    if is_folder:
        assert [p.name for p in outside.iterdir()] == [".keep.tmp"]  # nothing written in, nothing swept
    else:
        assert outside.read_text() == "precious"
    assert link.is_symlink()


def test_a_job_folder_that_is_a_link_to_another_job_folder_is_refused(tmp_path, tiny_config):
    (tmp_path / "out" / "other").mkdir(parents=True)
    (tmp_path / "out" / JOB).symlink_to(tmp_path / "out" / "other")
    result = run_cli(tmp_path, manifest(tmp_path, PHOTOS / "cat.jpg"), tiny_config)
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert list((tmp_path / "out" / "other").iterdir()) == []


def test_records_that_are_a_folder_or_a_fifo_are_refused(tmp_path, tiny_config):
    records = tmp_path / "out" / JOB / STATE_DIR / "records.jsonl"
    records.mkdir(parents=True)
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    for result in (plan_cli(tmp_path, job, tiny_config), run_cli(tmp_path, job, tiny_config)):
        assert result.returncode == 2 and str(records) in result.stderr and "a folder" in result.stderr
        one_line_error(result)
    records.rmdir()
    os.mkfifo(records)  # reading a FIFO would block forever
    result = plan_cli(tmp_path, job, tiny_config)
    assert result.returncode == 2 and str(records) in result.stderr


def make(prompt: str = "a cat", source_key: str = "/photos/photo.jpg", fingerprint: str = "") -> object:
    ref = SourceRef(key=source_key, is_url=False, stem="photo", fingerprint=fingerprint, caption=None)
    params = dict(strength=0.8, num_inference_steps=4, guidance_scale=3.5, seed=7, width=16, height=16, resize="pad")
    return make_item(JOB, ref, prompt, params, "{}")


def test_a_link_planted_at_a_temporary_or_image_name_is_never_written_through(tmp_path):
    output = JobOutput(tmp_path / "out", JOB)
    output.open("model: m\n")
    target = tmp_path / "target"
    target.write_text("precious")
    item = make()
    temporary = output.folder / f".{item.output_name}.{os.getpid()}.tmp"
    temporary.symlink_to(target)
    with pytest.raises(OutputError):
        output.write_image(item, Image.new("RGB", (16, 16)), {})
    assert target.read_text() == "precious"
    temporary.unlink(missing_ok=True)  # the failed write may clear its own temporary name: the link, not its target

    (output.folder / item.output_name).symlink_to(target)  # an image replaced by a link is not "done"
    assert output.done_ids() == set()
    output.write_image(item, Image.new("RGB", (16, 16)), {})
    assert target.read_text() == "precious" and not (output.folder / item.output_name).is_symlink()
    assert output.done_ids() == {item.item_id}
    output.close()


def test_the_stale_temporary_sweep_never_enters_a_linked_sources_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".mine.png.1.tmp").write_text("precious")
    folder = tmp_path / "out" / JOB
    folder.mkdir(parents=True)
    (folder / "sources").symlink_to(outside)
    with pytest.raises(UnsafeOutputError, match="sources"):
        JobOutput(tmp_path / "out", JOB).lock()
    assert (outside / ".mine.png.1.tmp").read_text() == "precious"


# --------------------------------------------------------------------------- records are validated


def test_records_of_the_wrong_shape_or_naming_files_elsewhere_are_ignored(tmp_path, tiny_config):
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    output = JobOutput(tmp_path / "out", JOB)
    output.open("model: m\n")
    output.close()
    escaped = tmp_path / "escaped.png"
    escaped.write_bytes(b"x" * 10)
    (output.folder / "ok.png").write_bytes(b"x" * 10)
    good = {"item_id": "good", "status": "ok", "file_name": "ok.png", "bytes": 10, "seconds": 1.0, "source": "s"}
    bad = [
        [1, 2],
        5,
        "text",
        None,
        {"status": "ok", "file_name": "ok.png", "bytes": 10},
        {"item_id": 3, "status": "ok", "file_name": "ok.png", "bytes": 10},
        {**good, "item_id": "a", "file_name": None},
        {**good, "item_id": "b", "file_name": "../../escaped.png"},
        {**good, "item_id": "c", "file_name": str(escaped)},
        {**good, "item_id": "d", "file_name": "sub/ok.png"},
        {**good, "item_id": "e", "file_name": "ok\\..\\x.png"},
        {**good, "item_id": "f", "file_name": "ok.png\x00"},
        {**good, "item_id": "g", "file_name": ".."},
        {**good, "item_id": "h", "bytes": "10"},
        {**good, "item_id": "i", "seconds": "slow"},
        {**good, "item_id": "j", "status": "maybe"},
        {**good, "item_id": "k", "source_image_file_name": "../x.png"},
    ]
    lines = [json.dumps(record) for record in [*bad, good]]
    output.records_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    reader = JobOutput(tmp_path / "out", JOB)
    assert list(reader.read_records()) == ["good"] and reader.invalid_lines == len(bad)
    assert reader.done_ids() == {"good"}
    reader.rebuild_csvs()
    assert list(rows(reader.folder)["file_name"]) == ["ok.png"]
    assert [record["seconds"] for record in reader.timed_records({})] == [1.0]

    planned = plan_cli(tmp_path, job, tiny_config)
    assert planned.returncode == 0, planned.stderr
    assert f"{len(bad)} invalid record line(s) ignored" in planned.stdout


def test_reproduce_refuses_a_row_naming_a_file_outside_the_job_folder(tmp_path):
    folder = tmp_path / "out" / JOB
    folder.mkdir(parents=True)
    (tmp_path / "x.png").write_bytes(b"not yours")
    pd.DataFrame([{"file_name": "../../x.png", "item_id": "abc"}]).to_csv(folder / "metadata.csv", index=False)
    result = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", "abc")
    assert result.returncode == 2 and "not a file of the job folder" in result.stderr
    one_line_error(result)


# --------------------------------------------------------------------------- output problems are one line


def test_an_output_root_that_is_a_file_is_refused_in_one_line(tmp_path, tiny_config):
    (tmp_path / "out").write_text("a file")
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    for result in (plan_cli(tmp_path, job, tiny_config), run_cli(tmp_path, job, tiny_config)):
        assert result.returncode == 2, result.stdout + result.stderr
        one_line_error(result)
        assert str(tmp_path / "out") in result.stderr
    assert (tmp_path / "out").read_text() == "a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_an_unreadable_job_folder_is_refused_in_one_line(tmp_path, tiny_config):
    folder = tmp_path / "out" / JOB
    (folder / STATE_DIR).mkdir(parents=True)
    (folder / STATE_DIR / "records.jsonl").write_text("")
    folder.chmod(0)
    try:
        job = manifest(tmp_path, PHOTOS / "cat.jpg")
        for result in (plan_cli(tmp_path, job, tiny_config), run_cli(tmp_path, job, tiny_config)):
            assert result.returncode == 2 and str(folder) in result.stderr
            one_line_error(result)
    finally:
        folder.chmod(0o755)


def without_write_permission(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`batch-edit ARGS` as a user whom file modes bind: root as ever, less the capabilities that override them."""
    if os.geteuid() != 0:
        return batch_edit(*args, cwd=tmp_path)
    if shutil.which("setpriv") is None:
        pytest.skip("root writes to read-only folders, and setpriv is not here to drop that")
    command, env = _command(args)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_job_folder_that_takes_no_new_file_is_refused_before_the_model_loads(tmp_path, tiny_config):
    """Its `.batch-edit/` (the lock, the records) writable, the folder itself not: found before the load, not at
    the first result; nothing there changes, and the same command runs once the folder is writable."""
    folder = tmp_path / "out" / JOB
    assert run_cli(tmp_path, manifest(tmp_path, PHOTOS / "cat.jpg"), tiny_config).returncode == 0
    job = manifest(tmp_path, PHOTOS / "cat.jpg", prompts=("a tiger", "a lion"))
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    folder.chmod(0o555)
    try:
        args = ("run", str(job), "--pipeline", str(tiny_config), "--output-root", "out")
        result = without_write_permission(tmp_path, *args)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == f"error: cannot write to the output folder {folder}: Permission denied"
    assert "loading" not in result.stderr
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before
    again = run_cli(tmp_path, job, tiny_config)
    assert again.returncode == 0 and "1 written, 1 already done" in again.stdout, again.stdout + again.stderr


def test_an_output_problem_after_the_model_loaded_stops_the_run_not_refuses_it(tmp_path, tiny_config):
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    args = SimpleNamespace(manifests=[job], pipeline=tiny_config, output_root=tmp_path / "out")
    config, root, plans, _ = prepare(args, for_run=True)
    records = root / JOB / STATE_DIR / "records.jsonl"

    def load_then_break_the_folder(config):
        engine = Engine.load(config)
        records.mkdir(parents=True)  # something takes the record's place while the model loads
        return engine

    stopped = run(plans, config, root, load_then_break_the_folder)  # a stop with its summary (exit 3), no refusal
    assert stopped.error is not None and str(root / JOB) in stopped.error
    assert stopped.jobs[0].not_run == 1


# --------------------------------------------------------------------------- file descriptors


@pytest.mark.slow
def test_a_hundred_one_item_jobs_run_under_a_soft_limit_of_64_open_files(tmp_path, tiny_model):
    config = write_pipeline_config(tmp_path / "p.yaml", tiny_model, **{"quantization": "{backend: none}"})
    jobs = "".join(
        f"  - name: j{n:03d}\n    sources: {PHOTOS / 'cat.jpg'}\n    prompts: p\n    strength: 1.0\n"
        f"    num_inference_steps: 1\n    seed: {n}\n    width: 16\n    height: 16\n"
        for n in range(100)
    )
    (tmp_path / "many.yaml").write_text("jobs:\n" + jobs)

    def low_soft_limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    from .conftest import _command

    command, env = _command(("run", "many.yaml", "--pipeline", str(config), "--output-root", "out"))
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, preexec_fn=low_soft_limit
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = [len(rows(folder)) for folder in sorted((tmp_path / "out").iterdir())]
    assert written == [1] * 100


# --------------------------------------------------------------------------- each record names its config


def test_reproduce_uses_the_config_each_record_was_made_with(tmp_path, tiny_model, tiny_config):
    plain = write_pipeline_config(tmp_path / "plain.yaml", tiny_model, **{"quantization": "{backend: none}"})
    first = run_cli(tmp_path, manifest(tmp_path, PHOTOS / "cat.jpg", ["first"]), tiny_config)
    assert first.returncode == 0, first.stderr
    second = run_cli(tmp_path, manifest(tmp_path, PHOTOS / "cat.jpg", ["second"]), plain)
    assert second.returncode == 0, second.stderr
    folder = tmp_path / "out" / JOB
    table = rows(folder)
    assert len(set(table["pipeline_config"])) == 2
    for config in table["pipeline_config"]:
        assert (folder / STATE_DIR / "pipelines" / f"{config}.yaml").is_file()
    for item_id in table["item_id"]:
        again = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", item_id)
        assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr


# --------------------------------------------------------------------------- refused runs write nothing


def broken_model(tmp_path: Path) -> Path:
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "model_index.json").write_text("{not json")
    return write_pipeline_config(tmp_path / "broken.yaml", model)


def test_a_run_refused_at_model_load_writes_nothing(tmp_path):
    config = broken_model(tmp_path)
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    result = run_cli(tmp_path, job, config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not (tmp_path / "out").exists()

    folder = tmp_path / "out" / JOB  # a folder the user made: it stays, with nothing added
    folder.mkdir(parents=True)
    assert run_cli(tmp_path, job, config).returncode == 2
    assert list(folder.iterdir()) == []

    state = folder / STATE_DIR  # a folder of earlier runs: their configs and records are untouched
    (state / "pipelines").mkdir(parents=True)
    (state / "pipeline.yaml").write_text("model: earlier\n")
    (state / "pipelines" / "0123456789abcdef.yaml").write_text("model: earlier\n")
    (state / "records.jsonl").write_text("")

    def contents() -> dict:  # the lock's own files aside
        files = [p for p in folder.rglob("*") if p.is_file() and p.name not in ("owner", "lock")]
        return {p.relative_to(folder): p.read_bytes() for p in files}

    before = contents()
    assert run_cli(tmp_path, job, config).returncode == 2
    assert contents() == before


# --------------------------------------------------------------------------- ids name the recipe used


def test_auto_choices_are_resolved_from_the_device_before_ids_are_made(monkeypatch):
    auto = PipelineConfig(device="cuda", quantization=QuantizationConfig(backend="torchao"))
    assert auto.with_device_choices(True).quantization.torchao_type == "float8_dynamic_row"
    assert auto.with_device_choices(False).quantization.torchao_type == "int8_weight_only"
    assert auto.with_device_choices(True).identity() != auto.with_device_choices(False).identity()

    import torch

    from batch_edit import backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for capability, fp8 in [((9, 0), True), ((8, 9), True), ((8, 6), False)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert backends.fp8_capable("cuda") is fp8
    assert backends.fp8_capable("cpu") is False


def test_plan_and_run_plan_with_the_resolved_recipe_on_the_cpu(tmp_path, tiny_model):
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    auto = write_pipeline_config(tmp_path / "auto.yaml", tiny_model, quantization="{backend: torchao}")
    explicit = write_pipeline_config(
        tmp_path / "int8.yaml", tiny_model, quantization="{backend: torchao, torchao_type: int8_weight_only}"
    )

    def planned(config: Path, for_run: bool):
        args = SimpleNamespace(manifests=[job], pipeline=config, output_root=tmp_path / "out")
        config, _, plans, _ = prepare(args, for_run=for_run)
        return config.identity(), [item.item_id for item in plans[0].items]

    assert planned(auto, False) == planned(auto, True) == planned(explicit, True)
    assert planned(auto, True)[0]["quantization"] == "torchao(transformer=int8_weight_only)"
    shown = plan_cli(tmp_path, job, auto)
    assert "int8_weight_only" in shown.stdout, shown.stdout + shown.stderr


def test_without_the_gpu_it_names_plan_says_so_and_run_refuses(tmp_path, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    config = write_pipeline_config(tmp_path / "gpu.yaml", tiny_model, device="cuda", quantization="{backend: torchao}")
    shown = plan_cli(tmp_path, job, config)
    assert shown.returncode == 0 and "torchao_type auto stays unresolved" in shown.stderr, shown.stderr
    refused = run_cli(tmp_path, job, config)
    assert refused.returncode == 2 and "no CUDA GPU is visible" in refused.stderr and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- source identity by content


def test_touching_a_source_redoes_nothing_and_changed_content_supersedes_the_old_row(
    tmp_path, tiny_config, monkeypatch
):
    source = tmp_path / "photo.jpg"
    shutil.copy(PHOTOS / "cat.jpg", source)
    job = manifest(tmp_path, source)
    assert run_cli(tmp_path, job, tiny_config).returncode == 0
    folder = tmp_path / "out" / JOB
    (first,) = rows(folder).to_dict("records")

    hashed = []
    monkeypatch.setattr(source_identity, "file_identity", lambda path: hashed.append(path) or ("", ""))
    assert plan_cli(tmp_path, job, tiny_config).returncode == 0
    assert hashed == []  # path and stat as recorded: the recorded hash is reused, the file not read
    monkeypatch.undo()

    os.utime(source, ns=(1, 1))  # same bytes, another mtime: hashed again, same id
    again = run_cli(tmp_path, job, tiny_config)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
    assert list(rows(folder)["item_id"]) == [first["item_id"]]

    shutil.copy(PHOTOS / "coffee.jpg", source)  # new content under the same name
    changed = run_cli(tmp_path, job, tiny_config)
    assert changed.returncode == 0 and "1 written" in changed.stdout, changed.stdout
    (latest,) = rows(folder).to_dict("records")
    assert latest["item_id"] != first["item_id"] and (folder / first["file_name"]).is_file()
    record = JobOutput(tmp_path / "out", JOB).read_records()[latest["item_id"]]
    assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["source_stat"] == f"{source.stat().st_size}-{source.stat().st_mtime_ns}"


def test_a_source_changed_after_planning_fails_instead_of_hiding_under_the_old_id(tmp_path, tiny_config):
    source = tmp_path / "photo.jpg"
    shutil.copy(PHOTOS / "cat.jpg", source)
    args = SimpleNamespace(manifests=[manifest(tmp_path, source)], pipeline=tiny_config, output_root=tmp_path / "out")
    config, root, plans, _ = prepare(args, for_run=True)
    shutil.copy(PHOTOS / "coffee.jpg", source)
    result = run(plans, config, root, Engine.load, RunOptions())
    assert (result.jobs[0].done, result.jobs[0].failed) == (0, 1)
    (failure,) = rows(root / JOB, "failures.csv").to_dict("records")
    assert failure["error"] == (
        "source changed since the run was planned: the next plan reads it again, so a re-run makes its items from "
        "the new content"
    )
    assert rows(root / JOB).empty

    ref = plans[0].items[0].source
    with pytest.raises(SourceError, match="source changed"):
        load_image(ref)


# --------------------------------------------------------------------------- failures.csv: latest outcomes only


def test_a_failure_is_no_longer_listed_once_the_item_succeeded(tmp_path, tiny_config):
    source = tmp_path / "late.jpg"  # unreadable at first: the item fails; then it is a photo and succeeds
    source.write_bytes(b"not an image yet")  # (a run whose every source is missing is refused, not failed)
    job = manifest(tmp_path, source)
    assert run_cli(tmp_path, job, tiny_config).returncode == 1
    folder = tmp_path / "out" / JOB
    assert len(rows(folder, "failures.csv")) == 1
    shutil.copy(PHOTOS / "cat.jpg", source)
    assert run_cli(tmp_path, job, tiny_config).returncode == 0
    assert rows(folder, "failures.csv").empty and len(rows(folder)) == 1


# --------------------------------------------------------------------------- contact sheets finished later


def test_a_run_killed_while_writing_contact_sheets_is_finished_by_the_next(tmp_path, tiny_config, monkeypatch):
    def killed(folder, **_):  # stopped=: a stop cutting the drawing short
        (Path(folder) / ".contact-sheet-cat.png.99999.tmp").write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_contact_sheets", killed)
    job = manifest(tmp_path, PHOTOS / "cat.jpg")
    run_cli(tmp_path, job, tiny_config)
    folder = tmp_path / "out" / JOB
    assert len(rows(folder)) == 1 and not list(folder.glob("contact-sheet-*.png"))
    monkeypatch.undo()

    again = run_cli(tmp_path, job, tiny_config)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert [p.name for p in folder.glob("contact-sheet-*.png")] == ["contact-sheet-cat.png"]
    assert not list(folder.glob(".*.tmp"))


# --------------------------------------------------------------------------- PNG text and summaries


def test_prompt_text_cannot_forge_the_automatic1111_fields(tmp_path):
    sd_parsers = pytest.importorskip("sd_parsers")
    prompt = "a cat\nNegative prompt: blurry\nSteps: 99, Sampler: Forged, CFG scale: 1, Seed: 5, Size: 8x8"
    output = JobOutput(tmp_path, JOB)
    output.open("model: m\n")
    item = make(prompt)
    output.write_image(item, Image.new("RGB", (16, 16)), {"model": "m"})
    output.close()
    with Image.open(output.folder / item.output_name) as image:
        info = sd_parsers.ParserManager().parse(image)
        assert json.loads(image.text["batch-edit"])["prompt"] == prompt  # the exact prompt
    (sampler,) = info.samplers
    shown = "a cat Negative prompt : blurry Steps: 99, Sampler: Forged, CFG scale: 1, Seed: 5, Size: 8x8"
    assert [p.value for p in sampler.prompts] == [shown]
    assert not sampler.negative_prompts
    assert sampler.parameters["seed"] == "7" and sampler.parameters["steps"] == "4"
    assert sampler.name != "Forged"


def failure_reason(error: BaseException) -> str:
    return Failure.of("load", error).reason


def test_error_summaries_keep_the_whole_reason():
    assert failure_reason(SourceError("private address ::ffff:127.0.0.1 refused")) == (
        "private address ::ffff:127.0.0.1 refused"
    )
    assert failure_reason(ValueError("first: line\nsecond")) == "first: line"
    assert failure_reason(ValueError("")) == "ValueError"
    long = failure_reason(ValueError("x" * 500))
    assert len(long) == 100 and long.endswith("...")
