"""What a new user expects from sweeps, plans, job folders and the smaller commands: seeds shared across a sweep,
variations, honest plans, --limit, manifest order, file-name templates, clean refusals and interruptions."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path
from time import sleep  # bound here: a test may replace time.sleep while a background run polls

import pandas as pd
import pytest
from filelock import FileLock
from PIL import Image

from batch_edit import cli
from batch_edit.errors import ManifestError
from batch_edit.manifest import load_manifests
from batch_edit.plan import derive_seed, plan_jobs

from .conftest import PHOTOS, batch_edit, write_pipeline_config

PIPELINE = {"model": "m"}
SMALL = "num_inference_steps: 2, width: 32, height: 32"  # the cheapest items the tiny model makes (flow style)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def planned(tmp_path, text, name="m.yaml"):
    manifest = write(tmp_path / name, text)
    return plan_jobs(list(load_manifests([manifest])[0].jobs), PIPELINE)


def refusal(tmp_path, text, name="m.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        planned(tmp_path, text, name)
    return str(info.value)


@pytest.fixture
def photos(tmp_path):
    shutil.copytree(PHOTOS, tmp_path / "photos")
    return tmp_path


def run(tmp_path, *args):
    return batch_edit(*args, "--output-root", str(tmp_path / "out"), cwd=tmp_path)


# --- seeds and variations ----------------------------------------------------------------------------------


def test_a_sweep_without_seed_keeps_the_noise_of_each_source_and_prompt(photos):
    (job,) = planned(photos, """
        jobs:
          - {name: sweep, sources: [photos/cat.jpg, photos/coffee.jpg], prompts: [a, b],
             strength: [0.5, 0.9], num_inference_steps: [4, 8], guidance_scale: [2, 3.5], width: [32, 64],
             resize: [pad, fit]}
    """)  # fmt: skip
    seeds = {}
    for item in job.items:
        seeds.setdefault((item.source.key, item.prompt), set()).add(item.seed)
    assert len(job.items) == 2 * 2 * 2**5 and all(len(s) == 1 for s in seeds.values())
    assert len({next(iter(s)) for s in seeds.values()}) == 4  # sources and prompts still differ
    cat = next(item for item in job.items if item.source.stem == "cat" and item.prompt == "a")
    assert cat.seed == derive_seed(cat.source.key, "a") == derive_seed(cat.source.key, "a", 0)


def test_variations_give_distinct_derived_seeds_and_count_up_from_an_explicit_seed(photos):
    base, varied, explicit = planned(photos, """
        defaults: {sources: photos/cat.jpg, prompts: a, strength: [0.5, 0.9]}
        jobs:
          - {name: base}
          - {name: varied, variations: 3}
          - {name: explicit, seed: 10, variations: 3}
    """)  # fmt: skip
    assert len(varied.items) == 2 * 3
    by_variation = {}
    for item in varied.items:
        by_variation.setdefault(item.variation, set()).add(item.seed)
    assert all(len(seeds) == 1 for seeds in by_variation.values()) and len(by_variation) == 3
    assert len(set().union(*by_variation.values())) == 3
    assert by_variation[0] == {base.items[0].seed}  # variation 0 keeps the seed a single variation had
    assert sorted({item.seed for item in explicit.items}) == [10, 11, 12]
    assert not any(item.seed_derived for item in explicit.items)
    problems = refusal(photos, "jobs: [{name: a, sources: photos/cat.jpg, prompts: a, variations: 0}]")
    assert "variations" in problems and "greater than or equal to 1" in problems
    assert "variations" in refusal(photos, "defaults: {variations: 10001}\njobs: [{name: a, sources: photos/cat.jpg, prompts: a}]")  # fmt: skip


def test_csv_variations_column_and_repeated_seedless_rows_are_not_merged_silently(photos, tiny_config):
    write(
        photos / "rows.csv",
        """\
        source,prompt,seed,variations
        photos/cat.jpg,a,,2
        photos/coffee.jpg,b,5,2
        photos/cat.jpg,a,,
    """,
    )
    (job,) = plan_jobs(list(load_manifests([photos / "rows.csv"])[0].jobs), PIPELINE)
    assert [(item.row, item.variation) for item in job.items] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [item.seed for item in job.items[2:]] == [5, 6] and job.merged_rows == ((1, 0, 3),)
    result = batch_edit("plan", "rows.csv", "--pipeline", str(tiny_config), cwd=photos)
    assert result.returncode == 0, result.stderr
    assert "row 3 gives the same item(s) as row 1" in result.stderr and "'variations' column" in result.stderr
    assert "4 item(s)" in result.stdout and "1 duplicate(s) merged" in result.stdout


def test_seed_minus_one_is_explained_in_yaml_and_csv(photos):
    problems = refusal(photos, "jobs: [{name: a, sources: photos/cat.jpg, prompts: a, seed: [1, -1]}]")
    assert "-1 (random) is not supported" in problems and "variations: N" in problems
    assert "greater than or equal" not in problems  # the explanation, not a range error besides it
    write(photos / "rows.csv", "source,prompt,seed\nphotos/cat.jpg,a,-1\n")
    with pytest.raises(ManifestError, match=r"rows.csv: row 1 .*-1 \(random\) is not supported"):
        load_manifests([photos / "rows.csv"])


# --- plans that tell the truth -------------------------------------------------------------------------------


def test_plan_lists_missing_sources_says_where_paths_resolve_and_exits_1(photos, tiny_config):
    (photos / "jobs").mkdir()
    write(
        photos / "jobs" / "m.yaml",
        """
        jobs:
          - name: a
            sources: [../photos/cat.jpg, photos/cat.jpg, ../photos/gone.jpg]
            prompts: a
    """,
    )
    result = batch_edit("plan", "jobs/m.yaml", "--pipeline", str(tiny_config), cwd=photos)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"relative paths resolve against {photos / 'jobs'}" in result.stdout
    assert f"missing: 2 of 3 source file(s): {photos / 'jobs' / 'photos' / 'cat.jpg'}" in result.stdout
    assert "2 source file(s) not found" in result.stderr
    write(photos / "jobs" / "m.yaml", "jobs: [{name: a, sources: ../photos/cat.jpg, prompts: a}]")
    fixed = batch_edit("plan", "jobs/m.yaml", "--pipeline", str(tiny_config), cwd=photos)
    assert fixed.returncode == 0 and "missing:" not in fixed.stdout


def test_run_with_every_source_missing_refuses_before_loading(photos, tiny_config):
    write(photos / "m.yaml", "jobs: [{name: a, sources: [nowhere/a.jpg, nowhere/b.jpg], prompts: a}]")
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 2, result.stderr
    assert "none of the 2 source file(s) exists" in result.stderr and "loading" not in result.stderr
    assert not (photos / "out").exists()


def test_sources_there_but_out_of_reach_are_named_with_why_not_as_missing(photos, tiny_config):
    """A link loop (or a folder above the file that may not be entered) is no wrong path: plan and the run's
    refusal say what stops each file, as the run's failure rows would ("could not read file: ...")."""
    (photos / "loop-a.jpg").symlink_to("loop-b.jpg")
    (photos / "loop-b.jpg").symlink_to("loop-a.jpg")
    write(photos / "m.yaml", "jobs: [{name: a, sources: [loop-a.jpg, gone.jpg, photos/cat.jpg], prompts: a}]")
    plan = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=photos)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert f"missing: 1 of 3 source file(s): {photos / 'gone.jpg'}\n" in plan.stdout
    assert f"cannot be read: 1 of 3 source file(s): {photos / 'loop-a.jpg'} (a link loop)\n" in plan.stdout
    assert plan.stderr.endswith(
        "error: 1 source file(s) not found (listed above)\nerror: 1 source file(s) cannot be read (listed above)\n"
    )
    write(photos / "m.yaml", "jobs: [{name: a, sources: [loop-a.jpg, gone.jpg], prompts: a}]")
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: none of the 2 source file(s) can be read: {photos / 'loop-a.jpg'} (a link loop) and 1 more "
        "(relative paths resolve against the manifest's folder); nothing was run"
    )
    assert "loading" not in result.stderr and not (photos / "out").exists()


