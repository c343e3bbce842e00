"""Each item parameter is declared once (batch_edit.parameters) and every stage reads the declaration: ids and
seeds stay what they were, and a parameter added to the declarations reaches every stage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from batch_edit import __version__
from batch_edit.infotext import a1111_parameters
from batch_edit.job_listing import FAILURE_COLUMNS, METADATA_COLUMNS
from batch_edit.manifest import load_manifest
from batch_edit.outputs import item_fields
from batch_edit.plan import make_item, plan_jobs
from batch_edit.sheet_arrangement import AXES
from batch_edit.sources import SourceRef

REPO = Path(__file__).resolve().parent.parent
PIPELINE = {"model": "black-forest-labs/FLUX.1-dev", "revision": "main", "dtype": "bfloat16", "quantization": "none"}
GRID_YAML = """\
jobs:
  - name: derived
    sources: ["https://example.com/a/cat.png", "https://example.com/b/dog.jpg"]
    prompts: ["a {stem} as a tiger", "watercolor"]
    strength: [0.5, 0.75]
    variations: 2
  - name: explicit
    sources: https://example.com/a/cat.png
    prompts: snowy
    seed: [7, 123456789]
    num_inference_steps: 20
    guidance_scale: 4.5
    width: 512
    height: 768
    resize: pad
    variations: 3
