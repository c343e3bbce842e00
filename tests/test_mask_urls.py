"""Masks given as http(s) URLs, in a YAML job's `masks:` and a CSV row's `mask`: fetched like sources (same
deadline, size cap and address checks), and a mask that cannot be fetched fails its item only."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from .conftest import PHOTOS, batch_edit
from .http_fixtures import LoopbackServer


def box_mask() -> bytes:
    """64x48, white (repainted) in a box in the middle, black elsewhere."""
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 12, 48, 36))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def job(name: str, masks: str) -> str:
    return f"""
  - name: {name}
    sources: {PHOTOS / "cat.jpg"}
    masks: {masks}
    prompts: a tiger
    num_inference_steps: 4
    seed: 1
    width: 64
    height: 48
"""


def rows_csv(rows: list[tuple[str, str]]) -> str:
    lines = ["source,mask,prompt,num_inference_steps,seed,width,height"]
    lines += [f"{PHOTOS / source},{mask},a tiger,4,1,64,48" for source, mask in rows]
    return "\n".join(lines) + "\n"


def run(tmp_path, config, *manifests: str):
    return batch_edit("run", *manifests, "--pipeline", str(config), "--output-root", "out", "--allow-private-urls",
                      cwd=tmp_path)  # fmt: skip


def result_pixels(folder) -> tuple[pd.Series, np.ndarray]:
    (row,) = [row for _, row in pd.read_csv(folder / "metadata.csv").iterrows()]
    with Image.open(folder / row["file_name"]) as image:
        return row, np.asarray(image.convert("RGB"))


def test_a_url_mask_repaints_as_the_same_mask_file_does(tmp_path, tiny_task_config):
    (tmp_path / "mask.png").write_bytes(box_mask())
    with LoopbackServer(image=box_mask()) as server:
        url = server.url("/ok.png")
        (tmp_path / "m.yaml").write_text("jobs:" + job("by-url", url) + job("by-file", "mask.png"))
        (tmp_path / "rows.csv").write_text(rows_csv([("cat.jpg", url)]))
        result = run(tmp_path, tiny_task_config("inpaint"), "m.yaml", "rows.csv")
    assert result.returncode == 0, result.stderr
    by_file, expected = result_pixels(tmp_path / "out" / "by-file")
    for name in ("by-url", "rows"):
        row, pixels = result_pixels(tmp_path / "out" / name)
        assert row["mask"] == url and row["seed"] == by_file["seed"]
        assert np.array_equal(pixels, expected), f"{name}: not the image the same mask as a file gives"
    assert server.hits["/ok.png"] >= 1


def test_a_url_mask_that_cannot_be_fetched_fails_its_item_only_with_the_reason(tmp_path, tiny_task_config):
    with LoopbackServer(image=box_mask()) as server:
        rows = [("cat.jpg", server.url("/ok.png")), ("coffee.jpg", server.url("/404")),
                ("rocket.jpg", server.url("/html"))]  # fmt: skip
        (tmp_path / "rows.csv").write_text(rows_csv(rows))
        result = run(tmp_path, tiny_task_config("inpaint"), "rows.csv")
    assert result.returncode == 1, result.stderr
    folder = tmp_path / "out" / "rows"
    done = pd.read_csv(folder / "metadata.csv")
    assert list(done["mask"]) == [server.url("/ok.png")]
    failures = pd.read_csv(folder / "failures.csv").set_index("mask")
    assert set(failures["stage"]) == {"load"}
    assert failures.loc[server.url("/404"), "error"].startswith("mask: HTTP 404")
    assert failures.loc[server.url("/html"), "error"] == "mask: not an image"
    assert server.hits["/404"] == 1, "a 4xx is not retried"


def test_a_url_mask_at_a_private_address_is_refused_by_default_as_a_source_is(tmp_path, tiny_task_config):
    with LoopbackServer(image=box_mask()) as server:
        (tmp_path / "rows.csv").write_text(rows_csv([("cat.jpg", server.url("/ok.png"))]))
        result = batch_edit("run", "rows.csv", "--pipeline", str(tiny_task_config("inpaint")), "--output-root", "out",
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    failures = pd.read_csv(tmp_path / "out" / "rows" / "failures.csv")
    assert list(failures["error"]) == ["mask: private address 127.0.0.1 refused (--allow-private-urls allows it)"]
    assert server.hits["/ok.png"] == 0
