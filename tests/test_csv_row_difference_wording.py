"""The refusal of CSV rows giving one item written in other ways names only what really differs: a quality only
where both rows' formats take one (a png row has none), a blank quality as the one it gets (95), never
"(default)"."""

from __future__ import annotations

import pytest

from .conftest import batch_edit, image_file

HEADER = "source,prompt,width,height,num_inference_steps,strength,format,quality,captions\n"
ROW = "a.png,x,64,64,2,0.5,{}\n"


def _refusal(tmp_path, config, first: str, second: str) -> str:
    image_file(tmp_path / "a.png")
    (tmp_path / "f.csv").write_text(HEADER + ROW.format(first) + ROW.format(second))
    result = batch_edit("plan", "f.csv", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "(default)" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    "first, second, differ, asked, hint",
    [
        ("png,,", "jpeg,80,", "format", "row 1: format png; row 2: format jpeg", "one job for each format"),
        ("webp,,", "png,,", "format", "row 1: format webp; row 2: format png", "one job for each format"),
        ("jpeg,80,", "jpeg,,", "quality", "row 1: quality 80; row 2: quality 95", "one job for each quality"),
        (
            "webp,90,true",
            "jpeg,,",
            "format, quality and captions",
            "row 1: format webp, quality 90, captions true; row 2: format jpeg, quality 95, captions false",
            "one job for each format, quality and captions setting",
        ),
        (
            "png,,",
            "png,,true",
            "captions",
            "row 1: captions false; row 2: captions true",
            "one job for each captions setting",
        ),
    ],
)
def test_the_refusal_names_only_what_really_differs(tmp_path, tiny_config, first, second, differ, asked, hint):
    stderr = _refusal(tmp_path, tiny_config, first, second)
    assert (
        f"rows 1 and 2 give the same item(s) (same source, prompt, parameters and seed) but differ in {differ} "
        f"({asked}); an item is written once: give such rows a 'job' column of their own ({hint})" in stderr
    ), stderr
