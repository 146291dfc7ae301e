"""TF_CONFIG parsing and the wait for the other workers; no TensorFlow involved."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tlstudio.core.train import cluster
from tlstudio.core.spec.errors import ClusterError, UserError


def _config(workers=("127.0.0.1:2222", "127.0.0.1:2223"), index=0, **extra) -> dict:
    return {"cluster": {"worker": list(workers), **extra}, "task": {"type": "worker", "index": index}}


def _read(value) -> cluster.ClusterConfig | None:
    text = value if isinstance(value, str) else json.dumps(value)
    return cluster.read_tf_config({"TF_CONFIG": text})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_tf_config_means_one_machine():
    assert cluster.read_tf_config({}) is None
    assert _read("  ") is None


def test_a_worker_list_is_read():
    config = _read(_config(index=1))
    assert config.size == 2
    assert config.address == "127.0.0.1:2223"
    assert config.name == "worker 1"
    assert not config.is_chief
    assert config.peers() == [("worker 0", "127.0.0.1:2222")]
    assert _read(_config()).is_chief
    assert _read(config.to_tf_config()) == config


def test_a_chief_job_is_the_chief():
    value = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}
    assert not _read(value).is_chief
    value["task"] = {"type": "chief", "index": 0}
    assert _read(value).is_chief


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{cluster: ", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not a list"),
        ({"task": {"type": "worker", "index": 0}}, "no 'cluster' entry"),
        ({"cluster": {"worker": ["a:1"]}}, "no 'task' entry"),
        (_config(index=2), r"'task.index' is 2, out of range: 'cluster.worker' lists 2 address\(es\), so the index is 0..1"),
        (_config(index=-1), "out of range"),
        (_config(index="0"), "'task.index' must be an integer"),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}, "'task.type' is 'ps'"),
        (_config(workers=("host-without-port",)), "'host-without-port' in 'cluster.worker'.*not a 'host:port'"),
        (_config(workers=("a:1", "a:1")), "twice"),
        (_config(workers=()), "non-empty list"),
        (_config(ps=["c:3"]), "'ps'.*only 'chief' and 'worker'"),
    ],
)
def test_malformed_tf_config_says_what_is_wrong(value, expected):
    with pytest.raises(ClusterError, match=expected) as caught:
        _read(value)
    assert isinstance(caught.value, UserError)
    assert "TF_CONFIG" in str(caught.value) and "Received: TF_CONFIG=" in str(caught.value)


def test_worker_timeout_setting():
    assert cluster.worker_timeout({}) == cluster.DEFAULT_WORKER_TIMEOUT
    assert cluster.worker_timeout({cluster.WORKER_TIMEOUT_ENV: "2.5"}) == 2.5
    for bad in ("soon", "0", "-3", "inf"):
        with pytest.raises(ClusterError, match=f"TLSTUDIO_WORKER_TIMEOUT={bad!r}"):
            cluster.worker_timeout({cluster.WORKER_TIMEOUT_ENV: bad})


def test_an_unreachable_worker_times_out_naming_it():
    mine, nobody = _free_port(), _free_port()
    config = _read(_config(workers=(f"127.0.0.1:{mine}", f"127.0.0.1:{nobody}")))
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"Timed out after 1 s.*worker 1 at 127\.0\.0\.1:{nobody} \(connection refused\)"):
        cluster.wait_for_workers(config, timeout=1.0)
    assert time.monotonic() - start < 5
    with socket.socket() as check:
        check.bind(("127.0.0.1", mine))  # the worker's own port is free again, for TensorFlow's server


def test_workers_that_answer_are_found():
    mine = _free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        address = f"127.0.0.1:{other.getsockname()[1]}"
        config = _read(_config(workers=(address, f"127.0.0.1:{mine}"), index=1))
        assert cluster.wait_for_workers(config, timeout=5.0) is None
        other.settimeout(5.0)
        probe, _ = other.accept()  # the wait really connected to the answering worker
        probe.close()
    with socket.socket() as check:
        check.bind(("127.0.0.1", mine))  # and freed its own port again, for TensorFlow's server


def test_a_port_in_use_is_reported():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = _read(_config(workers=(f"127.0.0.1:{port}", "127.0.0.1:1")))
        with pytest.raises(ClusterError, match=f"port {port} cannot be used"):
            cluster.wait_for_workers(config, timeout=1.0)


def test_the_listener_binds_only_to_the_address_in_tf_config():
    mine = _free_port()
    config = _read(_config(workers=(f"127.0.0.1:{mine}", "127.0.0.1:1")))
    listener = cluster._listen(config)
    try:
        assert listener.getsockname() == ("127.0.0.1", mine)
    finally:
        listener.close()


def test_an_address_that_is_not_this_machine_is_a_clear_error():
    config = _read(_config(workers=("192.0.2.1:2222", "127.0.0.1:1")))  # TEST-NET-1: never local
    with pytest.raises(ClusterError, match="192.0.2.1 port 2222 cannot be used on this machine"):
        cluster.wait_for_workers(config, timeout=1.0)


def test_waiting_for_workers_honours_stop():
    from tlstudio.core.spec.errors import Cancelled

    mine, nobody = _free_port(), _free_port()
    config = _read(_config(workers=(f"127.0.0.1:{mine}", f"127.0.0.1:{nobody}")))
    start = time.monotonic()
    with pytest.raises(Cancelled):
        cluster.wait_for_workers(config, timeout=60.0, should_stop=lambda: time.monotonic() - start > 0.3)
    assert time.monotonic() - start < 5
    with socket.socket() as check:
        check.bind(("127.0.0.1", mine))  # the listener was closed


def test_nothing_in_the_engine_or_the_app_calls_os_exit_unguarded():
    from pathlib import Path

    import tlstudio

    root = Path(tlstudio.__file__).parent
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "os._exit(" in p.read_text())
    assert callers == ["core/train/distribute.py"]
    assert "if _exit_on_hang:\n            os._exit(2)" in (root / "core/train/distribute.py").read_text()
