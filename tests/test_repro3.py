"""`reproduce`: a config whose task does not fit the item refused before the model loads; a URL source whose
served content changed replaced by its kept copy (the run hashes the bytes it fetched); a kept copy resized or
edited since the run refused."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest
from PIL import Image

from batch_edit.reproduce import ReproduceError, reproduce

from .conftest import PHOTOS
from .http_fixtures import LoopbackServer
from .test_repro2 import masked_run, one_line_refusal, reproduced
from .test_repro_masks import kept_job, run_kept


def no_engine(config):
    pytest.fail("the model must not load for an item the config's task cannot re-render")


def test_an_inpaint_item_with_an_img2img_config_is_refused_before_the_model_loads(
    tmp_path, tiny_config, tiny_task_config
):
    metadata, row = masked_run(tmp_path, tiny_task_config)
    line = one_line_refusal(reproduced(metadata, row.item_id, "--pipeline", str(tiny_config)))
    assert f"item {row.item_id} has a mask, but the img2img task of the pipeline config takes no mask" in line
    with pytest.raises(ReproduceError, match="takes no mask"):
        reproduce(metadata, row.item_id, tiny_config, no_engine)


def test_an_item_without_a_mask_with_an_inpaint_config_is_refused_before_the_model_loads(
    tmp_path, tiny_config, tiny_task_config
):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg", keep=False))
    inpaint = tiny_task_config("inpaint")
    line = one_line_refusal(reproduced(metadata, rows.item_id[0], "--pipeline", str(inpaint)))
    assert "has no mask, but the inpaint task of the pipeline config needs one" in line
    with pytest.raises(ReproduceError, match="needs one"):
        reproduce(metadata, rows.item_id[0], inpaint, no_engine)


class RefusingEngine:
    """Simulates an engine check the tiny model passes: the engine refusing what it is given."""

    def generate(self, items, images, **masks):
        raise ValueError("a batch must share size, steps, strength and guidance")


def test_a_value_the_engine_refuses_is_a_clear_error_not_a_traceback(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg", keep=False))
    with pytest.raises(ReproduceError, match=r"the pipeline cannot re-render it: a batch must share size"):
        reproduce(metadata, rows.item_id[0], None, lambda config: RefusingEngine())


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_url_whose_served_content_changed_is_replaced_by_its_kept_copy(tmp_path, tiny_config):
    with LoopbackServer(image=png((200, 100, 50))) as server:
        metadata, rows = run_kept(tmp_path, tiny_config, kept_job(server.url("/ok.png")), "--allow-private-urls")
        records = (metadata.parent / ".batch-edit" / "records.jsonl").read_text().splitlines()
        assert json.loads(records[-1])["source_sha256"] == hashlib.sha256(server.image).hexdigest()
        server.image = png((10, 200, 10))  # the same URL now serves other content
        again = reproduced(metadata, rows.item_id[0], "--allow-private-urls")
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr
    assert f"(from the kept source copy {rows.source_image_file_name[0]})" in again.stdout
    assert "the source's content has changed since the run" in again.stdout


def kept_copy_run(tmp_path, tiny_config):
    shutil.copy(PHOTOS / "cat.jpg", tmp_path / "photo.jpg")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("photo.jpg"))
    (tmp_path / "photo.jpg").unlink()  # the kept copy stands in for it
    return metadata, rows.item_id[0], metadata.parent / rows.source_image_file_name[0]


def test_a_kept_copy_of_another_size_than_the_item_is_refused(tmp_path, tiny_config):
    metadata, item, kept = kept_copy_run(tmp_path, tiny_config)
    with Image.open(kept) as image:
        image.resize((32, 32)).save(kept)
    line = one_line_refusal(reproduced(metadata, item))
    assert f"cannot use the kept copy {kept}" in line
    assert "it is 32x32, not the 64x48 the item was rendered at: resized since the run" in line


def test_a_kept_copy_edited_since_the_run_is_refused(tmp_path, tiny_config):
    metadata, item, kept = kept_copy_run(tmp_path, tiny_config)
    with Image.open(kept) as image:
        image.point(lambda v: 255 - v).save(kept)
    line = one_line_refusal(reproduced(metadata, item))
    assert "its pixels are not those the run kept (their sha256 is not the one recorded)" in line


def test_a_kept_copy_recompressed_is_still_the_run_s_image(tmp_path, tiny_config):
    metadata, item, kept = kept_copy_run(tmp_path, tiny_config)
    with Image.open(kept) as image:
        image.load()
        image.save(kept, compress_level=0)  # other bytes, the same pixels
    again = reproduced(metadata, item)
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr


def test_a_fit_item_is_reproduced_from_its_kept_copy_at_the_fitted_size(tmp_path, tiny_config):
    Image.new("RGB", (100, 30), (200, 40, 40)).save(tmp_path / "red.png")
    metadata, rows = run_kept(tmp_path, tiny_config, kept_job("red.png", extra="    resize: fit\n"))
    assert (rows.width[0], rows.height[0]) != (64, 48)  # fit kept the source's shape: another size than asked
    (tmp_path / "red.png").unlink()
    again = reproduced(metadata, rows.item_id[0])
    assert again.returncode == 0 and again.stdout.startswith("identical"), again.stdout + again.stderr
    assert "from the kept source copy" in again.stdout
