"""The weights resolver against a small HTTP server on 127.0.0.1.

A fake WeightsFile (a few hundred generated kilobytes with their own md5)
stands in for the official VGG files, so nothing leaves the machine.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tlstudio.core.model import backbones
from tlstudio.core.spec import paths
from tlstudio.core.model.backbones import WeightsFile, import_weights, resolve_weights
from tlstudio.core.spec.errors import Cancelled, WeightsError
from tlstudio.core.spec.events import Message, Progress

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=600_000, dtype=np.uint8).tobytes()
FILENAME = "fake_weights_notop.h5"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.delay = 0.0  # seconds between 16 KiB pieces: a slow server
        self.claimed_length: int | None = None  # a Content-Length that lies
        self.endless = False  # keep sending after the body

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.requests.append(self.path)
        body = server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if not server.endless:
            self.send_header("Content-Length", str(server.claimed_length or len(body)))
        self.end_headers()
        try:
            for start in range(0, len(body), 16384):
                self.wfile.write(body[start:start + 16384])
                self.wfile.flush()
                time.sleep(server.delay)
            while server.endless:
                self.wfile.write(b"\0" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(backbones.MIRROR_ENV, raising=False)


@pytest.fixture
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def _fake(url: str, payload: bytes = PAYLOAD) -> WeightsFile:
    return WeightsFile("vgg16", False, FILENAME, url, hashlib.md5(payload).hexdigest(), len(payload))


def _leftovers() -> list[Path]:
    folder = paths.keras_models_dir()
    return sorted(folder.glob("*.part")) if folder.exists() else []


def test_download_reports_progress_and_is_cached_the_second_time(server):
    server.files[FILENAME] = PAYLOAD
    wf = _fake(f"{server.base_url}/{FILENAME}")
    events = []
    path = resolve_weights(wf, on_event=events.append)
    assert path == paths.keras_models_dir() / FILENAME
    assert path.read_bytes() == PAYLOAD
    progress = [e for e in events if isinstance(e, Progress)]
    assert {e.task for e in progress} == {"download"}
    assert progress[0].done == 0 and progress[-1].done == progress[-1].total == len(PAYLOAD)
    assert [e.done for e in progress] == sorted(e.done for e in progress)
    assert _leftovers() == []
    assert server.requests == [f"/{FILENAME}"]

    again = []
    assert resolve_weights(wf, on_event=again.append) == path
    assert server.requests == [f"/{FILENAME}"], "a cached file must not be fetched again"
    assert again == []


def test_damaged_cache_is_fetched_again(server):
    server.files[FILENAME] = PAYLOAD
    wf = _fake(f"{server.base_url}/{FILENAME}")
    cached = paths.keras_models_dir() / FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:1000])
    events = []
    assert resolve_weights(wf, on_event=events.append).read_bytes() == PAYLOAD
    assert any(isinstance(e, Message) and "damaged" in e.text for e in events)


def test_hash_mismatch_is_an_error_and_leaves_nothing(server):
    server.files[FILENAME] = PAYLOAD[::-1]
    wf = _fake(f"{server.base_url}/{FILENAME}")
    with pytest.raises(WeightsError) as caught:
        resolve_weights(wf)
    message = str(caught.value)
    assert f"expected {wf.md5}" in message and hashlib.md5(PAYLOAD[::-1]).hexdigest() in message
    assert not (paths.keras_models_dir() / FILENAME).exists()
    assert _leftovers() == []


def test_server_down_names_the_file_and_the_ways_to_provide_it():
    wf = _fake(_closed_port_url())
    with pytest.raises(WeightsError) as caught:
        resolve_weights(wf, timeout=5)
    message = str(caught.value)
    for part in (FILENAME, wf.size_text, wf.url, "tlstudio weights import FILE", "TLSTUDIO_WEIGHTS_MIRROR",
                 str(paths.keras_models_dir() / FILENAME)):
        assert part in message


def test_silent_server_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/{FILENAME}"
        started = time.monotonic()
        with pytest.raises(WeightsError, match="could not be reached|broke off"):
            resolve_weights(_fake(url), timeout=0.5)
        assert time.monotonic() - started < 10


def test_cancel_mid_download_removes_the_partial_file(server):
    server.files[FILENAME] = PAYLOAD
    server.delay = 0.05
    wf = _fake(f"{server.base_url}/{FILENAME}")
    seen = []

    def on_event(event):
        if isinstance(event, Progress):
            seen.append(event.done)

    with pytest.raises(Cancelled):
        resolve_weights(wf, on_event=on_event, should_stop=lambda: any(0 < d for d in seen))
    assert 0 < seen[-1] < len(PAYLOAD)
    assert not (paths.keras_models_dir() / FILENAME).exists()
    assert _leftovers() == []


def test_mirror_from_environment_comes_before_the_official_url(server, monkeypatch):
    server.files[FILENAME] = PAYLOAD
    monkeypatch.setenv(backbones.MIRROR_ENV, server.base_url + "/")
    wf = _fake(_closed_port_url())
    assert resolve_weights(wf).read_bytes() == PAYLOAD
    assert server.requests == [f"/{FILENAME}"]


def test_missing_on_mirror_falls_back_to_official(server):
    server.files[f"official/{FILENAME}"] = PAYLOAD
    wf = _fake(f"{server.base_url}/official/{FILENAME}")
    assert resolve_weights(wf, mirror=f"{server.base_url}/mirror").read_bytes() == PAYLOAD
    assert server.requests == [f"/mirror/{FILENAME}", f"/official/{FILENAME}"]


def test_local_file_is_checked_and_copied_into_the_cache(tmp_path):
    wf = _fake(_closed_port_url())
    good = tmp_path / "download.h5"
    good.write_bytes(PAYLOAD)
    path = resolve_weights(wf, local_file=good)
    assert path == paths.keras_models_dir() / FILENAME and path.read_bytes() == PAYLOAD

    path.unlink()
    bad = tmp_path / "other.h5"
    bad.write_bytes(b"something else")
    with pytest.raises(WeightsError) as caught:
        resolve_weights(wf, local_file=bad)
    message = str(caught.value)
    assert FILENAME in message and wf.md5 in message and hashlib.md5(b"something else").hexdigest() in message


def test_unwritable_cache_is_a_clear_error(server, monkeypatch, tmp_path):
    server.files[FILENAME] = PAYLOAD
    blocker = tmp_path / "keras_home_is_a_file"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_HOME", str(blocker))
    with pytest.raises(WeightsError, match="Cannot save .* into the weights cache .*KERAS_HOME"):
        resolve_weights(_fake(f"{server.base_url}/{FILENAME}"))


def test_full_disk_is_a_clear_error(server, monkeypatch):
    server.files[FILENAME] = PAYLOAD
    real_open = Path.open

    class _FullDisk:
        def __init__(self, file):
            self._file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(self, mode="r", *args, **kwargs):
        file = real_open(self, mode, *args, **kwargs)
        return _FullDisk(file) if self.name.endswith(".part") else file

    monkeypatch.setattr(Path, "open", fake_open)
    with pytest.raises(WeightsError, match="the disk is full"):
        resolve_weights(_fake(f"{server.base_url}/{FILENAME}"))
    assert _leftovers() == []


def test_import_recognises_a_file_by_its_hash(monkeypatch, tmp_path):
    wf = _fake("http://example.invalid/" + FILENAME)
    monkeypatch.setattr(backbones, "OFFICIAL_WEIGHTS", {("vgg16", False): wf})
    source = tmp_path / "renamed.h5"
    source.write_bytes(PAYLOAD)
    assert import_weights(source).read_bytes() == PAYLOAD
    assert backbones.weights_status("vgg16", False)[0] == "cached"
    other = tmp_path / "other.h5"
    other.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(WeightsError, match="none of the official"):
        import_weights(other)


def test_a_transfer_that_breaks_off_is_reported_and_leaves_nothing(server):
    server.files[FILENAME] = PAYLOAD[: len(PAYLOAD) // 2]
    server.claimed_length = len(PAYLOAD)
    wf = _fake(f"{server.base_url}/{FILENAME}")
    with pytest.raises(WeightsError, match="broke off"):
        resolve_weights(wf)
    assert not (paths.keras_models_dir() / FILENAME).exists() and _leftovers() == []


def test_a_short_file_is_a_broken_transfer(server):
    server.files[FILENAME] = PAYLOAD[:1000]
    wf = _fake(f"{server.base_url}/{FILENAME}")
    with pytest.raises(WeightsError, match="1000 of 600000 bytes arrived"):
        resolve_weights(wf)
    assert _leftovers() == []


def test_an_endless_download_stops_at_the_expected_size(server):
    server.files[FILENAME] = PAYLOAD
    server.endless = True
    wf = _fake(f"{server.base_url}/{FILENAME}")
    with pytest.raises(WeightsError, match="more than the expected 600000 bytes"):
        resolve_weights(wf)
    assert not (paths.keras_models_dir() / FILENAME).exists() and _leftovers() == []
