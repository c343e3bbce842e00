"""`contact_sheets: false` in a YAML job (or its `defaults:`): no contact sheet is drawn, those drawn before are
removed, and turning it back on draws them at the next run or prune, the results untouched throughout. A CSV
cannot set it."""

from __future__ import annotations

import pandas as pd

from .conftest import PHOTOS, batch_edit, run_manifest

SOURCES = f"[{PHOTOS / 'cat.jpg'}, {PHOTOS / 'coffee.jpg'}]"


def _manifest(tmp_path, sheets: str = "", defaults: str = "", strengths: str = "[0.5, 0.7]") -> None:
    (tmp_path / "m.yaml").write_text(
        f"{defaults}jobs:\n  - {{name: j, sources: {SOURCES}, prompts: p, width: 16, height: 16, "
        f"strength: {strengths}, num_inference_steps: 2, seed: 1{sheets}}}\n"
    )


def _sheets(tmp_path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "out" / "j").glob("contact-sheet-*.png"))


def _results(tmp_path) -> dict[str, int]:
    folder = tmp_path / "out" / "j"
    return {name: (folder / name).stat().st_mtime_ns for name in pd.read_csv(folder / "metadata.csv")["file_name"]}


def test_sheets_off_draws_none_and_removes_those_drawn_and_on_again_draws_them(tmp_path, tiny_config):
    _manifest(tmp_path)
    assert "4 written" in run_manifest(tmp_path, tiny_config, "run")
    drawn = _sheets(tmp_path)
    assert drawn == ["contact-sheet-cat.png", "contact-sheet-coffee.png"]
    results = _results(tmp_path)
    _manifest(tmp_path, sheets=", contact_sheets: false")
    assert "0 written, 4 already done" in run_manifest(tmp_path, tiny_config, "run")
    assert _sheets(tmp_path) == [] and _results(tmp_path) == results
    _manifest(tmp_path, sheets=", contact_sheets: false", strengths="[0.5, 0.7, 0.9]")  # new results: still none
    assert "2 written, 4 already done" in run_manifest(tmp_path, tiny_config, "run")
    assert _sheets(tmp_path) == []
    _manifest(tmp_path, strengths="[0.5, 0.7, 0.9]")  # on again: nothing to make, the sheets are drawn
    assert "0 written, 6 already done" in run_manifest(tmp_path, tiny_config, "run")
    assert _sheets(tmp_path) == drawn


def test_prune_follows_the_setting_and_defaults_may_set_it(tmp_path, tiny_config):
    _manifest(tmp_path, defaults="defaults: {contact_sheets: false}\n")
    assert "4 written" in run_manifest(tmp_path, tiny_config, "run")
    assert _sheets(tmp_path) == []
    _manifest(tmp_path, defaults="defaults: {contact_sheets: false}\n", strengths="0.5")
    assert "moved 2" in run_manifest(tmp_path, tiny_config, "prune")
    assert _sheets(tmp_path) == []
    _manifest(tmp_path, strengths="0.5")
    run_manifest(tmp_path, tiny_config, "prune")
    assert _sheets(tmp_path) == ["contact-sheet-cat.png", "contact-sheet-coffee.png"]


def test_a_csv_cannot_set_it(tmp_path, tiny_config):
    (tmp_path / "m.csv").write_text(f"source,prompt,contact_sheets\n{PHOTOS / 'cat.jpg'},p,false\n")
    result = batch_edit("plan", "m.csv", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 2
    assert "column 'contact_sheets': only YAML manifests support 'contact_sheets'" in result.stderr, result.stderr
