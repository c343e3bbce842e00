"""What a run keeps of what is already in a job folder: a caption edited by hand stays where it is, untouched,
when its image is made again; a kept source copy holds the bytes its item was made from (written again where it
was damaged); a finished item whose source went away stays done and listed, and a failure to make it again takes
its intact result away from no listing, nor gives it to `prune`."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from PIL import Image

from .conftest import batch_edit

YAML = """jobs:
  - {{name: ds, sources: {sources}, prompts: '{prompt}', seed: 5, file_name: '{{stem}}_edit', width: 64, height: 64,
     num_inference_steps: 2, strength: 0.5, format: {format}, {options}}}
"""


def _sources(folder, stems=("cat", "dog")) -> None:
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{stem}.png")


def _yaml(folder, sources="[cat.png, dog.png]", prompt="a fox", format="png", options="captions: true") -> str:
    (folder / "m.yaml").write_text(YAML.format(sources=sources, prompt=prompt, format=format, options=options))
    return "m.yaml"


def _run(folder, config, manifest: str, *args: str, code: int = 0) -> str:
    result = batch_edit(*args, manifest, "--pipeline", str(config), "--output-root", "out", cwd=folder)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


def _csv(path, name: str = "metadata.csv") -> pd.DataFrame:
    return pd.read_csv(path / name, dtype=str)


# ---------------------------------------------------------------- captions edited by hand


def test_a_caption_edited_by_hand_stays_in_place_when_its_image_is_made_again(tmp_path, tiny_config):
    _sources(tmp_path)
    manifest = _yaml(tmp_path)
    _run(tmp_path, tiny_config, manifest, "run")
    folder = tmp_path / "out" / "ds"
    caption, image = folder / "cat_edit.txt", folder / "cat_edit.png"
    caption.write_text("a tabby cat on a mat, by hand")
    image.unlink()  # to make it again
    output = _run(tmp_path, tiny_config, manifest, "run")
    assert "1 written" in output and "moved" not in output, output
    assert caption.read_text() == "a tabby cat on a mat, by hand" and image.is_file()
    caption.write_text("edited again")
    output = _run(tmp_path, tiny_config, manifest, "run", "--overwrite")
    assert "2 written" in output and "moved" not in output, output
    assert caption.read_text() == "edited again"
    assert (folder / "dog_edit.txt").read_text() == "a fox"  # the job's own caption, rewritten as it was
    assert not (folder / ".batch-edit" / "pruned").exists()
    assert _csv(folder).file_name.tolist() == ["cat_edit.png", "dog_edit.png"]


def test_a_caption_the_job_wrote_follows_a_new_prompt_and_one_edited_by_hand_does_not(tmp_path, tiny_config):
    _sources(tmp_path, ["cat"])
    _run(tmp_path, tiny_config, _yaml(tmp_path, "cat.png"), "run")
    folder = tmp_path / "out" / "ds"
    caption = folder / "cat_edit.txt"
    # a new prompt and format: a new item whose caption is the one the png's item wrote, holding its prompt
    output = _run(tmp_path, tiny_config, _yaml(tmp_path, "cat.png", "a wolf", "jpeg"), "run")
    assert "moved" not in output and caption.read_text() == "a wolf"
    caption.write_text("my own words")
    output = _run(tmp_path, tiny_config, _yaml(tmp_path, "cat.png", "a bird", "webp"), "run")
    assert "1 written" in output and "moved" not in output, output
    assert caption.read_text() == "my own words" and (folder / "cat_edit.webp").is_file()


# ---------------------------------------------------------------- kept source copies


def test_a_damaged_kept_copy_is_written_again_when_its_item_is_made_again(tmp_path, tiny_config):
    _sources(tmp_path)
    manifest = _yaml(tmp_path, options="keep_sources: true")
    _run(tmp_path, tiny_config, manifest, "run")
    folder = tmp_path / "out" / "ds"
    rows = _csv(folder)
    cat, dog = (folder / name for name in rows.source_image_file_name)
    kept = {path: path.read_bytes() for path in (cat, dog)}
    cat.write_bytes(b"")  # emptied
    dog.write_bytes(bytes(len(kept[dog])))  # the same size, other bytes
    _run(tmp_path, tiny_config, manifest, "run", "--overwrite")
    assert {path: path.read_bytes() for path in (cat, dog)} == kept
    assert _csv(folder).source_image_file_name.tolist() == rows.source_image_file_name.tolist()
    shutil.move(tmp_path / "cat.png", tmp_path / "cat.away.png")  # reproduce needs the kept copy now
    item = rows.item_id[0]
    reproduced = batch_edit("reproduce", str(folder / "metadata.csv"), "--item", item, "--pipeline", str(tiny_config))
    assert reproduced.returncode == 0 and "identical" in reproduced.stdout, reproduced.stdout + reproduced.stderr


def test_an_emptied_kept_copy_is_written_again_by_a_rerun_with_nothing_to_do(tmp_path, tiny_config):
    _sources(tmp_path, ["cat"])
    manifest = _yaml(tmp_path, "cat.png", options="keep_sources: true")
    _run(tmp_path, tiny_config, manifest, "run")
    folder = tmp_path / "out" / "ds"
    (copy,) = (folder / "sources").iterdir()
    kept = copy.read_bytes()
    copy.write_bytes(b"")
    assert "nothing to do" in _run(tmp_path, tiny_config, manifest, "run")
    assert copy.read_bytes() == kept


# ---------------------------------------------------------------- sources gone after their items were done


def _manifests(folder) -> dict[str, str]:
    (folder / "m.csv").write_text(
        "source,prompt,seed,width,height,num_inference_steps,strength\n"
        "cat.png,a,1,64,64,2,0.5\ndog.png,a,1,64,64,2,0.5\n"
    )
    return {"m.csv": "m", _yaml(folder, options="captions: false"): "ds"}


def test_a_finished_item_whose_source_went_away_stays_done_listed_and_kept_by_prune(tmp_path, tiny_config):
    _sources(tmp_path)
    for manifest, job in _manifests(tmp_path).items():  # a CSV and a YAML job, in folders of their own
        _run(tmp_path, tiny_config, manifest, "run")
        folder = tmp_path / "out" / job
        made = _csv(folder).file_name.tolist()
        shutil.move(tmp_path / "dog.png", tmp_path / "dog.archived.png")
        assert "nothing to do" in _run(tmp_path, tiny_config, manifest, "run")
        assert _csv(folder).file_name.tolist() == made and _csv(folder, "failures.csv").empty
        planned = _run(tmp_path, tiny_config, manifest, "plan")  # exit 0: a run would load nothing that is gone
        assert "gone: 1 source file(s) of items already done (their results stay)" in planned, planned
        assert "missing:" not in planned
        assert "would move 0, would reject 0, kept 2" in _run(tmp_path, tiny_config, manifest, "prune", "--dry-run")
        dog = folder / made[1]
        image = dog.read_bytes()
        # made again: it fails as "file not found", and its result, still there, keeps it done (archived: no run
        # could make it again), so failures.csv does not list it
        output = _run(tmp_path, tiny_config, manifest, "run", "--overwrite", code=1)
        assert "1 written" in output and "1 failed (file not found: 1)" in output, output
        assert _csv(folder).file_name.tolist() == made and dog.read_bytes() == image
        assert _csv(folder, "failures.csv").empty
        assert "would move 0, would reject 0, kept 2" in _run(tmp_path, tiny_config, manifest, "prune", "--dry-run")
        shutil.move(tmp_path / "dog.archived.png", tmp_path / "dog.png")
        assert "1 written" in _run(tmp_path, tiny_config, manifest, "run")  # back: the failed item is retried
        assert _csv(folder, "failures.csv").empty and _csv(folder).file_name.tolist() == made


def test_a_source_changed_into_one_that_fails_leaves_its_earlier_result_listed(tmp_path, tiny_config):
    _sources(tmp_path)
    manifest = _yaml(tmp_path, options="captions: false")
    _run(tmp_path, tiny_config, manifest, "run")
    folder = tmp_path / "out" / "ds"
    (tmp_path / "dog.png").write_bytes(b"not an image any more")  # new content: a new item, which fails
    output = _run(tmp_path, tiny_config, manifest, "run", code=1)
    assert "1 failed" in output, output
    rows = _csv(folder)
    assert rows.file_name.tolist() == ["cat_edit.png", "dog_edit.png"]  # the earlier content's result, listed last
    assert rows["index"].isna().tolist() == [False, True]
    assert len(_csv(folder, "failures.csv")) == 1