"""
ROWS_CSV = (
    "source,prompt,strength,seed,variations,width\n"
    "https://example.com/a/cat.png,night,0.6,,,\n"
    "https://example.com/b/dog.jpg,day,0.8,42,2,640\n"
)
# Computed before the parameters were declared in one place: any drift in ids or seeds fails here.
PINNED = {
    "derived": [
        ("bfdf221c55d780e0", 2291097630), ("55135babc5826278", 2285979552), ("6fb3a23344ac6638", 2291097630),
        ("df3bdc3e79f7aaa2", 2285979552), ("75970823a8d9ca48", 3946475340), ("1356124613a6e862", 1724673411),
        ("af1621f3c381c1e8", 3946475340), ("c75c97e8093003e5", 1724673411), ("6ad557223bdf1551", 1706016149),
        ("679f306222faa7aa", 2403175739), ("1421f26216a206e1", 1706016149), ("8d0a2de827cbb3a2", 2403175739),
        ("bf032baf4025b586", 3179424492), ("4e382b75c8d7f782", 1508868761), ("9577c04424e10946", 3179424492),
        ("29b84ca2b6c37ed4", 1508868761),
    ],
    "explicit": [
        ("23477ab1e1b6c7cc", 7), ("781f0ca42b1f54f8", 8), ("6a1b774c59454683", 9),
        ("339ef44d4ba96dfa", 123456789), ("78ec117b945f1673", 123456790), ("c40d01e4acd9af7b", 123456791),
    ],
    "rows": [("dfe3d35dae22d644", 1583418252), ("a81609e7bc663cc3", 42), ("c76bc2041e85deee", 43)],
}  # fmt: skip


def test_ids_and_seeds_are_those_planned_before(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID_YAML)
    (tmp_path / "rows.csv").write_text(ROWS_CSV)
    planned = {}
    for name in ("grid.yaml", "rows.csv"):
        for plan in plan_jobs(list(load_manifest(tmp_path / name).jobs), PIPELINE):
            planned[plan.name] = [(item.item_id, item.seed) for item in plan.items]
    assert planned == PINNED


def test_make_item_ids_and_seeds_are_those_made_before():
    ref = SourceRef(key="/data/cat.jpg", is_url=False, stem="cat", fingerprint="ab" * 32, caption=None)
    params = dict(strength=0.9, num_inference_steps=28, guidance_scale=3.5, seed=None, width=1024, height=1024,
                  resize="center-crop")  # fmt: skip
    key = json.dumps({"model": "m"}, sort_keys=True)
    made = [make_item("job", ref, "a cat", params, key, variation) for variation in (0, 3)]
    made.append(make_item("job", ref, "a cat", {**params, "seed": 5}, key, 1))
    assert [(item.item_id, item.seed) for item in made] == [
        ("726ebe83c9208fd4", 2827726160), ("5e1bdb796c2805ff", 3387674742), ("26a03ba6e93f7c6e", 6),
    ]  # fmt: skip


def test_records_a1111_text_and_sheet_axes_are_laid_out_as_before():
    ref = SourceRef(key="https://e.com/cat.png", is_url=True, stem="cat", fingerprint="", caption=None)
    params = dict(strength=0.75, num_inference_steps=20, guidance_scale=4.5, seed=7, width=512, height=768,
                  resize="pad")  # fmt: skip
    row = item_fields(make_item("job", ref, "a cat", params, "k"), (512, 640))
    item_columns = [
        "item_id", "job", "index", "source", "prompt", "seed", "seed_derived", "strength", "num_inference_steps",
        "guidance_scale", "width", "height", "requested_width", "requested_height", "resize",
    ]  # fmt: skip
    # the variation: recorded after the columns, a metadata.csv column only in jobs with variations
    assert list(row) == [*item_columns[:4], "source_stat", "source_sha256", *item_columns[4:], "variation"]
    assert METADATA_COLUMNS == ["file_name", *item_columns, "model", "revision", "dtype", "quantization", "loras",
                                "device", "pipeline_config", "batch_size", "seconds", "finished_at"]  # fmt: skip
    assert FAILURE_COLUMNS == [*item_columns, "stage", "error_type", "error", "failed_at"]
    assert (row["width"], row["height"], row["requested_width"], row["requested_height"]) == (512, 640, 512, 768)
    assert a1111_parameters({**row, "model": "m", "quantization": "none"}) == (
        "a cat\nSteps: 20, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 4.5, Seed: 7, Size: 512x640, Model: m, Denoising strength: "
        f'0.75, Source: "https://e.com/cat.png", Resize: pad, Quantization: none, Item id: {row["item_id"]}, '
        f"Version: batch-edit {__version__}"
    )
    assert AXES == (
        ("prompt", "prompt"), ("strength", "strength"), ("seed", "seed"), ("variation", "variation"),
        ("num_inference_steps", "steps"), ("guidance_scale", "guidance"), ("size", "size"), ("resize", "resize"),
        ("mask", "mask"),  # the mask itself: items differing only by it are no variations
        ("mask_blur", "mask blur"), ("mask_padding", "mask padding"), ("composite", "composite"),  # masked jobs only
    )  # fmt: skip


# Run in a fresh interpreter: the declaration is added before any stage is imported, as a line in PARAMETERS is.
ADDED_PARAMETER = """
import json, sys
from pathlib import Path
from typing import Annotated
from pydantic import Field
from batch_edit import parameters
from batch_edit.parameters import Label, Parameter

parameters.PARAMETERS += (
    Parameter("sharpness", Annotated[float, Field(ge=0, le=2)], {"img2img": 0.5}, parse=float,
              a1111=Label("Sharpness"), sheet=Label("sharpness"), file_field="sharp"),
)

from batch_edit.errors import ManifestError
from batch_edit.infotext import a1111_parameters
from batch_edit.manifest import load_manifest
from batch_edit.job_listing import ITEM_COLUMNS
from batch_edit.outputs import item_fields
from batch_edit.plan import grid_axes, plan_jobs
from batch_edit.reproduce import item_from_row
from batch_edit.sheet_arrangement import AXES, arrange

folder = Path(sys.argv[1])
seen = {}

def problems(name, text):
    (folder / name).write_text(text)
    try:
        load_manifest(folder / name)
    except ManifestError as exc:
        return exc.problems
    return []

