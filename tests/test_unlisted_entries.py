"""A folder or glob entry with an image's name that is no regular file (a link left pointing at a deleted photo, a
link loop, a FIFO, a link to a device) makes no item, and `plan` and `run` say which ones they left out and what
each is. A folder named like an image, and what `exclude` leaves out, are not reported; a pattern that leaves out
only such an entry is in use."""

from __future__ import annotations

import os

from .conftest import image_file, run_manifest

WARNING = "warning: job j: left out {n} entr{y} of its folders and globs with an image's name that {are}: "


def _folder(tmp_path, extra: int = 0):
    photos = tmp_path / "photos"
    image_file(photos / "a.png", (32, 32))
    (photos / "gone.png").symlink_to(tmp_path / "deleted.png")
    (photos / "loop.png").symlink_to("loop.png")
    (photos / "null.jpg").symlink_to(os.devnull)
    os.mkfifo(photos / "pipe.png")
    (photos / "album.png").mkdir()  # a folder named like an image: just a folder
    image_file(photos / "album.png" / "b.png", (32, 32))
    (photos / ".hidden.png").symlink_to(tmp_path / "deleted.png")  # dot-names are never listed
    for n in range(extra):
        (photos / f"more{n}.png").symlink_to(tmp_path / "deleted.png")


def _manifest(tmp_path, sources="photos/", exclude=""):
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: j, sources: {sources}, recursive: true, prompts: p, width: 16, height: 16, "
        f"strength: 0.5, num_inference_steps: 2{exclude}}}\n"
    )


def _warning(count: int) -> str:
    return WARNING.format(n=count, y="y" if count == 1 else "ies", are="are not regular files")


def test_plan_and_run_name_each_entry_left_out_and_what_it_is(tmp_path, tiny_config):
    _folder(tmp_path)
    _manifest(tmp_path)
    folder = tmp_path / "photos"
    listed = ", ".join(
        f"{folder / name} ({kind})"
        for name, kind in [
            ("gone.png", "a link to nothing"),
            ("loop.png", "a link loop"),
            ("null.jpg", "character device"),
            ("pipe.png", "fifo"),
        ]
    )
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 2 item(s)" in planned, planned
    assert _warning(4) + listed + "\n" in planned, planned
    printed = run_manifest(tmp_path, tiny_config, "run")  # nothing hangs on the FIFO
    assert _warning(4) + listed + "\n" in printed and "2 written" in printed, printed


def test_a_glob_reports_them_too_and_more_than_five_are_counted(tmp_path, tiny_config):
    _folder(tmp_path, extra=3)
    _manifest(tmp_path, sources='["photos/*"]')
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert "job j: 1 item(s)" in planned, planned
    line = next(line for line in planned.splitlines() if line.startswith(_warning(7)))
    assert line.endswith(" and 2 more") and line.count(" (a link to nothing)") == 4, line


def test_a_glob_finding_only_such_entries_is_refused_naming_them(tmp_path, tiny_config):
    _folder(tmp_path)
    _manifest(tmp_path, sources='["photos/*.jpg"]')
    refused = run_manifest(tmp_path, tiny_config, "plan", code=2)
    assert (
        "source 'photos/*.jpg' matches no image (looked for .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp); with "
        f"an image's name it finds only what is not a regular file: {tmp_path / 'photos' / 'null.jpg'} "
        "(character device)\n"
    ) in refused, refused


def test_exclude_silences_an_entry_and_its_pattern_counts_as_used(tmp_path, tiny_config):
    _folder(tmp_path)
    _manifest(tmp_path, exclude=", exclude: [gone.png, loop.png, null.jpg]")
    planned = run_manifest(tmp_path, tiny_config, "plan")
    assert (
        _warning(1).replace("entries", "entry").replace("are not regular files", "is not a regular file")
        + (f"{tmp_path / 'photos' / 'pipe.png'} (fifo)\n")
        in planned
    ), planned
    assert "leave out no image" not in planned and "excluded:" not in planned, planned


def test_a_folder_of_images_alone_says_nothing(tmp_path, tiny_config):
    image_file(tmp_path / "photos" / "a.png", (32, 32))
    _manifest(tmp_path)
    assert "left out" not in run_manifest(tmp_path, tiny_config, "plan")