def test_a_run_whose_every_source_is_a_url_at_a_private_address_refuses_before_loading(photos, tiny_config):
    """Refused whenever fetched without --allow-private-urls: known from the URLs alone, not after the model loads;
    a host name is not judged (it may resolve anywhere), and with the flag the run goes ahead."""
    sources = ["http://127.0.0.1:9/a.png", "http://localhost:9/b.png", "http://[::1]:9/c.png"]
    write(photos / "u.csv", "source,prompt\n" + "".join(f"{url},a\n" for url in sources))
    result = run(photos, "run", "u.csv", "--pipeline", str(tiny_config))
    assert result.returncode == 2, result.stderr
    shown = ", ".join(f"{url} (a private address)" for url in sources)
    assert result.stderr.splitlines()[-1] == (
        f"error: none of the 3 source(s) can be loaded: {shown} (--allow-private-urls allows private addresses); "
        "nothing was run"
    )
    assert "loading" not in result.stderr and not (photos / "out").exists()
    allowed = run(photos, "run", "u.csv", "--pipeline", str(tiny_config), "--allow-private-urls")
    assert allowed.returncode == 1 and "3 failed (could not connect: 3)" in allowed.stdout, allowed.stdout


def test_plan_warns_about_a_device_this_machine_lacks_and_jobs_that_start_from_noise(photos, tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cuda = write_pipeline_config(photos / "cuda.yaml", tiny_model, device="cuda")
    write(photos / "m.yaml", """
        jobs:
          - {name: noisy, sources: photos/cat.jpg, prompts: a, num_inference_steps: 4, strength: [0.5, 0.75, 0.8, 1.0]}
          - {name: calm, sources: photos/cat.jpg, prompts: a, num_inference_steps: 4, strength: 0.75}
    """)  # fmt: skip
    result = batch_edit("plan", "m.yaml", "--pipeline", str(cuda), cwd=photos)
    assert result.returncode == 0, result.stderr
    assert "asks for device 'cuda' but CUDA_VISIBLE_DEVICES hides every GPU" in result.stderr
    (noise,) = [line for line in result.stderr.splitlines() if "pure noise" in line]
    assert "job noisy: strength 0.8 with 4 steps, strength 1.0 with 4 steps start(s)" in noise
    cpu = write_pipeline_config(photos / "cpu.yaml", tiny_model)
    quiet = batch_edit("plan", "m.yaml", "--pipeline", str(cpu), cwd=photos)
    assert "device" not in quiet.stderr and "calm" not in quiet.stderr


def test_run_warns_of_items_that_start_from_noise_as_plan_does(photos, tiny_config):
    """A run started without `plan` first says it too (4 steps at strength 0.9: no step skipped), once."""
    write(photos / "m.yaml", """
        jobs:
          - {name: noisy, sources: photos/cat.jpg, prompts: a, num_inference_steps: 2, strength: [0.5, 0.9],
             width: 32, height: 32}
    """)  # fmt: skip
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    (noise,) = [line for line in result.stderr.splitlines() if "pure noise" in line]
    assert noise.startswith("warning: job noisy: strength 0.9 with 2 steps start(s) from pure noise"), noise


def test_plan_warns_of_strengths_that_run_the_same_steps_once_per_job_and_steps(photos, tiny_config):
    """4 steps at 0.3 and 0.5 both run the last 2 (int(4 - 1.2) = int(4 - 2.0) = 2 skipped): one image twice.
    0.8 and 1.0 run all 4, the same pure noise: the noise warning names them, this one leaves them out."""
    write(photos / "m.yaml", """
        jobs:
          - {name: sweep, sources: photos/cat.jpg, prompts: a, num_inference_steps: [4, 10],
             strength: [0.3, 0.5, 0.6, 0.8, 1.0]}
          - {name: fine, sources: photos/cat.jpg, prompts: a, num_inference_steps: 10,
             strength: [0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.6]}
          - {name: apart, sources: photos/cat.jpg, prompts: a, num_inference_steps: 4, strength: [0.25, 0.5, 0.75]}
    """)  # fmt: skip
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=photos)
    assert result.returncode == 0, result.stderr
    same = [line for line in result.stderr.splitlines() if "the same image" in line]
    assert same == [
        "warning: job sweep: strengths 0.3 and 0.5 at 4 steps both run the last 2 steps (the pipeline starts at step "
        "int(steps - steps * strength)), so items differing only in them make the same image: use more steps to tell "
        "them apart, or keep one of them",
        "warning: job fine: strengths 0.31, 0.32, 0.33, 0.34 and 2 more at 10 steps all run the last 4 steps (the "
        "pipeline starts at step int(steps - steps * strength)), so items differing only in them make the same "
        "image: use more steps to tell them apart, or keep one of them",
    ]
    (noise,) = [line for line in result.stderr.splitlines() if "pure noise" in line]
    assert "job sweep: strength 0.8 with 4 steps, strength 1.0 with 4 steps, strength 1.0 with 10 steps" in noise


