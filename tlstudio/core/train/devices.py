"""Which devices TensorFlow can use, and why it runs on the CPU when it does.

The GUI shows :func:`device_badge` in its status bar and the CLI prints it
before training, so a user with a GPU that TensorFlow cannot see learns why
(a CPU-only TensorFlow build, a missing driver, ``CUDA_VISIBLE_DEVICES=''``)
instead of waiting for a slow run.

Nothing here initialises the GPUs: memory growth can only be switched on
before TensorFlow creates its devices, so listing them must not do that. The
total memory of a card comes from the NVIDIA driver (``nvidia-smi``) because
TensorFlow only reports how much it has allocated itself
(``tf.config.experimental.get_memory_info``), not how large the card is.
TensorFlow is imported inside the functions so that importing this module
stays cheap for the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

MIXED_PRECISION_MIN_CAPABILITY = (7, 0)
"""Tensor cores, which make float16 fast, arrived with compute capability 7.0 (Volta)."""


@dataclass(frozen=True)
class DeviceInfo:
    """One physical device TensorFlow can run on.

    ``kind`` is ``"GPU"`` or ``"CPU"``; ``memory_bytes`` is the card's total
    memory when the driver reports it, else None; ``compute_capability`` reads
    like ``"8.0"`` for GPUs and is None for CPUs.
    """

    name: str
    kind: str
    memory_bytes: int | None
    compute_capability: str | None


def list_devices() -> list[DeviceInfo]:
    """The physical devices TensorFlow sees, GPUs first, without initialising them."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    memory = _driver_memory_bytes(len(gpus))
    devices = []
    for index, gpu in enumerate(gpus):
        details = _gpu_details(gpu)
        capability = details.get("compute_capability")
        devices.append(
            DeviceInfo(
                name=str(details.get("device_name") or gpu.name),
                kind="GPU",
                memory_bytes=memory[index] if index < len(memory) else None,
                compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
            )
        )
    for cpu in tf.config.list_physical_devices("CPU"):
        devices.append(DeviceInfo(name=_cpu_name(cpu.name), kind="CPU", memory_bytes=None, compute_capability=None))
    return devices


def enable_memory_growth() -> bool:
    """Let TensorFlow take GPU memory as it needs it instead of all at start.

    Must run before the first GPU operation. Returns True when growth is on for
    every GPU (trivially so with none), False when TensorFlow had already
    initialised a GPU without it; that is not an error, only less polite to
    other programs sharing the card.
    """
    import tensorflow as tf

    enabled = True
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            enabled = enabled and bool(tf.config.experimental.get_memory_growth(gpu))
    return enabled


def mixed_precision_policy() -> str:
    """``"mixed_float16"`` when every visible GPU has tensor cores (7.0+), else ``"float32"``.

    On older GPUs and on CPUs float16 is slower than float32, not faster.
    """
    gpus = [d for d in list_devices() if d.kind == "GPU"]
    if not gpus or any(d.compute_capability is None for d in gpus):
        return "float32"
    lowest = min(tuple(int(part) for part in d.compute_capability.split(".")) for d in gpus)
    return "mixed_float16" if lowest >= MIXED_PRECISION_MIN_CAPABILITY else "float32"


def cpu_only_reason() -> str | None:
    """Why TensorFlow runs on the CPU only, or None when it has a GPU."""
    import tensorflow as tf

    if not tf.test.is_built_with_cuda():
        return (
            "TensorFlow was built without CUDA, so it cannot use an NVIDIA GPU "
            "(a tensorflow-cpu wheel, or a platform with no CUDA build). On Linux install "
            "the GPU build: pip install 'tensorflow[and-cuda]'"
        )
    if tf.config.list_physical_devices("GPU"):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return (
            f"no GPU visible: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU. "
            "Unset it, or list the GPUs to use, e.g. CUDA_VISIBLE_DEVICES=0"
        )
    cuda = tf.sysconfig.get_build_info().get("cuda_version", "?")
    return (
        "no GPU visible: no NVIDIA driver found, the driver is too old for CUDA "
        f"{cuda}, or the CUDA libraries are missing (install 'tensorflow[and-cuda]'). "
        "Check with nvidia-smi"
    )


def device_badge() -> str:
    """One short line for a status bar: ``GPU: NVIDIA A100 (40 GB)`` or ``CPU — <reason>``."""
    gpus = [d for d in list_devices() if d.kind == "GPU"]
    if not gpus:
        return f"CPU — {cpu_only_reason() or 'no GPU visible'}"
    first = gpus[0]
    badge = f"GPU: {first.name}"
    if first.memory_bytes:
        badge += f" ({round(first.memory_bytes / 2**30)} GB)"
    if len(gpus) > 1:
        badge += f" + {len(gpus) - 1} more"
    return badge


def _gpu_details(gpu) -> dict:
    import tensorflow as tf

    try:
        return dict(tf.config.experimental.get_device_details(gpu))
    except (ValueError, RuntimeError):
        return {}


def _cpu_name(device_name: str) -> str:
    """The processor's model name on Linux, else TensorFlow's device name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return device_name


def _driver_memory_bytes(gpu_count: int) -> list[int | None]:
    """Total memory of each GPU TensorFlow sees, in TensorFlow's order, from ``nvidia-smi``.

    ``CUDA_VISIBLE_DEVICES`` renumbers GPUs; numeric lists are mapped back to
    the driver's order, anything else (UUIDs, MIG slices) gives unknown sizes.
    """
    if gpu_count == 0:
        return []
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return [None] * gpu_count
    try:
        output = subprocess.run(
            [executable, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        sizes = [int(line.strip()) * 2**20 for line in output.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return [None] * gpu_count
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        order = list(range(gpu_count))
    else:
        try:
            order = [int(part) for part in visible.split(",") if part.strip()]
        except ValueError:
            return [None] * gpu_count
    return [sizes[i] if 0 <= i < len(sizes) else None for i in order[:gpu_count]]
