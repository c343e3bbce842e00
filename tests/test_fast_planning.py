"""The faster paths `plan` takes on big jobs give exactly what the plain definitions give: records.jsonl read a block
at a time (each line still judged alone, as json.loads judges it), every field of a planned item as make_item sets
it, the estimate worked out once per distinct (steps, strength, size)."""

from __future__ import annotations

import json
from dataclasses import fields
from types import SimpleNamespace

import pytest

from batch_edit import estimate as estimate_module
from batch_edit import records as records_module
from batch_edit.estimate import _fit, _number, estimate, work
from batch_edit.manifest import load_manifest
from batch_edit.outputs import JobOutput
from batch_edit.plan import make_item, plan_jobs
from batch_edit.records import valid_record

PIPELINE = {"model": "black-forest-labs/FLUX.1-dev", "revision": "main", "dtype": "bfloat16", "quantization": "none"}


def _ok(item_id: str, **extra) -> dict:
    return {"status": "ok", "item_id": item_id, "file_name": f"{item_id}.png", "bytes": 3, "seconds": 1.5, **extra}


# Lines of every kind a records file may hold: as written, cut short, planted, spaced, not UTF-8, nested too deep.
LINES = [
    json.dumps(_ok("a", prompt="un chat gris ü 猫")).encode(),
    json.dumps(_ok("b")).encode()[:40],  # cut short by a crash
    b"",
    b"   \t ",  # blank: not counted as invalid
    "\u00a0".encode(),  # no blank to bytes.strip(): counted as invalid, as before
    "\u2028".encode(),
    b"\x0c",  # blank to bytes.strip(), no JSON whitespace
    b"  " + json.dumps(_ok("c")).encode() + b"  \r",  # spaces around a valid record
    json.dumps(_ok("d")).encode() + b"\r",
    b'{"status": "ok", "item_id": "e", "file_name": "e.png", "bytes": 3, "prompt": "\xff\xfe"}',  # not UTF-8
    b"[" * 100_000,  # nested too deep
    b'{"status": "failed", "item_id": "f", "n": ' + b"9" * 5000 + b"}",  # an int of over 4300 digits
    b'{"status": "failed", "item_id": "g", "seconds": NaN}',
    b'{"status": "ok", "item_id": "h", "file_name": "h.png", "bytes": 3, "seconds": Infinity}',
    "\ufeff".encode() + json.dumps(_ok("i")).encode(),  # a byte order mark
    b'[{"status": "failed", "item_id": "j"}',  # two lines that are one JSON value together: neither is one
    b'{"status": "failed", "item_id": "k"}]',
    json.dumps(_ok("l")).encode() + b", " + json.dumps(_ok("m")).encode(),  # two values on one line
    json.dumps([_ok("n")]).encode(),
    json.dumps({"status": "rejected", "item_id": "o", "index": 2}).encode(),
    json.dumps({"status": "pruned", "item_id": "a", "pruned_to": None}).encode(),
    json.dumps(_ok("a", file_name="a2.png")).encode(),
]


def _expected(data: bytes) -> tuple[list[tuple[int, dict]], int]:
    """What reading line by line with json.loads gives: (line number, record) of each valid line, and the count of
    the other lines that are not blank."""
    valid, invalid = [], 0
    for number, line in enumerate(_split(data)):
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            record = None
        if valid_record(record):
            valid.append((number, record))
        else:
            invalid += bool(line.strip())
    return valid, invalid


def _split(data: bytes) -> list[bytes]:
    """Lines as a binary file's iteration gives them: split after each newline only (not at a carriage return)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _same(left, right) -> bool:
    """Equal, NaN included (json.dumps spells both alike)."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


@pytest.mark.parametrize("block", [3, 7, 64, 1000, 1 << 22])
@pytest.mark.parametrize("last_newline", [True, False])
def test_records_read_in_blocks_are_those_read_line_by_line(tmp_path, monkeypatch, block, last_newline):
    monkeypatch.setattr(records_module, "_BLOCK", block)  # block ends inside lines, inside multi-byte characters
    data = b"\n".join(LINES) + (b"\n" if last_newline else b"")
    output = JobOutput(tmp_path, "job")
    output.state.mkdir(parents=True)
    output.records_path.write_bytes(data)
    with output.records_path.open("rb") as handle:
        got = list(output._valid_records(handle))
    expected, invalid = _expected(data)
    assert [n for n, _ in got] == [n for n, _ in expected] and _same(got, expected)
    assert output.invalid_lines == invalid
    assert {record["item_id"] for _, record in got} == {"a", "c", "d", "g", "o"}  # a check that the lines test much
    latest = output.read_records()
    assert latest["a"]["file_name"] == "a2.png" and output.invalid_lines == invalid
    assert [r["item_id"] for r in output.in_written_order(latest)] == ["c", "d", "g", "o", "a"]