def test_run_warns_of_strengths_that_run_the_same_steps_and_their_images_are_one(photos, tiny_config):
    write(photos / "m.yaml", """
        jobs:
          - {name: sweep, sources: photos/cat.jpg, prompts: a, num_inference_steps: 4, strength: [0.3, 0.5],
             seed: 7, width: 32, height: 32}
    """)  # fmt: skip
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    (same,) = [line for line in result.stderr.splitlines() if "the same image" in line]
    assert same.startswith("warning: job sweep: strengths 0.3 and 0.5 at 4 steps both run the last 2 steps"), same
    files = pd.read_csv(photos / "out" / "sweep" / "metadata.csv").sort_values("strength")["file_name"]
    first, second = (Image.open(photos / "out" / "sweep" / name).tobytes() for name in files)
    assert first == second


def test_limit_runs_the_first_pending_items_across_jobs_and_plan_agrees(photos, tiny_config):
    write(
        photos / "m.yaml",
        f"""
        defaults: {{sources: photos/cat.jpg, {SMALL}}}
        jobs:
          - {{name: a, prompts: [a, b]}}
          - {{name: b, prompts: [c, d]}}
    """,
    )
    common = ["m.yaml", "--pipeline", str(tiny_config), "--limit", "3"]
    assert "--limit 3: 3 of 4 pending item(s) would run" in run(photos, "plan", *common).stdout
    result = run(photos, "run", *common)
    assert result.returncode == 0, result.stderr
    assert "job a: 2 written" in result.stdout
    assert "job b: 1 written, 0 already done, 0 failed, 1 left for later (--limit)" in result.stdout
    assert list(pd.read_csv(photos / "out" / "b" / "metadata.csv")["prompt"]) == ["c"]  # plan order
    assert "--limit 3: 1 of 1 pending item(s) would run" in run(photos, "plan", *common).stdout
    assert "job b: 1 written, 1 already done" in run(photos, "run", *common).stdout


