"""Credentials in a source URL (`https://user:pass@host/...`) are used to fetch it and written nowhere: not in
metadata.csv, the records, a result's embedded metadata or what the commands print. The rest of the URL (a query
too) is the source's key as before, so a URL without credentials keeps its items' ids."""

from __future__ import annotations

import base64
import http.server
import threading
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from batch_edit.sources import source_ref

from .conftest import batch_edit

PASSWORD = "s3cret-pw"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        buffer = BytesIO()
        Image.new("RGB", (48, 40), (200, 60, 30)).save(buffer, "PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(buffer.getvalue())))
        self.end_headers()
        self.wfile.write(buffer.getvalue())


@pytest.fixture
def auth_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_credentials_in_a_url_fetch_it_and_are_written_nowhere(tmp_path, tiny_config, auth_server):
    url = f"http://alice:{PASSWORD}@{auth_server}/ok.png?token=T0K3N"
    (tmp_path / "m.csv").write_text(f"source,prompt,width,height,num_inference_steps\n{url},p,32,32,2\n")
    args = ("m.csv", "--pipeline", str(tiny_config), "--output-root", "out")
    said = ""
    for command in ("plan", "run", "plan"):
        private = ("--allow-private-urls",) if command == "run" else ()
        result = batch_edit(command, *args, *private, cwd=tmp_path)
        said += result.stdout + result.stderr
        assert result.returncode == 0, result.stdout + result.stderr
    assert "1 written" in said and "1 already done" in said
    assert PASSWORD not in said and "alice" not in said
    files = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert any(path.suffix == ".png" for path in files)
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
        assert b"alice" not in path.read_bytes(), path
    metadata = (tmp_path / "out" / "m" / "metadata.csv").read_text()
    assert f"http://{auth_server}/ok.png?token=T0K3N" in metadata  # the query stays: it may name the image


def test_a_url_without_credentials_keeps_its_key_and_one_with_them_gets_the_same():
    plain = "https://example.com/a%20b/photo.jpg?x=1&y=#frag"
    assert source_ref(plain, Path("/")).key == plain
    ref = source_ref("https://bob:pw@example.com/a%20b/photo.jpg?x=1&y=#frag", Path("/"))
    assert ref.key == plain and ref == source_ref(plain, Path("/")) and "pw" not in repr(ref)