def test_every_field_of_a_planned_item_is_make_items(tmp_path):
    """plan_jobs sets each slot itself (no frozen __init__): every field, compared or not, is the reference's."""
    grid = (
        "    sources: ['https://example.com/a/cat.png', 'https://example.com/b/dog.jpg']\n"
        "    prompts: ['a {stem} as a tiger', 'watercolor']\n"
        "    strength: [0.5, 0.75]\n"
        "    guidance_scale: [2.5, 4.5]\n"
        "    width: 512\n"
        "    height: 768\n"
        "    resize: [pad, center-crop]\n"
        "    variations: 2\n"
    )
    (tmp_path / "jobs.yaml").write_text(
        f"jobs:\n  - name: derived\n{grid}  - name: explicit\n{grid}    seed: [7, 100]\n"
    )
    key = json.dumps(PIPELINE, sort_keys=True)
    plans = plan_jobs(list(load_manifest(tmp_path / "jobs.yaml").jobs), PIPELINE)
    assert [len(plan.items) for plan in plans] == [2 * 2 * 2 * 2 * 2 * 2, 2 * 2 * 2 * 2 * 2 * 2 * 2]
    for plan in plans:
        for index, item in enumerate(plan.items):
            params = {n: getattr(item, n) for n in ("strength", "guidance_scale", "width", "height", "resize")}
            params["seed"] = None if item.seed_derived else item.seed - item.variation
            made = make_item(plan.name, item.source, item.prompt, params, key, item.variation)
            assert {f.name: getattr(item, f.name) for f in fields(item)} == {
                **{f.name: getattr(made, f.name) for f in fields(made)},
                "index": index, "name": f"{item.source.stem}-{item.item_id}", "row": None,
            }  # fmt: skip
    assert {item.seed_derived for item in plans[0].items} == {True} and not plans[1].items[0].seed_derived


def _plain_estimate(task: str, timed: list[dict], pending: list):
    """The estimate as first written: each record's and each pending item's work worked out one by one."""
    seconds = [_number(r.get("seconds"), float) or 0.0 for r in timed]
    recorded = [estimate_module._record_work(task, r) for r in timed]
    if any(w is None for w in recorded):
        return sum(seconds) / len(seconds) * len(pending), None
    fixed, per_unit = _fit(recorded, seconds)
    works = [work(task, i.num_inference_steps, i.strength, i.width, i.height) for i in pending]
    return fixed * len(works) + per_unit * sum(works), max(works) / max(recorded)


def test_the_estimate_is_the_one_worked_out_item_by_item():
    timed = [
        {"seconds": 10.0 + n, "num_inference_steps": steps, "strength": strength, "width": 512, "height": 512}
        for n, (steps, strength) in enumerate([(28, 0.5), (28, 1), (28, 1.0), (20, None), (2, 0.75), (28, 0.5)])
    ]
    pending = [
        SimpleNamespace(num_inference_steps=steps, strength=strength, width=size, height=size)
        for steps in (4, 28) for strength in (0.3, 1, 1.0, None) for size in (256, 1024)
    ] * 3  # fmt: skip
    for task in ("img2img", "fill"):
        found = estimate(task, timed, pending)
        total, ratio = _plain_estimate(task, timed, pending)
        assert found.scaled and found.seconds == total
        assert found.far_outside == (ratio if ratio > 4 else 0.0)
    # a record whose fields are no numbers (a list, True as steps) gives the flat mean, as before
    odd = [*timed, {"seconds": 3.0, "num_inference_steps": [28], "width": 512, "height": 512}]
    assert estimate("img2img", odd, pending).seconds == _plain_estimate("img2img", odd, pending)[0]
    odd = [*timed, {"seconds": 3.0, "num_inference_steps": True, "width": 512, "height": 512}]
    assert not estimate("img2img", odd, pending).scaled
