"""A `.safetensors` checkpoint with bytes past its last tensor (two files joined, junk appended): the safetensors
reader refuses it ("file not fully covered"), so the header check refuses it too, and `plan` names it."""

from __future__ import annotations

from safetensors import SafetensorError
from safetensors.torch import load_file

from .conftest import PHOTOS, batch_edit, write_pipeline_config
from .test_checkpoint_files import refusal, transformer_file


def test_bytes_past_the_last_tensor_are_refused_as_the_reader_refuses_them(tmp_path, tiny_model):
    whole = transformer_file(tiny_model)
    model = tmp_path / "flux.safetensors"
    model.write_bytes(whole + b"JUNK")
    try:
        load_file(str(model))
        raise AssertionError("the reader took a file with bytes past its last tensor")
    except SafetensorError as exc:
        assert "not fully covered" in str(exc)
    assert refusal(tmp_path, model, tiny_model) == (
        f"not a safetensors file the reader accepts: 4 byte(s) after the end of its last tensor "
        f"({len(whole) + 4:,} bytes, the header says {len(whole):,})"
    )


def test_plan_refuses_a_checkpoint_with_trailing_bytes_with_exit_2(tmp_path, tiny_model):
    model = tmp_path / "flux.safetensors"
    model.write_bytes(transformer_file(tiny_model) + b"\0" * 1000)
    config = write_pipeline_config(tmp_path / "p.yaml", model, base_model=tiny_model, quantization="{backend: none}")
    (tmp_path / "m.csv").write_text(f"source,prompt\n{PHOTOS / 'cat.jpg'},x\n")
    planned = batch_edit("plan", "m.csv", "--pipeline", str(config), cwd=tmp_path)
    assert planned.returncode == 2, planned.stderr
    assert (
        f"field 'model': {model.as_posix()}: not a safetensors file the reader accepts: 1,000 byte(s)" in planned.stderr
    )