def test_loading_prints_one_line_and_verbose_works_after_the_command(photos, tiny_config, tiny_model):
    write(photos / "m.yaml", f"jobs: [{{name: a, sources: photos/cat.jpg, prompts: a, {SMALL}}}]")
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    loading = [line for line in result.stderr.splitlines() if "loading" in line]
    assert len(loading) == 1 and re.fullmatch(
        rf"batch-edit: loading {re.escape(str(tiny_model))} \(quanto\(.*\)\) \.\.\. loaded in \d+\.\d s", loading[0]
    ), loading
    parse = cli._parser().parse_args
    assert parse(["run", "-v", "m.yaml"]).verbose and parse(["-v", "plan", "m.yaml"]).verbose
    assert not parse(["run", "m.yaml"]).verbose
    verbose = run(photos, "run", "--verbose", "m.yaml", "--pipeline", str(tiny_config), "--overwrite")
    assert verbose.returncode == 0 and "INFO quantizing" in verbose.stderr


# --- job folders that match the manifest ---------------------------------------------------------------------


def test_metadata_keeps_manifest_order_and_csv_rows_join_back(photos, tiny_config):
    # Rows alternate steps, so the runner (which groups equal steps into one call) writes them out of order.
    write(
        photos / "rows.csv",
        """\
        source,prompt,num_inference_steps,strength,width,height,seed
        photos/cat.jpg,a,2,0.5,32,32,1
        photos/coffee.jpg,b,3,0.7,32,32,2
        photos/rocket.jpg,c,2,0.5,32,32,3
        photos/astronaut.jpg,d,3,0.7,32,32,4
    """,
    )
    write(photos / "grid.yaml", f"jobs: [{{name: grid, sources: photos/cat.jpg, prompts: [z, y], seed: [2, 1], {SMALL}}}]")  # fmt: skip
    result = run(photos, "run", "rows.csv", "grid.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(photos / "out" / "rows" / "metadata.csv")
    assert list(rows["prompt"]) == ["a", "b", "c", "d"] and list(rows["row"]) == [1, 2, 3, 4]
    assert list(rows["index"]) == [0, 1, 2, 3]
    grid = pd.read_csv(photos / "out" / "grid" / "metadata.csv")
    assert list(zip(grid["prompt"], grid["seed"])) == [("z", 2), ("z", 1), ("y", 2), ("y", 1)]
    assert "row" not in grid.columns  # only CSV jobs have manifest rows


def test_loras_column_loads_as_a_string_feature(photos, tiny_config):
    datasets = pytest.importorskip("datasets")
    write(photos / "m.yaml", f"jobs: [{{name: a, sources: photos/cat.jpg, prompts: a, {SMALL}}}]")  # fmt: skip
    assert run(photos, "run", "m.yaml", "--pipeline", str(tiny_config)).returncode == 0
    loaded = datasets.load_dataset("imagefolder", data_dir=str(photos / "out" / "a"), split="train")
    assert loaded.features["loras"].dtype in ("string", "large_string") and loaded[0]["loras"] == "none"


# --- file-name templates -------------------------------------------------------------------------------------


def test_file_name_templates_fill_sanitize_and_refuse_unknown_fields_and_clashes(photos):
    (job,) = planned(photos, """
        jobs:
          - {name: t, sources: photos/cat.jpg, prompts: a, strength: [0.5, 0.9], seed: 7, variations: 2,
             file_name: "../.{job} {stem}/s{strength}_{seed}_v{variation}_{index:03d}_{steps}_{guidance}"}
    """)  # fmt: skip
    names = [item.name for item in job.items]
    assert names[0] == "_.t_cat_s0.5_7_v0_000_28_3.5" and names[-1] == "_.t_cat_s0.9_8_v1_003_28_3.5"
    assert job.items[0].output_name == names[0] + ".png"
    assert all("/" not in name and not name.startswith(".") for name in names)
    (default,) = planned(photos, "jobs: [{name: d, sources: photos/cat.jpg, prompts: a}]")
    assert default.items[0].output_name == f"cat-{default.items[0].item_id}.png"

    unknown = refusal(photos, "jobs: [{name: t, sources: photos/cat.jpg, prompts: a, file_name: '{stem}-{size}'}]")
    assert "jobs[0] ('t'): field 'file_name': unknown placeholder {size}" in unknown and "{variation}" in unknown
    clash = refusal(photos, "jobs: [{name: t, sources: photos/cat.jpg, prompts: a, strength: [0.5, 0.9], file_name: '{stem}'}]")  # fmt: skip
    assert "gives two items the name 'cat'" in clash
    assert "strength 0.5" in clash and "strength 0.9" in clash


def test_size_and_resize_placeholders_name_a_size_sweep(photos, tiny_config):
    manifest = """
        jobs:
          - name: s
            sources: photos/cat.jpg
            prompts: a
            width: [32, 48]
            height: 32
            resize: [center-crop, fit]
            file_name: "{stem}-{width}x{height:03d}-{resize}"
        defaults: {num_inference_steps: 2}
    """
    (job,) = planned(photos, manifest)
    assert [item.name for item in job.items] == [
        "cat-32x032-center-crop", "cat-32x032-fit", "cat-48x032-center-crop", "cat-48x032-fit"
    ]  # fmt: skip
    write(photos / "m.yaml", manifest)
    assert run(photos, "run", "m.yaml", "--pipeline", str(tiny_config)).returncode == 0
    with Image.open(photos / "out" / "s" / "cat-48x032-center-crop.png") as result:
        assert result.size == (48, 32)
    wrong = refusal(photos, "jobs: [{name: t, sources: photos/cat.jpg, prompts: a, file_name: '{stem}-{resize:d}'}]")
    assert "{resize} is text (such as 'center-crop')" in wrong
    clash = refusal(photos, "jobs: [{name: t, sources: photos/cat.jpg, prompts: a, width: [32, 48], file_name: '{stem}-{height}'}]")  # fmt: skip
    assert "gives two items the name 'cat-1024'" in clash


def test_a_changed_template_renders_into_the_new_names(photos, tiny_config):
    manifest = write(
        photos / "m.yaml",
        f"""
        jobs:
          - name: a
            sources: photos/cat.jpg
            prompts: a
            seed: [1, 2]
            file_name: "first-{{seed}}"
        defaults: {{{SMALL}}}
    """,
    )
    assert run(photos, "run", "m.yaml", "--pipeline", str(tiny_config)).returncode == 0
    manifest.write_text(manifest.read_text().replace("first-", "second-"))
    plan = run(photos, "plan", "m.yaml", "--pipeline", str(tiny_config))
    assert "2 item(s), 0 already done" in plan.stdout
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert "2 written, 0 already done" in result.stdout, result.stdout + result.stderr
    metadata = pd.read_csv(photos / "out" / "a" / "metadata.csv")
    assert list(metadata["file_name"]) == ["second-1.png", "second-2.png"]
    assert (photos / "out" / "a" / "second-1.png").is_file()


# --- smaller ------------------------------------------------------------------------------------------------


def test_reproduce_refuses_a_folder_and_a_foreign_csv_with_exit_2(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "metadata.csv").write_text("file_name,item_id\n")
    folder = batch_edit("reproduce", str(tmp_path / "job"), "--item", "x")
    assert folder.returncode == 2 and "is a folder" in folder.stderr and "pass its metadata.csv" in folder.stderr
    assert "Traceback" not in folder.stderr
    (tmp_path / "other.csv").write_text("file_name,item_id,prompt\nabc.png,abc,a\n")
    foreign = batch_edit("reproduce", str(tmp_path / "other.csv"), "--item", "abc")
    assert foreign.returncode == 2 and "not a batch-edit metadata.csv" in foreign.stderr and "source" in foreign.stderr


SIGNALS = {"SIGTERM": (signal.SIGTERM,), "double-Ctrl-C": (signal.SIGINT, signal.SIGINT)}
TWO_JOBS = "jobs: [{name: a, sources: photos/cat.jpg, prompts: a}, {name: b, sources: photos/cat.jpg, prompts: b}]"


def start_separate_processes(background, tmp_path_factory, model: Path) -> dict:
    """`make-tiny-model --force` on a folder not empty and runs stopped by signals while loading, each in a process
    of its own: started with the test session (conftest's `usability_processes`) to run while other tests do.
    name -> (its folder, future of its CompletedProcess)."""
    forced = tmp_path_factory.mktemp("forced") / "full"
    forced.mkdir()
    (forced / "notes.txt").write_text("mine")
    started = {"make-tiny-model --force": (forced, background.submit(_made_with_force, forced))}
    for name, signals in SIGNALS.items():
        photos = tmp_path_factory.mktemp("stopped-while-loading")
        shutil.copytree(PHOTOS, photos / "photos")
        write(photos / "m.yaml", TWO_JOBS)
        config = write_pipeline_config(photos / "tiny.yaml", model)
        started[name] = photos, background.submit(_stopped_while_loading, photos, config, signals)
    return started


def _made_with_force(start, folder: Path) -> subprocess.CompletedProcess:
    process = start("make-tiny-model", str(folder), "--force", cwd=folder.parent)
    stdout, stderr = process.communicate()  # no timeout (Popen's timed waits call time.sleep): the future has one
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _stopped_while_loading(start, photos: Path, config: Path, signals) -> tuple[str, subprocess.CompletedProcess]:
    process = start("run", str(photos / "m.yaml"), "--pipeline", str(config), "--output-root", str(photos / "out"), cwd=photos)  # fmt: skip
    seen = b""
    while b"loading" not in seen:  # the loading line has no newline until the model is loaded
        char = os.read(process.stderr.fileno(), 1)  # unbuffered: communicate() gets the rest
        assert char, f"no loading line: {seen}"
        seen += char
    for signum in signals:
        process.send_signal(signum)
        sleep(0.05)
    stdout, stderr = process.communicate()  # no timeout (Popen's timed waits call time.sleep): the future has one
    return seen.decode(), subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("double-Ctrl-C", 130)], ids=list(SIGNALS))
