"""batch_edit.sources: spec expansion, loading every awkward-but-valid image, refusing broken ones, sizing."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import urllib3.connection
from PIL import Image

from batch_edit import fetch as fetch_module
from batch_edit import source_decoding
from batch_edit.source_decoding import SourceError, decode_image, to_rgb
from batch_edit.sources import (
    IMAGE_SUFFIXES,
    RESIZE_MODES,
    FetchOptions,
    SourceRef,
    SourceSpecError,
    center_crop_box,
    expand_source,
    fit_image,
    fit_size,
    load_image,
    pad_layout,
    source_ref,
)
from tests.http_fixtures import LoopbackServer, loopback_server, png_bytes, png_header, self_signed_cert  # noqa: F401 (fixture)

IMAGES = Path(__file__).resolve().parents[1] / "jobs" / "images"
PHOTOS = {"cat.jpg": (451, 300), "coffee.jpg": (600, 400), "rocket.jpg": (640, 427), "astronaut.jpg": (512, 512)}


def local(path: Path) -> SourceRef:
    return source_ref(str(path), path.parent)


def load_path(path: Path) -> Image.Image:
    return load_image(local(path))


def px(img: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return img.getpixel(xy)


def close_to(actual, expected, tol=12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


# ---------------------------------------------------------------- sizing, by hand


def test_center_crop_box_hand_computed():
    # 451x300 into a square: keep 300x300, (451 - 300) / 2 = 75.5 trimmed on each side.
    assert center_crop_box(451, 300, 64, 64) == (75.5, 0, 375.5, 300)
    # 512x512 into 16:9 width-major: crop height = 512 * 9 / 16 = 288, top = (512 - 288) / 2 = 112.
    assert center_crop_box(512, 512, 1024, 576) == (0, 112, 512, 400)
    # Same aspect: the whole image.
    assert center_crop_box(600, 400, 1200, 800) == (0, 0, 600, 400)


def test_pad_layout_hand_computed():
    # 600x400 into 64x64: scale 64/600; 600 -> 64, 400 -> 42.67 -> 43; y = (64 - 43) // 2 = 10.
    assert pad_layout(600, 400, 64, 64) == (64, 43, 0, 10)
    # 300x451 (portrait) into 64x64: scale 64/451; 300 -> 42.57 -> 43; x = (64 - 43) // 2 = 10.
    assert pad_layout(300, 451, 64, 64) == (43, 64, 10, 0)


def test_fit_size_hand_computed():
    # 451x300, area 1024*1024: aspect = 1.50333, sqrt = 1.22610.
    # w = 1024 * 1.22610 = 1255.5 -> 1255.5/16 = 78.47 -> 78*16 = 1248
    # h = 1024 / 1.22610 = 835.2  -> 835.2/16  = 52.20 -> 52*16 = 832
    assert fit_size(451, 300, 1024, 1024, "fit") == (1248, 832)
    # A square source keeps the target area's square root per side: 1024x1024 -> 1024x1024.
    assert fit_size(512, 512, 1024, 1024, "fit") == (1024, 1024)
    # Every other mode returns the target as given.
    for mode in ("center-crop", "pad", "stretch"):
        assert fit_size(451, 300, 768, 512, mode) == (768, 512)


def test_fit_size_extreme_aspects_clamp():
    # 10000x10: w = 1024*sqrt(1000) = 32382 -> 4096; h = 1024/31.62 = 32.4 -> 32.
    assert fit_size(10000, 10, 1024, 1024, "fit") == (4096, 32)
    # 1x100000: w = 1024/316.2 = 3.2 -> rounds to 0 -> clamped up to 16; h huge -> 4096.
    assert fit_size(1, 100000, 1024, 1024, "fit") == (16, 4096)
    w, h = fit_size(3, 7, 200, 300, "fit")
    assert w % 16 == 0 and h % 16 == 0 and 16 <= min(w, h) and max(w, h) <= 4096


def test_fit_size_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown resize mode 'zoom'"):
        fit_size(10, 10, 64, 64, "zoom")


# ---------------------------------------------------------------- fit_image on the real photos


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_every_mode_gives_the_exact_size(name, mode):
    img = load_path(IMAGES / name)
    assert img.size == PHOTOS[name] and img.mode == "RGB"
    out = fit_image(img, 128, 96, mode)
    assert out.mode == "RGB"
    assert out.size == fit_size(*PHOTOS[name], 128, 96, mode)
    if mode != "fit":
        assert out.size == (128, 96)


def test_fit_mode_on_photo_keeps_aspect():
    out = fit_image(load_path(IMAGES / "rocket.jpg"), 512, 512, "fit")  # 640x427
    assert out.size == fit_size(640, 427, 512, 512, "fit") == (624, 416)
    assert abs(out.width / out.height - 640 / 427) < 0.02


def test_pad_leaves_black_bars_where_computed():
    img = load_path(IMAGES / "coffee.jpg")  # 600x400 -> 64x43 at y=10 inside 64x64
    arr = np.asarray(fit_image(img, 64, 64, "pad")).astype(int)
    assert arr.shape == (64, 64, 3)
    assert arr[:10].max() == 0 and arr[53:].max() == 0  # bars: rows 0-9 and 53-63
    assert arr[10:53].mean() > 20  # the photo itself is not black


def test_center_crop_keeps_the_center_color():
    # 300x100: red border, green 100x100 middle square. A square crop is exactly that square.
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 255, 0), (100, 0, 200, 100))
    out = fit_image(img, 32, 32, "center-crop")
    arr = np.asarray(out).astype(int)
    assert out.size == (32, 32)
    assert close_to(arr[2:-2, 2:-2].reshape(-1, 3).min(0), (0, 255, 0), 2)
    assert arr[2:-2, 2:-2, 0].max() <= 2  # no red leaked in
    # Stretch, by contrast, keeps the red sides.
    assert px(fit_image(img, 32, 32, "stretch"), (0, 16))[0] > 200


# ---------------------------------------------------------------- awkward but valid files


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    assert close_to(px(load_path(path), (16, 16)), (255, 0, 0))


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (16, 16), 40000).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    assert px(load_path(path), (3, 3)) == (156, 156, 156)  # 40000 / 257 = 155.6, not 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_deep_modes_in_memory(mode):
    img = Image.new(mode, (4, 4), 40000)
    assert px(to_rgb(img)) == (156, 156, 156)


def test_float_mode():
    assert px(to_rgb(Image.new("F", (4, 4), 0.5))) == (128, 128, 128)  # 0..1 floats scaled
    assert px(to_rgb(Image.new("F", (4, 4), 200.0))) == (200, 200, 200)  # otherwise 0..255


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)  # 0 green (transparent), 1 red
    img.paste(1, (4, 0, 8, 8))
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    out = load_path(path)
    assert px(out, (1, 1)) == (255, 255, 255)  # transparent green -> white, not green
    assert px(out, (6, 1)) == (255, 0, 0)


def test_palette_png_without_transparency(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 255, 0] + [0, 0, 255] + [0, 0, 0] * 254)
    img.save(tmp_path / "pal.png")
    assert px(load_path(tmp_path / "pal.png")) == (0, 0, 255)


def test_rgba_png_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    img.save(tmp_path / "a.png")
    out = load_path(tmp_path / "a.png")
    assert px(out, (0, 0)) == (255, 255, 255)
    assert px(out, (1, 0)) == (0, 0, 255)
    assert close_to(px(out, (2, 0)), (127, 127, 127), 2)  # half black over white


def test_exif_rotated_jpeg(tmp_path):
    img = Image.new("RGB", (60, 40), (255, 0, 0))
    img.paste((0, 0, 255), (30, 0, 60, 40))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif)
    out = load_path(tmp_path / "rot.jpg")
    assert out.size == (40, 60)  # sides swapped
    assert close_to(px(out, (20, 5)), (255, 0, 0), 30)  # the left side is now on top
    assert close_to(px(out, (20, 55)), (0, 0, 255), 30)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    assert px(load_path(tmp_path / "anim.gif")) == (255, 0, 0)


def test_la_png(tmp_path):
    img = Image.new("LA", (2, 1))
    img.putdata([(0, 0), (50, 255)])
    img.save(tmp_path / "la.png")
    out = load_path(tmp_path / "la.png")
    assert px(out, (0, 0)) == (255, 255, 255)
    assert px(out, (1, 0)) == (50, 50, 50)


def test_one_bit_png(tmp_path):
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "bw.png")
    out = load_path(tmp_path / "bw.png")
    assert (px(out, (0, 0)), px(out, (1, 0))) == ((0, 0, 0), (255, 255, 255))


@pytest.mark.parametrize("fmt,suffix", [("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_other_formats(tmp_path, fmt, suffix):
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / f"x{suffix}", fmt, lossless=True)
    assert close_to(px(load_path(tmp_path / f"x{suffix}")), (10, 200, 30), 3)


# ---------------------------------------------------------------- broken files


def load_error(path: Path) -> str:
    with pytest.raises(SourceError) as info:
        load_path(path)
    return str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    assert load_error(path) == f"file not found: {path.as_posix()}"


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert load_error(tmp_path / "empty.jpg") == "empty file"


def test_text_named_jpg(tmp_path):
    (tmp_path / "fake.jpg").write_text("hello, I am not a picture\n")
    assert load_error(tmp_path / "fake.jpg") == "not an image"


def test_unsupported_format_is_not_an_image(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg", "PPM")  # a real image, but not a decoder we allow
    assert load_error(tmp_path / "x.jpg") == "not an image"


def test_truncated_jpeg(tmp_path):
    data = (IMAGES / "cat.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert load_error(tmp_path / "half.jpg") == "truncated image"


def test_folder_as_file(tmp_path):
    ref = SourceRef(key=tmp_path.as_posix(), is_url=False, stem="x", fingerprint="", caption=None)
    with pytest.raises(SourceError, match="is a folder"):
        load_image(ref)


def test_bomb_header_over_the_pixel_limit(tmp_path):
    # 40000x40000 = 1.6e9 pixels: refused from the header, before any pixel is decoded.
    (tmp_path / "bomb.png").write_bytes(png_header(40000, 40000))
    assert load_error(tmp_path / "bomb.png") == (
        "too many pixels: 40000x40000 is 1600 megapixels, over the 256-megapixel limit for a source"
    )


def test_the_pixel_limit_is_ours_not_pillows(tmp_path, monkeypatch):
    # 451x300 = 135300 pixels. Pillow's own limit (and its warning band) plays no part.
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 135_299)
    assert load_error(IMAGES / "cat.jpg").startswith("too many pixels: 451x300")
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 135_300)  # exactly at the limit is allowed
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_path(IMAGES / "cat.jpg").size == (451, 300)


# ---------------------------------------------------------------- expand_source / source_ref


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pics"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    for name in ["b.jpg", "a.PNG", "c.webp", ".secret.jpg", "notes.txt", "a.txt", "data.json"]:
        (root / name).write_bytes(b"x")
    (root / "a.txt").write_text("  a red fox \n")
    (root / "sub" / "d.jpeg").write_bytes(b"x")
    (root / "sub" / "deeper" / "e.gif").write_bytes(b"x")
    (root / ".hidden_dir" / "f.jpg").write_bytes(b"x")
    (root / "folder.jpg").mkdir()  # a folder with an image suffix is not an image
    return root


def names(refs) -> list[str]:
    return [Path(r.key).name for r in refs]


def test_folder_sorted_images_only(folder):
    refs = expand_source("pics", folder.parent)
    assert names(refs) == ["a.PNG", "b.jpg", "c.webp"]
    assert [r.key for r in refs] == sorted(r.key for r in refs)
    assert all(Path(r.key).is_absolute() and not r.is_url for r in refs)


def test_folder_recursive(folder):
    refs = expand_source(str(folder), Path("/elsewhere"), recursive=True)
    assert names(refs) == ["a.PNG", "b.jpg", "c.webp", "d.jpeg", "e.gif"]  # hidden dir skipped
    assert [r.key for r in refs] == sorted(r.key for r in refs)


def test_caption_and_fingerprint(folder):
    a, b, _ = expand_source("pics", folder.parent)
    assert a.caption == "a red fox" and b.caption is None
    st = os.stat(folder / "b.jpg")
    assert b.stat == f"{st.st_size}-{st.st_mtime_ns}"
    assert b.fingerprint == ""  # the content hash is set by planning (source_identity)
    assert (a.stem, b.stem) == ("a", "b")


def test_empty_caption_counts_as_absent(tmp_path):
    (tmp_path / "x.txt").write_text("  \n")
    assert source_ref("x.jpg", tmp_path).caption is None


def test_glob(folder):
    assert names(expand_source("pics/*.jpg", folder.parent)) == ["b.jpg"]  # .secret.jpg not matched
    assert names(expand_source("pics/[ab].*", folder.parent)) == ["a.PNG", "b.jpg"]  # a.txt filtered
    assert names(expand_source("pics/**/*", folder.parent, recursive=True)) == [
        "a.PNG",
        "b.jpg",
        "c.webp",
        "d.jpeg",
        "e.gif",
    ]


def test_glob_hidden_only_when_spelled_out(folder):
    assert names(expand_source("pics/.*.jpg", folder.parent)) == [".secret.jpg"]


def test_glob_without_recursive_does_not_descend(folder):
    with pytest.raises(SourceSpecError, match="matches no image"):
        expand_source("pics/**/*.gif", folder.parent, recursive=False)
    assert names(expand_source("pics/**/*.gif", folder.parent, recursive=True)) == ["e.gif"]


def test_glob_base_dir_with_brackets_is_literal(tmp_path):
    base = tmp_path / "run [1]"
    base.mkdir()
    (base / "x.jpg").write_bytes(b"x")
    assert names(expand_source("*.jpg", base)) == ["x.jpg"]


def test_literal_name_with_brackets_is_a_file(tmp_path):
    (tmp_path / "shot [1].jpg").write_bytes(b"x")
    assert names(expand_source("shot [1].jpg", tmp_path)) == ["shot [1].jpg"]


def test_glob_no_match_names_the_spec(folder):
    with pytest.raises(SourceSpecError) as info:
        expand_source("pics/*.tiff", folder.parent)
    assert "'pics/*.tiff'" in str(info.value) and "matches no image" in str(info.value) and ".jpg" in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(SourceSpecError, match="'empty' matches no image"):
        expand_source("empty", tmp_path)


@pytest.mark.parametrize("spec", ["file:///tmp/a.jpg", "ftp://host/a.jpg", "s3://bucket/key.png"])
def test_other_schemes_refused(spec, tmp_path):
    with pytest.raises(SourceSpecError, match="not supported"):
        expand_source(spec, tmp_path)
    with pytest.raises(SourceSpecError, match="not supported"):
        source_ref(spec, tmp_path)


def test_missing_single_file_is_one_ref(tmp_path):
    (ref,) = expand_source("later/gone.jpg", tmp_path)
    assert ref.key == (tmp_path / "later" / "gone.jpg").as_posix()
    assert (ref.fingerprint, ref.caption, ref.stem, ref.is_url) == ("", None, "gone", False)


def test_single_file_suffix_not_checked(tmp_path):
    (tmp_path / "photo.raw").write_bytes(b"x")
    assert names(expand_source("photo.raw", tmp_path)) == ["photo.raw"]


def test_relative_dotdot_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert source_ref("~/x.jpg", Path("/nowhere")).key == (tmp_path / "x.jpg").as_posix()
    assert source_ref("../y.jpg", tmp_path / "sub").key == (tmp_path / "y.jpg").as_posix()


def test_source_ref_refuses_folder(tmp_path):
    with pytest.raises(SourceSpecError, match="is a folder"):
        source_ref(".", tmp_path)


@pytest.mark.parametrize(
    "url,stem",
    [
        ("https://example.com/pics/cat%20one.jpg?size=large#x", "cat one"),
        ("http://example.com/", "image"),
        ("https://example.com", "image"),
        ("HTTPS://example.com/a/b/rocket.PNG", "rocket"),
    ],
)
def test_url_ref(url, stem, tmp_path):
    (ref,) = expand_source(url, tmp_path)
    assert ref == SourceRef(key=url, is_url=True, stem=stem, fingerprint="", caption=None)


def test_url_without_host(tmp_path):
    with pytest.raises(SourceSpecError, match="no host"):
        expand_source("http:///a.jpg", tmp_path)


def test_refs_are_hashable_for_dedup(folder):
    refs = expand_source("pics", folder.parent) + expand_source("pics/*.jpg", folder.parent)
    assert len(dict.fromkeys(refs)) == 3


def test_suffix_set():
    assert {".jpg", ".png", ".tif", ".gif"} <= IMAGE_SUFFIXES and all(s == s.lower() for s in IMAGE_SUFFIXES)


# ---------------------------------------------------------------- URLs against a real loopback server
# The server (tests/http_fixtures.py) listens on 127.0.0.1, which the defaults refuse: LOCAL lets it through.

LOCAL = {"allow_private": True}
QUICK_RETRIES = {**LOCAL, "backoff_s": 0.05}  # three attempts in about 0.15 s


@pytest.fixture
def server(loopback_server) -> LoopbackServer:
    return loopback_server


def fetch(url: str, **options) -> Image.Image:
    return load_image(source_ref(url, Path(".")), FetchOptions(**options))


def fetch_error(url: str, **options) -> str:
    with pytest.raises(SourceError) as info:
        fetch(url, **options)
    return str(info.value)


def timed_error(url: str, **options) -> tuple[str, float]:
    start = time.monotonic()
    message = fetch_error(url, **options)
    return message, time.monotonic() - start


def test_fetch_options_defaults_and_validation():
    options = FetchOptions(timeout_s=5, max_bytes=10)  # how the CLI builds them
    assert (options.timeout_s, options.max_bytes) == (5, 10)
    defaults = FetchOptions()
    assert (defaults.timeout_s, defaults.max_bytes, defaults.max_redirects, defaults.retries) == (30, 50 << 20, 5, 2)
    assert (defaults.backoff_s, defaults.stall_timeout_s, defaults.allow_private) == (0.5, 10, False)
    for bad in ({"timeout_s": 0}, {"max_bytes": -1}, {"retries": -1}, {"max_redirects": -1}, {"stall_timeout_s": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FetchOptions(**bad)


def test_url_200_png(server):
    img = fetch(server.url("/ok.png"), **LOCAL)
    assert img.size == (8, 6) and img.mode == "RGB" and px(img) == (0, 128, 255)
    assert server.hits["/ok.png"] == 1


def test_png_served_as_text_still_loads(server):
    assert px(fetch(server.url("/png-as-text"), **LOCAL)) == (0, 128, 255)


@pytest.mark.parametrize("path", ["/html", "/lie"])  # text/html, and HTML claiming to be image/jpeg
def test_html_is_not_an_image(server, path):
    assert fetch_error(server.url(path), **LOCAL) == "not an image"


def test_url_bomb(server):
    assert (
        fetch_error(server.url("/bomb"), **LOCAL)
        == "too many pixels: 40000x40000 is 1600 megapixels, over the 256-megapixel limit for a source"
    )


def test_url_empty_body(server):
    assert fetch_error(server.url("/empty"), **LOCAL) == "empty response"


# ---- status codes and retries


def test_404_is_not_retried(server):
    message, elapsed = timed_error(server.url("/404"), **LOCAL, retries=5)
    assert message == "HTTP 404"
    assert server.hits["/404"] == 1 and elapsed < 0.4  # one retry would already wait backoff_s = 0.5 s


def test_5xx_retried_then_reported_with_attempts(server):
    assert fetch_error(server.url("/500"), **QUICK_RETRIES) == "HTTP 500 (3 attempts)"
    assert server.hits["/500"] == 3
    assert fetch_error(server.url("/500"), **QUICK_RETRIES, retries=0) == "HTTP 500 (1 attempt)"
    assert server.hits["/500"] == 4


def test_flaky_recovers_after_exactly_n_plus_one_hits(server):
    start = time.monotonic()
    img = fetch(server.url("/flaky"), **LOCAL, backoff_s=0.2)  # two 503s, then the image
    elapsed = time.monotonic() - start
    assert px(img) == (0, 128, 255) and server.hits["/flaky"] == 3
    assert 0.6 <= elapsed < 1.5  # waits of 0.2 s then 0.4 s: exponential backoff


def test_flaky_beyond_the_retries_fails():
    with LoopbackServer(flaky_failures=3) as server:
        assert fetch_error(server.url("/flaky"), **QUICK_RETRIES) == "HTTP 503 (3 attempts)"
        assert server.hits["/flaky"] == 3


def test_retries_never_run_past_the_deadline(server):
    # Waits of 0.25, 0.5, 1 s...: the third would end after the 1.2 s deadline, so the download stops before it.
    message, elapsed = timed_error(server.url("/500"), **LOCAL, retries=10, backoff_s=0.25, timeout_s=1.2)
    hits = server.hits["/500"]
    assert 2 <= hits <= 3 and message == f"HTTP 500 ({hits} attempts)"
    assert elapsed < 1.2


def test_dropped_body_is_retried(server):
    message = fetch_error(server.url("/drop"), **QUICK_RETRIES)
    assert message == "connection dropped after 100 of 1000 bytes (3 attempts)"
    assert server.hits["/drop"] == 3


def test_reset_connection_is_retried(server):
    message = fetch_error(server.url("/reset"), **QUICK_RETRIES)
    assert message.startswith("connection dropped: ") and message.endswith(" (3 attempts)")
    assert server.hits["/reset"] == 3


def test_connection_refused_is_not_retried():
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message, elapsed = timed_error(f"http://127.0.0.1:{port}/x.png", **LOCAL, timeout_s=2)
    assert message.startswith("could not connect: ") and "Errno" not in message
    assert elapsed < 0.4  # one retry would already wait backoff_s = 0.5 s


# ---- deadline


@pytest.fixture(params=["watchdog", "no-watchdog"])
def deadline_layers(request, monkeypatch):
    """Run twice: as is, then with the deadline watchdog disarmed, to prove the per-read limits hold on their own."""
    if request.param == "no-watchdog":
        monkeypatch.setattr(fetch_module._Download, "cut", lambda self: None)


def test_per_read_timeout_is_bounded_by_the_time_left():
    download = fetch_module._Download(FetchOptions(timeout_s=1, stall_timeout_s=10))
    assert 0.9 < download.socket_timeout() <= 1
    assert fetch_module._Download(FetchOptions(stall_timeout_s=10)).socket_timeout() == 10


def test_hang_hits_the_overall_deadline(server, deadline_layers):
    # stall_timeout_s is 10 s: the socket timeout must be cut down to the 1 s left.
    message, elapsed = timed_error(server.url("/hang"), **LOCAL, timeout_s=1)
    assert message == "timed out after 1 s"
    assert 0.9 <= elapsed < 2.5 and server.hits["/hang"] == 1  # no retry once the deadline is gone


def test_stalled_attempts_are_retried(server):
    message, elapsed = timed_error(server.url("/hang"), **QUICK_RETRIES, stall_timeout_s=0.3, timeout_s=5)
    assert message == "timed out: no data for 0.3 s (3 attempts)"
    assert server.hits["/hang"] == 3 and elapsed < 2


@pytest.mark.parametrize("timeout_s,text", [(1, "1"), (0.5, "0.5")])
def test_slow_drip_hits_the_overall_deadline(server, deadline_layers, timeout_s, text):
    message, elapsed = timed_error(server.url("/drip"), **LOCAL, timeout_s=timeout_s)  # a byte per 0.2 s
    assert message == f"timed out after {text} s"
    assert elapsed < timeout_s + 1


def test_dripping_headers_hit_the_overall_deadline(server):
    # Each header byte comes well within any per-read timeout: only the overall deadline can end this.
    message, elapsed = timed_error(server.url("/drip-headers"), **LOCAL, timeout_s=1)
    assert message == "timed out after 1 s"
    assert elapsed < 2.5


# ---- size


@pytest.mark.parametrize("path", ["/big", "/big-no-length"])
def test_body_over_the_cap(server, path):
    assert fetch_error(server.url(path), **LOCAL, max_bytes=1000) == "larger than 1000 bytes"


def test_declared_length_over_the_cap_refused_before_reading(server):
    # /huge-length claims 1 GiB and never sends it: only the header can have refused it, and at once.
    message, elapsed = timed_error(server.url("/huge-length"), **LOCAL, timeout_s=5)
    assert message == "larger than 50 MB"
    assert elapsed < 1


# ---- redirects


def test_redirect_followed(server):
    assert px(fetch(server.url("/redirect-ok"), **LOCAL)) == (0, 128, 255)
    assert (server.hits["/redirect-ok"], server.hits["/ok.png"]) == (1, 1)


@pytest.mark.parametrize("path,scheme", [("/redirect-file", "file"), ("/redirect-ftp", "ftp")])
def test_redirect_to_other_schemes_refused(server, path, scheme):
    assert fetch_error(server.url(path), **LOCAL) == f"redirect to {scheme}:// refused (only http and https)"


def test_redirect_loop(server):
    assert fetch_error(server.url("/loop"), **LOCAL) == "too many redirects (more than 5)"
    assert server.hits["/loop"] == 6  # the first request and five redirects followed
    assert fetch_error(server.url("/loop"), **LOCAL, max_redirects=2) == "too many redirects (more than 2)"
    assert server.hits["/loop"] == 9


def test_redirect_limit_is_inclusive(server):
    assert px(fetch(server.url("/chain/5"), **LOCAL)) == (0, 128, 255)
    assert fetch_error(server.url("/chain/6"), **LOCAL) == "too many redirects (more than 5)"


def test_redirect_from_another_server(server):
    with LoopbackServer(image=png_bytes((9, 9, 9))) as other:
        img = fetch(server.url(f"/redirect?to={other.url('/ok.png')}"), **LOCAL)
        assert px(img) == (9, 9, 9) and other.hits["/ok.png"] == 1


# ---- private addresses

LOOPBACK_REFUSED = "private address 127.0.0.1 refused (--allow-private-urls allows it)"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_defaults_refuse_loopback(server, host):
    message, elapsed = timed_error(server.url("/ok.png").replace("127.0.0.1", host))
    assert message == LOOPBACK_REFUSED
    assert server.hits["/ok.png"] == 0 and elapsed < 0.4  # refused at connect: no request sent, no retry


def test_public_name_resolving_to_loopback_refused(server, monkeypatch):
    # DNS that answers 127.0.0.1 for a public-looking name: only the connected address can give it away.
    real = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):
        return real("127.0.0.1" if host == "images.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    url = server.url("/ok.png").replace("127.0.0.1", "images.example.com")
    assert fetch_error(url) == LOOPBACK_REFUSED
    assert server.hits["/ok.png"] == 0
    assert px(fetch(url, **LOCAL)) == (0, 128, 255)  # the fake DNS really led there


def test_every_redirect_hop_is_checked(server, monkeypatch):
    # Pretend the first connection went to a public address; the redirect's new connection must be checked again.
    seen = []

    def first_one_public(address):
        seen.append(address)
        return len(seen) == 1

    monkeypatch.setattr(fetch_module, "is_public_address", first_one_public)
    assert fetch_error(server.url("/redirect-ok")) == LOOPBACK_REFUSED
    assert seen == ["127.0.0.1", "127.0.0.1"]
    assert (server.hits["/redirect-ok"], server.hits["/ok.png"]) == (1, 0)


def test_https_connections_use_the_checked_classes():
    session = fetch_module.new_session(fetch_module._Download(FetchOptions()))
    for scheme, cls, base in [
        ("http", fetch_module.GuardedHTTPConnection, urllib3.connection.HTTPConnection),
        ("https", fetch_module.GuardedHTTPSConnection, urllib3.connection.HTTPSConnection),
    ]:
        url = f"{scheme}://example.com/"
        pool = session.get_adapter(url).poolmanager.connection_from_url(url)
        assert pool.ConnectionCls is cls and issubclass(cls, base)
        assert "download" in pool.conn_kw
    assert session.trust_env is False  # an environment proxy would make the peer check moot


def test_proxies_refused(server):
    download = fetch_module._Download(FetchOptions(allow_private=True))
    with fetch_module.new_session(download) as session, pytest.raises(fetch_module.FetchError, match="proxy"):
        session.get(server.url("/ok.png"), proxies={"http": server.base})
    assert server.hits["/ok.png"] == 0


def test_https_is_checked_before_the_tls_handshake(server):
    # An https URL to the plain-http server: refused at connect, before TLS could fail.
    https = server.url("/ok.png").replace("http://", "https://")
    assert fetch_error(https) == LOOPBACK_REFUSED
    assert fetch_error(https, **LOCAL).startswith("could not connect: ")  # allowed: on to TLS, which fails


def test_https_end_to_end(tmp_path, monkeypatch):
    cert = self_signed_cert(tmp_path)
    if cert is None:
        pytest.skip("openssl is not installed")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[0]))
    with LoopbackServer(tls=cert) as server:
        assert px(fetch(server.url("/redirect-ok"), **LOCAL)) == (0, 128, 255)
        assert fetch_error(server.url("/ok.png")) == LOOPBACK_REFUSED
        assert server.hits["/ok.png"] == 1  # only the allowed download reached the server


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "fd00::1",
        "fe80::1%eth0",
        "ff02::1",
        "ff0e::1",  # global-scope multicast: is_global says yes
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 wrapping 169.254.169.254
        "not an address",
    ],
)
def test_non_global_addresses_refused(address):
    assert fetch_module.is_public_address(address) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_global_addresses_pass(address):
    assert fetch_module.is_public_address(address) is True


def test_decode_image_bytes_directly():
    assert decode_image(png_bytes((1, 2, 3))).getpixel((0, 0)) == (1, 2, 3)
