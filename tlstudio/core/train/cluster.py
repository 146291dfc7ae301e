"""Several machines: reading ``TF_CONFIG`` and waiting until every worker answers.

A cluster run starts the same ``tlstudio train --project FILE`` on every
machine, each with a ``TF_CONFIG`` environment variable in TensorFlow's own
format that lists every worker and says which one this is::

    {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
     "task": {"type": "worker", "index": 0}}

Worker 0 is the chief (or the one task of a ``"chief"`` job, when the cluster
has one): only the chief writes the run folder.

Before TensorFlow joins the cluster, :func:`wait_for_workers` makes sure every
other worker answers on its host and port. TensorFlow's own start-up waits for
missing workers without a limit, and the chief's wait cannot be interrupted,
not even by SIGTERM; a worker that was never started, a wrong address or a
closed firewall port must instead end with an error that names it, after
``TLSTUDIO_WORKER_TIMEOUT`` seconds, or as soon as the user asks to stop.
While it waits, a worker listens on its own port itself, bound only to its
address in ``TF_CONFIG`` (never to every interface), so workers started in
any order find each other. A cluster must be a trusted network: the workers
exchange model data unauthenticated, as TensorFlow's own servers do.

This module does not import TensorFlow, so a malformed ``TF_CONFIG`` is
reported at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Mapping

from tlstudio.core.spec.errors import Cancelled, ClusterError
from tlstudio.core.spec.events import ShouldStop, never_stop

TF_CONFIG = "TF_CONFIG"
WORKER_TIMEOUT_ENV = "TLSTUDIO_WORKER_TIMEOUT"
DEFAULT_WORKER_TIMEOUT = 300.0
"""Seconds a worker waits for the others, at start and at every step (5 minutes)."""
JOBS = ("chief", "worker")
EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)
_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster from ``TF_CONFIG``: every task's address and which task this process is.

    ``jobs`` maps a job name (``"chief"``, ``"worker"``) to its addresses
    (``"host:port"``), in task-index order.
    """

    jobs: dict[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def size(self) -> int:
        """How many processes train together."""
        return sum(len(addresses) for addresses in self.jobs.values())

    @property
    def address(self) -> str:
        """This process's own ``host:port``."""
        return self.jobs[self.task_type][self.task_index]

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run folder: the chief task, else worker 0."""
        if "chief" in self.jobs:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def name(self) -> str:
        """How messages name this process, e.g. ``worker 1``."""
        return f"{self.task_type} {self.task_index}"

    def peers(self) -> list[tuple[str, str]]:
        """``(name, address)`` of every other task."""
        return [
            (f"{job} {index}", address)
            for job, addresses in self.jobs.items()
            for index, address in enumerate(addresses)
            if (job, index) != (self.task_type, self.task_index)
        ]

    def to_tf_config(self) -> dict:
        """This configuration in ``TF_CONFIG``'s JSON shape."""
        return {
            "cluster": {job: list(addresses) for job, addresses in self.jobs.items()},
            "task": {"type": self.task_type, "index": self.task_index},
        }


def read_tf_config(environ: Mapping[str, str] | None = None) -> ClusterConfig | None:
    """The cluster ``TF_CONFIG`` describes, or None when it is unset or empty.

    Raises :class:`ClusterError` naming what is wrong: not JSON, no
    ``cluster`` or ``task``, a job other than chief/worker, an address
    without a port, a task type or index that is not in the cluster.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})", text) from None
    if not isinstance(value, dict):
        raise _bad(f"must be a JSON object, not a {type(value).__name__}", text)
    for key in ("cluster", "task"):
        if key not in value:
            raise _bad(f"has no {key!r} entry", text)
    jobs = _jobs(value["cluster"], text)
    task_type, task_index = _task(value["task"], jobs, text)
    return ClusterConfig(jobs=jobs, task_type=task_type, task_index=task_index)


def worker_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds to wait for other workers: ``TLSTUDIO_WORKER_TIMEOUT``, default 300."""
    text = (os.environ if environ is None else environ).get(WORKER_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_WORKER_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ClusterError(
            f"{WORKER_TIMEOUT_ENV} must be a positive number of seconds. Received: {WORKER_TIMEOUT_ENV}={text!r}"
        )
    return seconds


def wait_for_workers(config: ClusterConfig, timeout: float, should_stop: ShouldStop = never_stop) -> None:
    """Return once every other task accepts a TCP connection; ClusterError after ``timeout`` seconds.

    Raises Cancelled as soon as ``should_stop()`` turns true (checked between probes).

    Meanwhile this process listens on its own port, so that the others, doing
    the same, see it too; the port is free again when this returns, for
    TensorFlow's server to take.
    """
    listener = _listen(config)
    try:
        deadline = time.monotonic() + timeout
        waiting = dict(config.peers())
        reasons: dict[str, str] = {}
        while waiting:
            for name, address in list(waiting.items()):
                if should_stop():
                    raise Cancelled("Waiting for the other workers of the cluster was stopped.")
                reason = _probe(address)
                if reason is None:
                    del waiting[name]
                else:
                    reasons[name] = reason
            if not waiting or time.monotonic() >= deadline:
                break
            _pause(_POLL_SECONDS, should_stop)
    finally:
        listener.close()
    if waiting:
        missing = "; ".join(f"{name} at {address} ({reasons[name]})" for name, address in waiting.items())
        raise ClusterError(
            f"Timed out after {timeout:g} s waiting for the other workers of the cluster: {missing} did not "
            f"answer. Start 'tlstudio train --project FILE' on every machine in TF_CONFIG, each with its own "
            f"task index, and check the addresses and that the firewall lets the ports through; "
            f"{WORKER_TIMEOUT_ENV} sets how long to wait. This is {config.name} at {config.address}."
        )


def _bad(problem: str, text: str) -> ClusterError:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return ClusterError(f"TF_CONFIG {problem}. Expected JSON like {EXAMPLE}. Received: TF_CONFIG={shown!r}")


def _jobs(cluster: object, text: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(cluster, dict) or not cluster:
        raise _bad("'cluster' must be an object mapping job names to lists of 'host:port' addresses", text)
    unknown = [job for job in cluster if job not in JOBS]
    if unknown:
        raise _bad(
            f"has the job{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in 'cluster'; "
            f"TL Studio trains with MultiWorkerMirroredStrategy, which takes only {' and '.join(map(repr, JOBS))}",
            text,
        )
    jobs: dict[str, tuple[str, ...]] = {}
    for job in JOBS:
        if job not in cluster:
            continue
        addresses = cluster[job]
        if not isinstance(addresses, list) or not addresses:
            raise _bad(f"'cluster.{job}' must be a non-empty list of 'host:port' addresses", text)
        for address in addresses:
            _check_address(job, address, text)
        jobs[job] = tuple(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise _bad(f"'cluster.chief' lists {len(jobs['chief'])} addresses; a cluster has one chief", text)
    seen: set[str] = set()
    for address in (a for addresses in jobs.values() for a in addresses):
        if address in seen:
            raise _bad(f"lists the address {address!r} twice; every task needs a port of its own", text)
        seen.add(address)
    return jobs


def _check_address(job: str, address: object, text: str) -> None:
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"has {address!r} in 'cluster.{job}', which is not a 'host:port' address", text)


def _task(task: object, jobs: dict[str, tuple[str, ...]], text: str) -> tuple[str, int]:
    if not isinstance(task, dict):
        raise _bad("'task' must be an object with 'type' and 'index'", text)
    task_type = task.get("type")
    if task_type not in jobs:
        raise _bad(f"'task.type' is {task_type!r}, which is not a job in 'cluster' ({', '.join(jobs)})", text)
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise _bad(f"'task.index' must be an integer. Received index {index!r}", text)
    count = len(jobs[task_type])
    if not 0 <= index < count:
        raise _bad(
            f"'task.index' is {index}, out of range: 'cluster.{task_type}' lists {count} address(es), "
            f"so the index is 0..{count - 1}",
            text,
        )
    return task_type, index


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _listen(config: ClusterConfig) -> socket.socket:
    """A socket listening on this task's own address from TF_CONFIG only (not on every interface)."""
    host, port = _split(config.address)
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ClusterError(
            f"This is {config.name}, whose address in TF_CONFIG is {config.address}, but the host {host!r} "
            f"is unknown here ({error.strerror or error}). Use this machine's name or IP address in TF_CONFIG."
        ) from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(where)
        listener.listen(16)
    except OSError as error:
        listener.close()
        raise ClusterError(
            f"This is {config.name}, whose address in TF_CONFIG is {config.address}, but {host} port {port} "
            f"cannot be used on this machine: {error.strerror or error}. Give each task this machine's own "
            "address and a free port in TF_CONFIG."
        ) from None
    return listener


def _pause(seconds: float, should_stop: ShouldStop) -> None:
    """Sleep ``seconds`` in short steps, returning early when a stop is requested."""
    end = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


def _probe(address: str) -> str | None:
    """None when ``address`` accepts a connection, else why not, in a few words."""
    host, port = _split(address)
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return None
    except socket.gaierror:
        return "unknown host"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return "no answer"
    except OSError as error:
        return error.strerror or str(error)