def test_a_signal_while_loading_says_so_and_leaves_no_job_folder(usability_processes, name, status):
    photos, stopped = usability_processes[name]
    seen, process = stopped.result(timeout=600)
    stderr = process.stderr
    assert process.returncode == status, seen + stderr
    stopped_by = signal.Signals(SIGNALS[name][0]).name
    assert f"stopped by {stopped_by} while loading the pipeline; nothing was generated" in stderr
    assert "Traceback" not in stderr
    assert not (photos / "out").exists()


def test_a_job_held_by_another_run_refuses_the_whole_run_and_leaves_no_folder(photos, tiny_config):
    write(photos / "m.yaml", "jobs: [{name: a, sources: photos/cat.jpg, prompts: a}, {name: b, sources: photos/cat.jpg, prompts: b}]")  # fmt: skip
    state = photos / "out" / "b" / ".batch-edit"
    state.mkdir(parents=True)
    with FileLock(state / "lock"):  # held by a process that names itself in no owner file
        result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 2 and "another batch-edit process is writing" in result.stderr
    assert str(photos / "out" / "b") in result.stderr
    assert "loading" not in result.stderr
    assert sorted(path.name for path in (photos / "out").iterdir()) == ["b"]


def test_make_tiny_model_refuses_a_non_empty_folder_and_prints_one_line(tmp_path, usability_processes):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    refused = batch_edit("make-tiny-model", str(tmp_path / "full"))
    assert refused.returncode == 2 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    forced, making = usability_processes["make-tiny-model --force"]  # another folder with a notes.txt, as above
    made = making.result(timeout=600)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines() == [f"wrote a tiny random FLUX img2img pipeline to {forced}"]
    assert made.stderr == ""
    assert (forced / "model_index.json").is_file()


def test_the_final_progress_line_and_the_summary_agree_on_elapsed_time(photos, tiny_config):
    write(photos / "m.yaml", f"jobs: [{{name: a, sources: photos/cat.jpg, prompts: [a, b], {SMALL}}}]")  # fmt: skip
    result = run(photos, "run", "m.yaml", "--pipeline", str(tiny_config))
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("batch-edit: 2/2 items")]
    (summary,) = [line for line in result.stdout.splitlines() if line.startswith("total: ")]
    assert len(progress) == 1
    assert progress[0].split("elapsed ")[1].split(",")[0] == summary.split("elapsed ")[1]
