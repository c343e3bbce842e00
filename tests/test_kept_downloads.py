"""A sweep over URL sources downloads each source once: items run grouped by strength, so each source comes back
once per strength, after the decoded-image cache (16 images) has let it go; its bytes wait on disk meanwhile."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch_edit import kept_downloads
from batch_edit.fetch import Cancellation
from batch_edit.kept_downloads import KeptDownloads
from batch_edit.source_decoding import SourceError
from batch_edit.sources import FetchOptions, source_bytes, source_ref

from .conftest import PHOTOS, run_manifest
from .http_fixtures import LoopbackServer

SOURCES = 18  # more than the decoded-image cache holds


@pytest.fixture
def temporary_folder(tmp_path, monkeypatch) -> Path:
    """TMPDIR as the run's temporary files see it, for what the run leaves there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _sweep(folder: Path, server: LoopbackServer) -> None:
    folder.mkdir()
    urls = ", ".join(f"'{server.url(f'/ok.png?n={n}')}'" for n in range(SOURCES))  # a source each (hits count the path)
    (folder / "m.yaml").write_text(
        f"jobs:\n  - {{name: j, sources: [{urls}], prompts: p, strength: [0.5, 1.0], seed: 1, width: 16, "
        "height: 16, num_inference_steps: 2}\n"
    )


def _results(folder: Path) -> dict[tuple[str, float], np.ndarray]:
    """(the source's query, strength) -> the image: the server's port, so the URLs and ids, differ between runs."""
    rows = pd.read_csv(folder / "out" / "j" / "metadata.csv")
    return {
        (row.source.partition("?")[2], row.strength): np.asarray(Image.open(folder / "out" / "j" / row.file_name))
        for row in rows.itertuples()
    }


def _swept(folder: Path, config: Path, image: bytes) -> LoopbackServer:
    with LoopbackServer(image=image) as server:
        _sweep(folder, server)
        printed = run_manifest(folder, config, "run", "--allow-private-urls")
        assert f"{2 * SOURCES} written" in printed, printed
    return server


def test_a_sweep_over_url_sources_downloads_each_once_and_leaves_nothing_behind(
    tmp_path, tiny_config, temporary_folder, monkeypatch
):
    image = (PHOTOS / "coffee.jpg").read_bytes()
    server = _swept(tmp_path / "kept", tiny_config, image)
    assert server.hits["/ok.png"] == SOURCES
    assert not list(temporary_folder.iterdir()), "the kept downloads outlived the run"
    kept = _results(tmp_path / "kept")
    # the same sweep downloading at every visit (nothing may be kept): the same items, the same images
    monkeypatch.setattr(kept_downloads, "KEPT_BYTES", 0)
    server = _swept(tmp_path / "again", tiny_config, image)
    assert server.hits["/ok.png"] == 2 * SOURCES
    again = _results(tmp_path / "again")
    assert len(kept) == 2 * SOURCES and kept.keys() == again.keys()
    assert all(np.array_equal(kept[key], again[key]) for key in kept)
    records = (tmp_path / "kept" / "out" / "j" / ".batch-edit" / "records.jsonl").read_text().splitlines()
    assert {json.loads(line)["source_sha256"] for line in records} == {hashlib.sha256(image).hexdigest()}


def _refs(tmp_path, *names):
    """Sources of these names: `local.png` a file, the others URLs."""
    return [source_ref(name if name == "local.png" else f"https://example.com/{name}", tmp_path) for name in names]


class _Server:
    """A download function: each source's bytes by its name, every call counted."""

    def __init__(self, **bodies: bytes):
        self.bodies, self.calls = bodies, Counter()

    def __call__(self, ref) -> bytes:
        name = ref.key.rsplit("/", 1)[-1].removesuffix(".png")
        self.calls[name] += 1
        return self.bodies[name]


def test_kept_bytes_go_after_the_last_visit_and_past_the_limit_nothing_is_kept(tmp_path, temporary_folder):
    a, b, local = _refs(tmp_path, "a.png", "b.png", "local.png")
    server = _Server(a=b"aaa", b=b"bbb", local=b"local")
    kept = KeptDownloads([a, b, a, b, local, a], server, max_bytes=5)
    assert [kept.load(ref) for ref in (a, b, a, b, local)] == [b"aaa", b"bbb", b"aaa", b"bbb", b"local"]
    # b's 3 bytes beside a's would pass the limit: b is downloaded again; a file is read again, as ever
    assert server.calls == {"a": 1, "b": 2, "local": 1}
    assert len(list(temporary_folder.glob("*/*"))) == 1  # a's bytes, waiting for its last visit
    assert kept.load(a) == b"aaa" and server.calls["a"] == 1
    assert not list(temporary_folder.glob("*/*"))
    kept.close()
    assert not list(temporary_folder.iterdir())


