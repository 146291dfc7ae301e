"""Why TensorFlow does or does not use the GPU: the facts and the likely reason.

``tlstudio doctor`` and the app's Help ▸ GPU Doctor dialog show one
:class:`DoctorReport`: how TensorFlow was built (CUDA and cuDNN versions from
``tf.sysconfig.get_build_info()``), the devices it sees (from
:mod:`tlstudio.core.train.devices`, which does not initialise the GPUs), whether an
NVIDIA driver is installed (``/proc/driver/nvidia/version`` on Linux, or
``nvidia-smi``), ``CUDA_VISIBLE_DEVICES``, and, when no GPU is used, the most
likely reason with what to do about it. The report is plain text lines so a
user can paste it into a bug report, and JSON for scripts.

TensorFlow is imported inside the functions so that the CLI's fast paths stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tlstudio.core.train import devices
from tlstudio.core.train.devices import DeviceInfo

NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")
NVIDIA_SMI_TIMEOUT_S = 10
_DRIVER_VERSION = re.compile(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b")


@dataclass(frozen=True)
class DriverInfo:
    """What the NVIDIA driver says, independently of TensorFlow.

    ``version`` is None when no driver was found; ``gpus`` are the names
    ``nvidia-smi`` lists (empty without it); ``source`` says where the facts came from.
    """

    version: str | None
    gpus: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class DoctorReport:
    """Everything the doctor found, and the likely reason when no GPU is used (None when one is)."""

    tensorflow_version: str
    keras_version: str
    python_version: str
    platform: str
    built_with_cuda: bool
    cuda_version: str | None
    cudnn_version: str | None
    build_info: dict[str, Any]
    devices: tuple[DeviceInfo, ...]
    driver: DriverInfo
    cuda_visible_devices: str | None
    reason: str | None

    @property
    def gpus(self) -> tuple[DeviceInfo, ...]:
        """The GPUs TensorFlow sees."""
        return tuple(d for d in self.devices if d.kind == "GPU")

    @property
    def uses_gpu(self) -> bool:
        """Whether TensorFlow will train on a GPU."""
        return bool(self.gpus)

    def lines(self) -> list[str]:
        """The report as plain text lines, the verdict last."""
        build = "CPU only (built without CUDA)"
        if self.built_with_cuda:
            build = f"CUDA {self.cuda_version or 'unknown'}, cuDNN {self.cudnn_version or 'unknown'}"
        lines = [
            f"TensorFlow {self.tensorflow_version}, Keras {self.keras_version}, "
            f"Python {self.python_version}, {self.platform}",
            f"TensorFlow build: {build}",
            "Devices TensorFlow sees:",
        ]
        lines += [f"  {_device_text(device)}" for device in self.devices] or ["  none"]
        lines.append(f"NVIDIA driver: {_driver_text(self.driver)}")
        visible = "not set" if self.cuda_visible_devices is None else repr(self.cuda_visible_devices)
        lines.append(f"CUDA_VISIBLE_DEVICES: {visible}")
        if self.uses_gpu:
            count = len(self.gpus)
            lines.append(f"Verdict: TensorFlow uses the GPU{'s' if count > 1 else ''} ({count} visible).")
        else:
            lines.append("Verdict: TensorFlow runs on the CPU only.")
            lines.append(f"Likely reason: {self.reason}")
        return lines

    def text(self) -> str:
        """The report as one block of text, for the terminal or the clipboard."""
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, used by ``tlstudio doctor --json``."""
        body = dataclasses.asdict(self)
        body["uses_gpu"] = self.uses_gpu
        body["lines"] = self.lines()
        return body


def diagnose(env: Mapping[str, str] | None = None) -> DoctorReport:
    """Examine TensorFlow's build, its devices and the NVIDIA driver; never initialises a GPU.

    ``env`` defaults to the process environment (read for ``CUDA_VISIBLE_DEVICES``).
    """
    import keras
    import tensorflow as tf

    env = os.environ if env is None else env
    info = read_build_info()
    built_with_cuda = bool(info.get("is_cuda_build", False))
    found = tuple(devices.list_devices())
    driver = find_nvidia_driver()
    visible = env.get("CUDA_VISIBLE_DEVICES")
    has_gpu = any(d.kind == "GPU" for d in found)
    return DoctorReport(
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(terse=True),
        built_with_cuda=built_with_cuda,
        cuda_version=_text_or_none(info.get("cuda_version")),
        cudnn_version=_text_or_none(info.get("cudnn_version")),
        build_info={key: _json_value(value) for key, value in info.items()},
        devices=found,
        driver=driver,
        cuda_visible_devices=visible,
        reason=None if has_gpu else likely_reason(built_with_cuda, info, driver, visible),
    )


