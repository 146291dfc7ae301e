"""``tlstudio train --project FILE`` on a cluster of two workers on 127.0.0.1.

Each worker is a real ``python -m tlstudio train`` process with its own
``TF_CONFIG``, its own user folder and its own temporary folder, so the test
can tell which one wrote files. The base is the tiny VGG saved as a model file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec, save_project
from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg

TIMEOUT = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _project(root, batch_size: int, fine_tuned: bool = False):
    model_file = root / "tiny_vgg.keras"
    if not model_file.exists():
        make_tiny_vgg().save(model_file)
    images = root / "images"
    if not images.exists():
        make_sample_folders(images)
    recipe = Recipe(
        data=DataSpec(folders=(str(images),)),
        base=BaseSpec(name="file", model_file=str(model_file)),
        head=HeadSpec(batch_norm=fine_tuned),
        training=TrainSpec(epochs=1 if fine_tuned else 4, batch_size=batch_size, learning_rate=1e-2,
                           early_stopping_patience=0, fine_tune_epochs=int(fine_tuned),
                           finalize_batch_norm=fine_tuned),
    )
    return save_project(recipe, root / f"project-{batch_size}{'-fine-tuned' if fine_tuned else ''}.json")


def _env(root, name: str, tf_config: dict | None, timeout: float = 60) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    (root / name / "tmp").mkdir(parents=True)
    env.update(
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        TLSTUDIO_HOME=str(root / name / "home"),
        TMPDIR=str(root / name / "tmp"),
        TLSTUDIO_WORKER_TIMEOUT=str(timeout),
    )
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _train(project, env, gather_rows: int | None = None) -> subprocess.Popen:
    """``tlstudio train --project`` in a new process; with ``gather_rows``, the workers all-gather rows in
    chunks of that many."""
    command = ["-m", "tlstudio"]
    if gather_rows is not None:
        command = ["-c", f"import sys; from tlstudio.core.train import distribute; distribute.GATHER_ROWS = "
                         f"{gather_rows}; from tlstudio.__main__ import main; sys.exit(main())"]
    return subprocess.Popen(
        [sys.executable, *command, "train", "--project", str(project), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(process: subprocess.Popen) -> dict:
    """The run's JSON result, with what the process wrote to stderr under ``"log"``."""
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, err[-3000:]
    return {**json.loads(out), "log": err}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Two workers at batch size 4 each, and one process at batch size 8 for comparison."""
    root = tmp_path_factory.mktemp("cluster")
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = [
        _train(
            _project(root, 4),
            _env(root, f"worker{index}", {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}),
        )
        for index in (0, 1)
    ]
    results = [_finish(worker) for worker in workers]
    single = _finish(_train(_project(root, 8), _env(root, "single", None)))
    return root, results, single


@pytest.fixture(scope="module")
def fine_tuned_cluster_run(tmp_path_factory):
    """Two workers fine-tuning a head with batch norm: after training, the base runs over the images again.
    Rows are all-gathered 5 at a time, so gathering a share takes several rounds."""
    root = tmp_path_factory.mktemp("cluster-fine-tuned")
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = [
        _train(
            _project(root, 4, fine_tuned=True),
            _env(root, f"worker{index}", {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}),
            gather_rows=5,
        )
        for index in (0, 1)
    ]
    return [_finish(worker) for worker in workers]


def test_two_workers_reach_the_single_process_accuracy(cluster_run):
    _, (chief, other), single = cluster_run
    assert abs(chief["val_accuracy"] - single["val_accuracy"]) <= 0.02
    assert chief["history"]["loss"] == pytest.approx(single["history"]["loss"], rel=1e-3)


def test_each_worker_extracts_only_its_share_of_the_images(cluster_run):
    _, workers, single = cluster_run
    total = re.search(r"(\d+) images? read from the cache, (\d+) extracted", single["log"])
    assert total and int(total[2]) > 0
    images = int(total[1]) + int(total[2])
    shares = []
    for number, worker in enumerate(workers, start=1):
        cache = re.search(r"(\d+) images? read from the cache, (\d+) extracted", worker["log"])
        share = re.search(rf"Worker {number} of 2 extracted .* images, (\d+) of (\d+);", worker["log"])
        assert cache and share, worker["log"][-2000:]
        assert int(share[2]) == images and int(cache[1]) + int(cache[2]) == int(share[1])
        shares.append(int(share[1]))
    assert sum(shares) == images and abs(shares[0] - shares[1]) <= 2  # one split's odd image each at most


def test_each_worker_runs_its_share_of_the_passes_after_training(fine_tuned_cluster_run):
    """Finalising batch norm after fine-tuning and the final validation pass go through the base again:
    each worker takes its share of the images, and both end with the same result."""
    workers = fine_tuned_cluster_run
    for action in ("extracted or read from its cache the features of", "ran the validation pass on"):
        shares = []
        for number, worker in enumerate(workers, start=1):
            found = re.findall(rf"Worker {number} of 2 {action} its share of the images, (\d+) of (\d+);",
                               worker["log"])
            assert found, worker["log"][-2000:]
            shares.append(tuple(int(n) for n in found[-1]))
        total = shares[0][1]
        assert total > 0 and sum(mine for mine, _ in shares) == total and abs(shares[0][0] - shares[1][0]) <= 1
    assert "Batch norm finalised" in workers[0]["log"]
    assert workers[1]["val_loss"] == pytest.approx(workers[0]["val_loss"], rel=1e-6)
    assert workers[1]["val_accuracy"] == workers[0]["val_accuracy"]


def test_both_workers_report_the_same_loss(cluster_run):
    _, (chief, other), _ = cluster_run
    assert other["history"]["loss"] == pytest.approx(chief["history"]["loss"], rel=1e-6)
    assert other["val_loss"] == pytest.approx(chief["val_loss"], rel=1e-6)


def test_only_the_chief_writes_a_run_folder(cluster_run):
    root, (chief, other), _ = cluster_run
    assert chief["chief"] and not other["chief"] and other["run_dir"] is None
    chief_runs = list((root / "worker0" / "home").glob("data/runs/run-*"))
    assert [str(path) for path in chief_runs] == [chief["run_dir"]]
    assert {path.name for path in chief_runs[0].iterdir()} >= {"model.keras", "history.json", "metrics.json"}
    assert not list((root / "worker1" / "home").glob("data/runs/*"))
    assert not list((root / "worker1" / "tmp").iterdir()), "the other worker's temporary run folder is deleted"


def test_malformed_tf_config_is_one_line_and_exit_2(tmp_path):
    project = _project(tmp_path, 4)
    env = _env(tmp_path, "bad", None)
    env["TF_CONFIG"] = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 5}}'
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio", "train", "--project", str(project)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlstudio: error: TF_CONFIG 'task.index' is 5, out of range")


def test_an_unreachable_worker_times_out_with_a_clear_message(tmp_path):
    project = _project(tmp_path, 4)
    mine, nobody = _free_ports(2)
    config = {
        "cluster": {"worker": [f"127.0.0.1:{mine}", f"127.0.0.1:{nobody}"]},
        "task": {"type": "worker", "index": 0},
    }
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio", "train", "--project", str(project)],
        capture_output=True, text=True, env=_env(tmp_path, "alone", config, timeout=3), timeout=120,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"Timed out after 3 s waiting for the other workers of the cluster: worker 1 at 127.0.0.1:{nobody}" in (
        result.stderr
    )
    assert elapsed < 60, "TensorFlow's import plus the 3 s wait, not a hang"
