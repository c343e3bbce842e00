"""benchmarks/prompt_memory.py on the tiny model: the table shows what an embedding made with autograd on holds
(its graph's activations, and the encoders' weights it references) against the engine's, which holds only the
embeddings themselves."""

from __future__ import annotations

import sys

from .conftest import REPO
from .test_benchmarks import table_rows

sys.path.insert(0, str(REPO / "benchmarks"))
import prompt_memory  # noqa: E402


def test_the_table_shows_the_graph_autograd_kept_and_the_engine_keeps_none(tmp_path, tiny_model, capsys):
    out = tmp_path / "prompt_memory.md"
    assert prompt_memory.main(["--device", "cpu", "--dtype", "float32", "--model", str(tiny_model),
                               "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == out.read_text().strip()
    header, rows = table_rows(out.read_text())
    by_mode = {row["encoded by"]: row for row in rows}
    assert set(by_mode) == {"autograd on", "engine"} and all(row["prompts kept"] == "2" for row in rows)
    held, weights = "held GiB (activations, embeddings)", "encoder weights referenced GiB"
    assert by_mode["autograd on"]["autograd graph kept"] == "yes" and by_mode["engine"]["autograd graph kept"] == "no"
    assert float(by_mode["engine"][weights]) == 0.0
    # The tiny T5's graph over 512 tokens: megabytes, against the engine's two small embeddings.
    assert float(by_mode["autograd on"][held]) > 0.005 > float(by_mode["engine"][held])
    assert float(by_mode["autograd on"][weights]) > 0.0
