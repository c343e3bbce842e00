"""CSV rows giving the same item in another format, quality or captions are refused (one item is written once),
naming both rows and what differs, as a YAML job's list of formats is; rows alike in those still merge."""

from __future__ import annotations

from .conftest import batch_edit, image_file

HEADER = "source,prompt,width,height,num_inference_steps,strength,format,quality,captions\n"
ROW = "a.png,x,64,64,2,0.5,{}\n"


def test_rows_asking_one_item_in_other_formats_are_refused_naming_rows_and_columns(tmp_path, tiny_config):
    image_file(tmp_path / "a.png")
    rows = [ROW.format("png,,"), ROW.format("jpeg,80,true"), ROW.format("png,,")]
    (tmp_path / "fmt.csv").write_text(HEADER + "".join(rows))
    for command in ("plan", "run"):
        result = batch_edit(command, "fmt.csv", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "rows 1 and 2 give the same item(s)" in result.stderr, result.stderr
        assert "differ in format and captions" in result.stderr  # a png row takes no quality: not a difference
        assert "row 1: format png, captions false; row 2: format jpeg, captions true" in result.stderr
        assert "rows 1 and 3" not in result.stderr  # the same output: merged, as before
    assert not (tmp_path / "out" / "fmt").exists()


def test_rows_alike_in_format_still_merge_with_a_warning(tmp_path, tiny_config):
    image_file(tmp_path / "a.png")
    (tmp_path / "fmt.csv").write_text(HEADER + ROW.format("jpeg,80,") + ROW.format("jpeg,80,"))
    result = batch_edit("plan", "fmt.csv", "--pipeline", str(tiny_config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "row 2 gives the same item(s) as row 1" in result.stderr
