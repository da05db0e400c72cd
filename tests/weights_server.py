"""A web server on 127.0.0.1 that stands in for the places weights are published, for the
download tests: the release servers through ``TESSERA_WEIGHTS_MIRROR`` (a URL
``https://H/P`` is served at ``/H/P``) and the Hugging Face hub through ``HF_ENDPOINT``
(``/{repo}/resolve/{revision}/{file}``, with the ``X-Repo-Commit`` and ``ETag`` headers that
huggingface_hub checks).

It honours ``Range`` requests, counts every request per path, and can cut a file's first
responses midway (``cut``) to test resuming.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class WeightsServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.ranges: list[tuple[str, str]] = []
        #: path -> how many more GET responses to cut after half the file
        self.cut: Counter[str] = Counter()
        #: seconds to wait before each chunk of a GET (to make downloads overlap)
        self.delay = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _serve(self, body: bool) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                with server._lock:
                    server.requests[(self.command, path)] += 1
                data = server.files.get(path)
                hub = "/resolve/" in path
                if data is None:
                    self.send_response(404)
                    if hub:
                        self.send_header("X-Repo-Commit", COMMIT)
                        self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    with server._lock:
                        server.ranges.append((path, wanted))
                    start = int(wanted[len("bytes="):].split("-")[0])
                part = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                if hub:
                    self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if not body:
                    return
                with server._lock:
                    cut = server.cut[path] > 0
                    if cut:
                        server.cut[path] -= 1
                if cut:  # half of what was asked, then the connection drops
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                step = max(1, len(part) // 8)
                for i in range(0, len(part), step):
                    if server.delay:
                        time.sleep(server.delay)
                    self.wfile.write(part[i : i + step])

            def do_HEAD(self) -> None:
                self._serve(False)

            def do_GET(self) -> None:
                self._serve(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    # -- what it serves -------------------------------------------------------------------

    def add_url(self, url: str, data: bytes | Path) -> str:
        """Serve ``data`` as the file of ``url`` (through the mirror); returns the mirror path."""
        parts = urllib.parse.urlsplit(url)
        path = f"/{parts.netloc}{parts.path}"
        self.files[path] = data.read_bytes() if isinstance(data, Path) else data
        return path

    def add_hub(self, repo: str, filename: str, data: bytes | Path, revision: str = "main") -> str:
        path = f"/{repo}/resolve/{revision}/{filename}"
        self.files[path] = data.read_bytes() if isinstance(data, Path) else data
        return path

    def gets(self, path: str) -> int:
        return self.requests[("GET", path)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The stand-in servers, and a fresh cache (tessera's and huggingface_hub's)."""
    srv = WeightsServer()
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TESSERA_WEIGHTS_MIRROR", srv.url)
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TESSERA_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield srv
    srv.close()
