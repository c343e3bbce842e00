"""A `file_name` without {id} gives a new item the name of another item's result: the run moves that result and its
caption (edited by hand or not) to .batch-edit/pruned/ first, and its summary says so per job; `plan` says it
ahead of time."""

from __future__ import annotations


from .conftest import noise_image as _image, run_manifest as _run

YAML = """jobs:
  - {name: capt, sources: img/, prompts: "a photo of {stem}", file_name: "{stem}", captions: true, width: 64,
     height: 64, num_inference_steps: 2, strength: 0.5}
"""


def test_a_run_says_which_earlier_results_it_moved_out_to_take_their_names(tmp_path, tiny_config):
    _image(tmp_path / "img" / "cat.png", 1)
    _image(tmp_path / "img" / "dog.png", 2)
    (tmp_path / "m.yaml").write_text(YAML)
    first = _run(tmp_path, tiny_config, "run")
    assert "moved" not in first, first
    folder = tmp_path / "out" / "capt"
    (folder / "cat.txt").write_text("MY CAREFUL HAND CAPTION")
    _image(tmp_path / "img" / "cat.png", 3)  # new content under the same name: a new item named cat.png

    planned = _run(tmp_path, tiny_config, "plan")
    assert "1 earlier result(s) of other items (with any caption files) will move to .batch-edit/pruned/" in planned
    assert "their names: cat.png" in planned, planned

    ran = _run(tmp_path, tiny_config, "run")
    line = (
        "job capt: moved 1 earlier result(s) of other items and 1 caption file(s) to .batch-edit/pruned/ before "
        "writing new results under their names: cat.png"
    )
    assert line in ran, ran
    assert (folder / ".batch-edit" / "pruned" / "cat.txt").read_text() == "MY CAREFUL HAND CAPTION"
    assert "moved" not in _run(tmp_path, tiny_config, "run")  # said once: nothing moved again
