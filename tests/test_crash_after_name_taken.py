"""A `file_name` without {id} gives a new item the name of another item's result, which the run moves to
.batch-edit/pruned/ before writing the new one. A run killed (kill -9) right after that write must not leave a
metadata.csv whose row for that name still describes the earlier item: no row describes another item's image."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

from PIL import Image

from batch_edit.formats import embedded_record

from .conftest import PHOTOS, _command, run_manifest

YAML = f"""jobs:
  - name: named
    sources: [{PHOTOS / "cat.jpg"}, {PHOTOS / "coffee.jpg"}]
    prompts: a tiger
    strength: 0.5
    seed: [1, 2]
    num_inference_steps: 2
    width: 64
    height: 64
    file_name: "{{stem}}-{{seed}}"
"""

# Kills the run (as kill -9 would: no cleanup, no CSV rebuild) right after the first result written under a name
# another item's result had, that result moved out.
KILL_AFTER_TAKING_A_NAME = """
import os
from batch_edit.outputs import JobOutput

_write_result = JobOutput.write_result

def write_result(self, item, result):
    _write_result(self, item, result)
    if self.moved_earlier:
        os._exit(137)

JobOutput.write_result = write_result
"""


def _rows_and_their_images(folder: Path) -> list[tuple[str, str | None]]:
    """(row's item id, item id embedded in the image the row names) per metadata.csv row."""
    with open(folder / "metadata.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = []
    for row in rows:
        with Image.open(folder / row["file_name"]) as image:
            pairs.append((row["item_id"], (embedded_record(image) or {}).get("item_id")))
    return pairs


def test_a_run_killed_after_taking_a_name_leaves_no_row_describing_another_items_image(tmp_path, tiny_config):
    (tmp_path / "m.yaml").write_text(YAML)
    run_manifest(tmp_path, tiny_config, "run")
    folder = tmp_path / "out" / "named"
    before = _rows_and_their_images(folder)
    assert len(before) == 4 and all(row == image for row, image in before), before

    (tmp_path / "m.yaml").write_text(YAML.replace("strength: 0.5", "strength: 0.7"))  # new items, the same names
    injector = tmp_path / "injector"
    injector.mkdir()
    (injector / "sitecustomize.py").write_text(KILL_AFTER_TAKING_A_NAME)
    paths = os.pathsep.join([str(injector), os.environ.get("PYTHONPATH", "")])
    command, env = _command(
        ("run", "m.yaml", "--pipeline", str(tiny_config), "--output-root", "out"), {**os.environ, "PYTHONPATH": paths}
    )
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stdout + killed.stderr
    assert any((folder / ".batch-edit" / "pruned").iterdir())  # an earlier result was moved out, a new one written

    after = _rows_and_their_images(folder)
    wrong = [(row, image) for row, image in after if row != image]
    assert not wrong, f"metadata.csv rows naming another item's image: {wrong}"

    run_manifest(tmp_path, tiny_config, "run")  # the next run lists all four new results
    final = _rows_and_their_images(folder)
    assert len(final) == 4 and all(row == image for row, image in final), final