def test_a_failed_download_counts_as_its_items_visit(tmp_path):
    (a,) = _refs(tmp_path, "a.png")

    def refused(ref) -> bytes:
        raise SourceError("HTTP 404")

    kept = KeptDownloads([a, a], refused)
    with pytest.raises(SourceError):
        kept.load(a)
    assert kept.left == {a: 1}  # the next item finds the error remembered (SourceCache) and passes
    kept.passed(a)
    assert not kept.left
    kept.close()


def test_the_next_url_sources_download_at_once_ahead_of_their_items(tmp_path):
    """Each download here waits for the five others to have started: they only can if they run at once."""
    refs = _refs(tmp_path, *(f"{n}.png" for n in range(6)))
    together = threading.Barrier(6, timeout=30)

    def download(ref) -> bytes:
        together.wait()
        return ref.key.encode()

    kept = KeptDownloads(refs, download)
    try:
        assert [kept.load(ref) for ref in refs] == [ref.key.encode() for ref in refs]
    finally:
        kept.close()


def test_closing_cuts_the_downloads_still_running_ahead(tmp_path):
    """As a stop closing the run's prefetch does (its cancellation applies to the downloads made ahead for it)."""
    with LoopbackServer() as server:
        ok, hang = (source_ref(server.url(path), tmp_path) for path in ("/ok.png", "/hang"))
        stop = Cancellation()
        slow = FetchOptions(timeout_s=60, stall_timeout_s=60, allow_private=True)
        with stop.applies():
            kept = KeptDownloads([ok, hang], lambda ref: source_bytes(ref, slow))
            kept.load(ok)
            running = kept.ahead[hang]
            stop.set()
            with pytest.raises(SourceError, match="download stopped"):
                running.result(timeout=10)
            kept.close()


def test_kept_bytes_deleted_under_the_run_are_downloaded_again(tmp_path, temporary_folder, caplog):
    (a,) = _refs(tmp_path, "a.png")
    server = _Server(a=b"aaa")
    kept = KeptDownloads([a, a, a], server)
    kept.load(a)
    for path in temporary_folder.glob("*/*"):
        path.unlink()
    with caplog.at_level(logging.WARNING):
        assert kept.load(a) == b"aaa"
    assert server.calls["a"] == 2 and "kept download of https://example.com/a.png unreadable" in caplog.text
    kept.close()


def test_a_temporary_folder_that_cannot_be_used_downloads_again(tmp_path, monkeypatch, caplog):
    (a,) = _refs(tmp_path, "a.png")
    (tmp_path / "not-a-folder").write_text("")  # TMPDIR naming a file: as a folder that cannot be written
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-a-folder"))
    server = _Server(a=b"aaa")
    kept = KeptDownloads([a, a, a], server)
    with caplog.at_level(logging.WARNING):
        assert [kept.load(a) for _ in range(3)] == [b"aaa"] * 3
    assert server.calls["a"] == 3
    assert caplog.text.count("cannot keep the download of https://example.com/a.png for later items") == 1
    kept.close()


def test_the_folder_of_a_run_killed_outright_goes_when_the_next_run_keeps_a_download(tmp_path, temporary_folder):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its process id is no process now
    abandoned = temporary_folder / f"batch-edit-downloads-{gone.pid}-x1"
    abandoned.mkdir()
    (abandoned / "0123").write_bytes(b"bytes kept by the killed run")
    running = temporary_folder / f"batch-edit-downloads-{os.getpid()}-x2"  # a run still going (this process)
    running.mkdir()
    unknown = temporary_folder / "batch-edit-downloads-of-someone"
    unknown.mkdir()
    (a,) = _refs(tmp_path, "a.png")
    kept = KeptDownloads([a, a], _Server(a=b"aaa"))
    kept.load(a)
    assert not abandoned.exists() and running.exists() and unknown.exists()
    assert len(list(temporary_folder.glob(f"batch-edit-downloads-{os.getpid()}-*"))) == 2  # its own, and x2
    kept.close()