seen["yaml_range"] = problems("range.yaml", "jobs: [{name: a, sources: https://e.com/a.png, prompts: x, sharpness: 5}]")
seen["yaml_typo"] = problems("typo.yaml", "jobs: [{name: a, sources: https://e.com/a.png, prompts: x, sharpnes: 1}]")
seen["csv_range"] = problems("range.csv", "source,prompt,sharpness\\nhttps://e.com/a.png,x,3\\n")
(folder / "sweep.yaml").write_text(
    "jobs: [{name: a, sources: https://e.com/a.png, prompts: x, sharpness: [0.25, 1.5], file_name: '{stem}-{sharp}'}]"
)
(folder / "rows.csv").write_text("source,prompt,sharpness\\nhttps://e.com/a.png,x,\\nhttps://e.com/a.png,x,2\\n")
sweep = load_manifest(folder / "sweep.yaml").jobs[0]
plan = plan_jobs([sweep], {"model": "m"})[0]
rows_plan = plan_jobs(list(load_manifest(folder / "rows.csv").jobs), {"model": "m"})[0]
seen["swept"] = [item.sharpness for item in plan.items]
seen["names"] = [item.output_name for item in plan.items]
seen["ids"] = len({item.item_id for item in plan.items})
seen["csv_values"] = [item.sharpness for item in rows_plan.items]
seen["plan_axes"] = grid_axes(sweep)
rows = [{**item_fields(item), "file_name": item.output_name} for item in plan.items]
seen["columns"] = ITEM_COLUMNS
seen["row"] = rows[1]["sharpness"]
seen["a1111"] = a1111_parameters(rows[1]).splitlines()[1]
seen["reproduced"] = item_from_row({k: str(v) for k, v in rows[1].items()}).sharpness
seen["sheet_axes"] = AXES
seen["sheet_headers"] = list(arrange(rows)[0].headers)
print(json.dumps(seen))
"""


def test_a_parameter_added_to_the_declarations_reaches_every_stage(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ADDED_PARAMETER), str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # validation: its range, a misspelling, a CSV cell
    assert any("field 'sharpness'" in p and "less than or equal to 2" in p for p in seen["yaml_range"])
    assert any("did you mean 'sharpness'" in p for p in seen["yaml_typo"])
    assert any("row 1" in p and "'sharpness'" in p for p in seen["csv_range"])
    # grid expansion, its default, `plan`'s axes and file-name templates
    assert seen["swept"] == [0.25, 1.5] and seen["ids"] == 2
    assert seen["csv_values"] == [0.5, 2.0]
    assert seen["plan_axes"] == {"sharpness": [0.25, 1.5]}
    assert seen["names"] == ["a-0.25.png", "a-1.5.png"]
    # records: metadata.csv column, A1111 text, reproduce reads it back
    assert seen["columns"][-1] == "sharpness" and seen["row"] == 1.5
    assert "Sharpness: 1.5" in seen["a1111"]
    assert seen["reproduced"] == 1.5
    # contact sheets: an axis, labelled
    assert ["sharpness", "sharpness"] in seen["sheet_axes"]
    assert seen["sheet_headers"] == ["sharpness 0.25", "sharpness 1.5"]


def names_in_code(module: Path) -> set[str]:
    """The identifiers and string constants a module's code uses (docstrings and comments aside)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            found.add(node.arg)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            found.add(node.value)
    return found


def test_the_mask_parameters_are_named_only_where_declared_and_where_they_act():
    """The manifest models, grid, WorkItem, ids, records, CSV columns, A1111 text, sheets and reproduce learnt of
    mask_blur, mask_padding and composite from their declarations alone: no other module names them but the one
    applying them (masks.py: blur and compositing) and the engine, which hands the padding to diffusers."""
    acting = {"mask_blur": {"masks.py"}, "mask_padding": {"masks.py", "engine.py"}, "composite": {"masks.py"}}
    declared = REPO / "batch_edit" / "parameters.py"
    modules = {path.name: names_in_code(path) for path in (REPO / "batch_edit").glob("*.py") if path != declared}
    for name, where in acting.items():
        assert name in names_in_code(declared)
        assert {module for module, names in modules.items() if name in names} == where, name
