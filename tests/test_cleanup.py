"""One way of opening sources (the contact sheet and plan's fit check use the run's pixel limit), failure reasons
(a SourceError's own, a download's without its address), first lines of errors, and YAML files in the encodings
CSV manifests are read in."""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import pytest
from PIL import Image

from batch_edit import source_decoding
from batch_edit.errors import ManifestError, first_line
from batch_edit.fetch import FetchOptions
from batch_edit.manifest import load_manifests
from batch_edit.plan_checks import _oriented_size
from batch_edit.result_files import Failure
from batch_edit.sheets import load_thumbnail
from batch_edit.source_decoding import SourceError
from batch_edit.sources import load_image, source_ref
from tests.http_fixtures import loopback_server  # noqa: F401 (fixture)

from .conftest import PHOTOS

CAT = PHOTOS / "cat.jpg"  # 451x300: 135,300 pixels


@pytest.fixture
def pillow_limit(monkeypatch):
    """Pillow's own limit set so that the cat is a "decompression bomb" to it, with its warnings raised."""

    def set_limit(pixels: int) -> None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as `python -W error` runs: a DecompressionBombWarning would be raised
        yield set_limit


@pytest.mark.parametrize("pillow_pixels", [100_000, 1_000])  # Pillow's warning band, then its error band
def test_the_contact_sheet_thumbnail_opens_as_sources_do(pillow_limit, pillow_pixels, tmp_path):
    pillow_limit(pillow_pixels)
    Image.new("RGB", (451, 300), (10, 200, 30)).save(tmp_path / "big.png")
    for path in (CAT, tmp_path / "big.png"):
        thumbnail = load_thumbnail(path, 64)
        assert thumbnail is not None and thumbnail.size == (64, 64), path


def test_the_contact_sheet_thumbnail_keeps_to_the_source_pixel_limit(monkeypatch):
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 135_299)
    assert load_thumbnail(CAT, 64) is None  # refused, as the run refuses the source
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 135_300)
    assert load_thumbnail(CAT, 64) is not None


@pytest.mark.parametrize("pillow_pixels", [100_000, 1_000])
def test_plan_measures_sources_past_pillows_limit(pillow_limit, pillow_pixels):
    pillow_limit(pillow_pixels)
    assert _oriented_size(CAT.as_posix()) == (451, 300)  # so the fit-duplicate check still sees it


def test_plan_does_not_measure_a_source_past_the_source_pixel_limit(monkeypatch):
    monkeypatch.setattr(source_decoding, "MAX_SOURCE_PIXELS", 135_299)
    assert _oriented_size(CAT.as_posix()) is None  # loading the item says why


# ---------------------------------------------------------------- failure reasons


def test_only_a_source_error_gives_its_own_reason():
    undecodable = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")  # has a `.reason` too
    assert Failure.of("generate", undecodable).reason == str(undecodable)
    http = urllib.error.HTTPError("http://x/", 404, "Not Found", None, None)  # type: ignore[arg-type]
    assert Failure.of("load", http).reason == "HTTP Error 404: Not Found"
    assert Failure.of("load", SourceError("file not found: /a/b.jpg", "file not found")).reason == "file not found"


def test_a_failure_keeps_the_whole_first_line_and_bounds_its_reason():
    failure = Failure.of("generate", ValueError("y" * 500 + "\nmore"))
    assert failure.error == "y" * 500 and failure.error_type == "ValueError"
    assert len(failure.reason) == 100 and failure.reason.endswith("...")


def test_a_refused_private_address_is_one_reason_whatever_the_address(loopback_server):  # noqa: F811
    with pytest.raises(SourceError) as info:
        load_image(source_ref(loopback_server.url("/ok.png"), Path(".")), FetchOptions())
    assert str(info.value) == "private address 127.0.0.1 refused (--allow-private-urls allows it)"
    assert Failure.of("load", info.value).reason == "private address refused"


def test_a_dropped_download_is_counted_without_its_byte_counts(loopback_server):  # noqa: F811
    options = FetchOptions(allow_private=True, retries=0)
    with pytest.raises(SourceError) as info:
        load_image(source_ref(loopback_server.url("/drop"), Path(".")), options)
    assert str(info.value) == "connection dropped after 100 of 1000 bytes (1 attempt)"
    assert info.value.reason == "connection dropped"


def test_a_refused_connection_is_counted_without_the_systems_words():
    with pytest.raises(SourceError) as info:
        load_image(source_ref("http://127.0.0.1:9/x.png", Path(".")), FetchOptions(allow_private=True))
    assert str(info.value).startswith("could not connect: ") and info.value.reason == "could not connect"


def test_first_line():
    assert first_line(ValueError("a\nb")) == "a"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line("") == ""
    assert first_line(ValueError("x" * 400)) == "x" * 297 + "..."  # 300 by default
    assert first_line(ValueError("x" * 400), None) == "x" * 400
    loading = "Error(s) in loading state_dict for Linear:\n\tsize mismatch for weight: shape [4, 64], not [4, 32].\n"
    assert first_line(RuntimeError(loading)) == (
        "Error(s) in loading state_dict for Linear: size mismatch for weight: shape [4, 64], not [4, 32]."
    )
    assert first_line(ValueError("a:")) == "a:"


# ---------------------------------------------------------------- YAML text encodings

YAML = "jobs:\n  - name: a\n    sources: cat.jpg\n    prompts: a café at dusk\n"


@pytest.mark.parametrize(
    "encoded",
    [b"\xff\xfe" + YAML.encode("utf-16-le"), b"\xfe\xff" + YAML.encode("utf-16-be"), b"\xef\xbb\xbf" + YAML.encode()],
    ids=["utf-16-le", "utf-16-be", "utf-8-bom"],
)
def test_a_yaml_manifest_with_a_byte_order_mark_is_read(tmp_path, encoded):
    (tmp_path / "cat.jpg").write_bytes(CAT.read_bytes())
    (tmp_path / "m.yaml").write_bytes(encoded)
    ((job,),) = [manifest.jobs for manifest in load_manifests([tmp_path / "m.yaml"])]
    assert job.grids[0].prompts == ("a café at dusk",)


def test_a_yaml_manifest_in_a_code_page_is_refused_at_its_line_and_column(tmp_path):
    (tmp_path / "m.yaml").write_bytes(YAML.encode("cp1252"))
    with pytest.raises(ManifestError) as info:
        load_manifests([tmp_path / "m.yaml"])
    assert str(info.value).startswith(
        f"{(tmp_path / 'm.yaml').as_posix()}: line 4, column 19: not UTF-8 text (byte 0xe9, 'é' in Windows-1252); "
        "save the file as UTF-8"
    )


def test_a_yaml_manifest_in_utf16_without_a_byte_order_mark_says_so(tmp_path):
    (tmp_path / "m.yaml").write_bytes(YAML.encode("utf-16-le"))
    with pytest.raises(ManifestError, match=r"looks like UTF-16 \(little-endian\) text without a byte-order mark"):
        load_manifests([tmp_path / "m.yaml"])
