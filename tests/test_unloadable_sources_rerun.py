"""A rerun whose every item left failed to load its source in an earlier run (a truncated file, a file deleted) loads
those sources first and, where each fails again, records the failures without loading the model; an item of another
kind left, or a source that loads now, makes the run load the model as ever."""

from __future__ import annotations

import pandas as pd

from .conftest import PHOTOS, run_manifest
from .http_fixtures import LoopbackServer

LOADING = "batch-edit: loading "  # the line the model's load prints
NOT_LOADING = "batch-edit: not loading the model: the 1 item(s) left failed to load their source in an earlier run"


def _manifest(tmp_path, sources: str, prompts: str = "p") -> None:
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: j, sources: {sources}, prompts: {prompts}, width: 32, height: 32,"
        " num_inference_steps: 2, strength: 0.5, seed: 1}\n"
    )


def _failures(tmp_path) -> list[str]:
    return pd.read_csv(tmp_path / "out" / "j" / "failures.csv", dtype=str)["error"].tolist()


def test_a_truncated_source_left_alone_fails_again_without_the_model(tmp_path, tiny_config):
    (tmp_path / "bad.jpg").write_bytes((PHOTOS / "rocket.jpg").read_bytes()[:300])
    _manifest(tmp_path, f"[{PHOTOS / 'cat.jpg'}, bad.jpg]")
    first = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert LOADING in first and "1 written, 0 already done, 1 failed (truncated image: 1)" in first, first
    records = (tmp_path / "out" / "j" / ".batch-edit" / "records.jsonl").read_text().count("\n")
    again = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert LOADING not in again and f"{NOT_LOADING}, and fail again (truncated image: 1)" in again, again
    assert "0 written, 1 already done, 1 failed (truncated image: 1)" in again, again
    assert (tmp_path / "out" / "j" / ".batch-edit" / "records.jsonl").read_text().count("\n") == records + 1
    assert _failures(tmp_path) == ["truncated image"]
    # another item left (a new prompt): the model loads, and the truncated source fails with it as before
    _manifest(tmp_path, f"[{PHOTOS / 'cat.jpg'}, bad.jpg]", "[p, q]")
    mixed = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert LOADING in mixed and "1 written, 1 already done, 2 failed (truncated image: 2)" in mixed, mixed


def test_a_deleted_source_of_a_failed_item_fails_again_without_the_model(tmp_path, tiny_config):
    _manifest(tmp_path, f"[{PHOTOS / 'cat.jpg'}, gone.jpg]")
    assert "1 failed (file not found: 1)" in run_manifest(tmp_path, tiny_config, "run", code=1)
    again = run_manifest(tmp_path, tiny_config, "run", code=1)
    assert LOADING not in again and f"{NOT_LOADING}, and fail again (file not found: 1)" in again, again


def test_a_url_that_serves_again_is_made_with_the_model(tmp_path, tiny_config):
    with LoopbackServer(flaky_failures=3) as server:  # the first run's three attempts fail, later ones succeed
        _manifest(tmp_path, f"[{PHOTOS / 'cat.jpg'}, '{server.url('/flaky')}']")
        first = run_manifest(tmp_path, tiny_config, "run", "--allow-private-urls", code=1)
        assert "1 written, 0 already done, 1 failed" in first, first
        again = run_manifest(tmp_path, tiny_config, "run", "--allow-private-urls")
    assert "not loading the model" not in again and LOADING in again, again
    assert "1 written, 1 already done, 0 failed" in again, again