def read_build_info() -> dict[str, Any]:
    """TensorFlow's build facts (``cuda_version``, ``cudnn_version``, ``is_cuda_build``, ...)."""
    import tensorflow as tf

    return dict(tf.sysconfig.get_build_info())


def likely_reason(
    built_with_cuda: bool,
    build_info: Mapping[str, Any],
    driver: DriverInfo,
    cuda_visible_devices: str | None,
    system: str | None = None,
) -> str:
    """The most likely reason TensorFlow sees no GPU, with what to do; checked from the cheapest fix up."""
    system = sys.platform if system is None else system
    if not built_with_cuda:
        if system == "darwin":
            return (
                "TensorFlow for macOS has no CUDA. On Apple silicon the tensorflow-metal plug-in "
                "can use the GPU (pip install tensorflow-metal); otherwise training runs on the CPU."
            )
        if system.startswith("win"):
            return (
                "TensorFlow 2.11 and later have no GPU support on native Windows. "
                "Run TL Studio in WSL2 with 'tensorflow[and-cuda]' to train on an NVIDIA GPU."
            )
        return (
            "this TensorFlow was built without CUDA (a CPU-only build such as tensorflow-cpu), "
            "so it cannot use an NVIDIA GPU. Install the GPU build: pip install 'tensorflow[and-cuda]'"
        )
    cuda = build_info.get("cuda_version") or "its CUDA version"
    cudnn = build_info.get("cudnn_version") or "?"
    if cuda_visible_devices is not None and cuda_visible_devices.strip() in ("", "-1"):
        also = "" if driver.version else " No NVIDIA driver was found either, so unsetting it alone will not help."
        return (
            f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} hides every GPU from TensorFlow. "
            f"Unset it, or list the GPUs to use, e.g. CUDA_VISIBLE_DEVICES=0.{also}"
        )
    if driver.version is None:
        return (
            "no NVIDIA driver was found (no /proc/driver/nvidia/version and no nvidia-smi): this machine "
            "has no NVIDIA GPU, or its driver is not installed. Install NVIDIA's driver for the card, "
            f"recent enough for CUDA {cuda}, then check that nvidia-smi lists the GPU."
        )
    return (
        f"the NVIDIA driver {driver.version} is installed but TensorFlow found no usable GPU: the CUDA "
        f"{cuda} and cuDNN {cudnn} libraries TensorFlow needs are missing ({_cuda_libraries_hint()}), "
        "the driver is too old for that CUDA version (nvidia-smi shows the newest CUDA it supports), "
        "or the GPU is older than this build supports. Start TL Studio from a terminal with "
        "TF_CPP_MIN_LOG_LEVEL=0 to see which library TensorFlow could not load."
    )


def _cuda_libraries_hint() -> str:
    """Where the CUDA libraries come from: pip's nvidia-* packages, or the system for the bundle."""
    if getattr(sys, "frozen", False):
        return "this bundle does not include them: install CUDA and cuDNN system-wide, or install TL Studio with pip"
    return "pip install 'tensorflow[and-cuda]' installs them"


def find_nvidia_driver() -> DriverInfo:
    """The NVIDIA driver's version and GPUs, from the kernel module's version file or ``nvidia-smi``."""
    version = None
    source = "not found"
    try:
        text = NVIDIA_PROC_VERSION.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text) or _DRIVER_VERSION.search(text)
    if match:
        version, source = match.group(1), str(NVIDIA_PROC_VERSION)
    gpus: tuple[str, ...] = ()
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        rows = _nvidia_smi_rows(smi)
        if rows:
            gpus = tuple(name for _driver, name in rows)
            if version is None:
                version, source = rows[0][0], "nvidia-smi"
            else:
                source += " and nvidia-smi"
    return DriverInfo(version=version, gpus=gpus, source=source)


def _nvidia_smi_rows(executable: str) -> list[tuple[str, str]]:
    """(driver version, GPU name) per GPU, or [] when nvidia-smi fails (it does without a working driver)."""
    try:
        output = subprocess.run(
            [executable, "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in output.splitlines():
        driver, _, name = line.partition(",")
        if driver.strip() and name.strip():
            rows.append((driver.strip(), name.strip()))
    return rows


def _device_text(device: DeviceInfo) -> str:
    details = []
    if device.memory_bytes:
        details.append(f"{device.memory_bytes / 2**30:.1f} GiB")
    if device.compute_capability:
        details.append(f"compute capability {device.compute_capability}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{device.kind}: {device.name}{suffix}"


def _driver_text(driver: DriverInfo) -> str:
    if driver.version is None:
        return "not found (no /proc/driver/nvidia/version, no working nvidia-smi)"
    text = f"{driver.version} (from {driver.source})"
    if driver.gpus:
        text += f"; GPUs: {', '.join(driver.gpus)}"
    return text


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return str(value)
