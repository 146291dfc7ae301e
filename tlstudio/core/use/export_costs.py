"""What each exported artifact costs on this computer: file size, latency and peak memory.

Each artifact is measured in a fresh Python process that imports only its own
runtime (Keras, TensorFlow, the TFLite interpreter with its default delegate,
ONNX Runtime), so the peak memory is that process's real peak (its maximum
resident set), runtime included, and nothing of the app's own memory counts.
The latency is per image at batch 1 over a warm run: :data:`WARMUP_RUNS`
calls first, then up to :data:`TIMED_RUNS` timed calls (or
:data:`TIME_BUDGET_S` seconds), reported as median and 95th percentile.

Run as ``python -m tlstudio.core.use.export_costs FORMAT PATH SIZE RUNS``, it
measures one artifact and prints the result as JSON (that is the child side).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

WARMUP_RUNS = 3
TIMED_RUNS = 50
TIME_BUDGET_S = 5.0
CHILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class ArtifactCost:
    """One artifact's measured cost; None where a number could not be measured (``error`` says why)."""

    format: str
    size_bytes: int
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    peak_memory_mb: float | None = None
    runtime_memory_mb: float | None = None
    runtime: str = ""
    runs: int = 0
    error: str = ""


def measure_costs(
    artifacts: dict[str, Path], input_size: int, runs: int = TIMED_RUNS, should_stop=lambda: False
) -> list[ArtifactCost]:
    """Measure every artifact, one fresh process each, one after the other (so they do not compete)."""
    costs = []
    for fmt, path in artifacts.items():
        if should_stop():
            break
        costs.append(measure_one(fmt, path, input_size, runs))
    return costs


def measure_one(fmt: str, path: Path, input_size: int, runs: int = TIMED_RUNS) -> ArtifactCost:
    """Measure one artifact in a child process; a failure is recorded in ``error``, never raised."""
    size = artifact_size(path)
    if getattr(sys, "frozen", False):
        # A bundled app has no Python to start: measure here, and say the memory is the app's.
        result = _measure(fmt, str(path), input_size, runs)
        result["peak_memory_mb"] = result["runtime_memory_mb"] = None
        result["error"] = "peak memory not measured in the bundled app"
        return ArtifactCost(fmt, size, **result)
    command = [sys.executable, "-m", __name__, fmt, str(path), str(input_size), str(runs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")])))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return ArtifactCost(fmt, size, error=f"measuring took over {CHILD_TIMEOUT_S} s")
    except OSError as error:
        return ArtifactCost(fmt, size, error=f"cannot start the measurement: {error}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ArtifactCost(fmt, size, error=f"the measurement failed: {tail}")
    return ArtifactCost(fmt, size, **json.loads(lines[-1]))


def artifact_size(path: Path) -> int:
    """Bytes on disk: the file, or every file in a folder artifact (SavedModel)."""
    if path.is_dir():
        return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
    return path.stat().st_size


def machine_description() -> str:
    """The computer the costs were measured on: CPU model, cores, operating system, Python."""
    cpu = _cpu_model() or platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count() or '?'} logical cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return ""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _peak_memory_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where the OS does not say).

    Linux: ``VmHWM`` from /proc (``ru_maxrss`` would include the parent's
    memory, which a forked child inherits across exec); elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def _measure(fmt: str, path: str, input_size: int, runs: int) -> dict:
    """Load the artifact in its runtime and time batch-1 calls on one image (the child's work)."""
    import numpy as np

    from tlstudio.core.use.export_runtime import load_runner, runtime_version

    if fmt in ("keras", "savedmodel"):
        import tensorflow  # noqa: F401  counted as the runtime's memory, before the model loads
    elif fmt == "onnx":
        import onnxruntime  # noqa: F401
    else:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            import tensorflow  # noqa: F401
    baseline = _peak_memory_mb()
    run = load_runner(fmt, path)
    image = np.random.default_rng(0).uniform(0, 255, (1, input_size, input_size, 3)).astype(np.float32)
    for _ in range(WARMUP_RUNS):
        run(image)
    times = []
    started = time.perf_counter()
    while len(times) < max(1, runs) and (len(times) < 3 or time.perf_counter() - started < TIME_BUDGET_S):
        begin = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - begin) * 1000)
    return {
        "latency_median_ms": percentile(times, 50),
        "latency_p95_ms": percentile(times, 95),
        "peak_memory_mb": _peak_memory_mb(),
        "runtime_memory_mb": baseline,
        "runtime": runtime_version(fmt),
        "runs": len(times),
    }


def _main(argv: Sequence[str]) -> int:
    fmt, path, size, runs = argv
    print(json.dumps(_measure(fmt, path, int(size), int(runs))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
