"""Devices on a CPU machine, with GPUs simulated through TensorFlow's device queries."""

from __future__ import annotations

import pytest
import tensorflow as tf

from tlstudio.core.train import devices
from tlstudio.core.train.devices import DeviceInfo

CPU = tf.config.PhysicalDevice(name="/physical_device:CPU:0", device_type="CPU")


def fake_gpus(monkeypatch, capabilities, memory=24 * 2**30, built_with_cuda=True):
    """Make TensorFlow report one GPU per compute capability given."""
    gpus = [
        tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(len(capabilities))
    ]
    details = {gpu.name: {"device_name": f"NVIDIA Test {i}", "compute_capability": cc} for i, (gpu, cc) in enumerate(zip(gpus, capabilities))}

    def list_physical_devices(device_type=None):
        everything = gpus + [CPU]
        return [d for d in everything if device_type is None or d.device_type == device_type]

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details.get(device.name, {}))
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: built_with_cuda)
    monkeypatch.setattr(devices, "_driver_memory_bytes", lambda count: [memory] * count)
    return gpus


def test_ampere_gpu_gets_mixed_precision(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0)])
    found = devices.list_devices()
    assert found[0] == DeviceInfo("NVIDIA Test 0", "GPU", 24 * 2**30, "8.0")
    assert found[-1].kind == "CPU" and found[-1].compute_capability is None
    assert devices.mixed_precision_policy() == "mixed_float16"
    assert devices.cpu_only_reason() is None
    assert devices.device_badge() == "GPU: NVIDIA Test 0 (24 GB)"


def test_pascal_gpu_stays_float32(monkeypatch):
    fake_gpus(monkeypatch, [(6, 1)], memory=None)
    assert devices.list_devices()[0].compute_capability == "6.1"
    assert devices.mixed_precision_policy() == "float32"
    assert devices.device_badge() == "GPU: NVIDIA Test 0"


def test_mixed_gpus_use_the_weakest(monkeypatch):
    fake_gpus(monkeypatch, [(8, 0), (6, 1)])
    assert devices.mixed_precision_policy() == "float32"
    assert devices.device_badge() == "GPU: NVIDIA Test 0 (24 GB) + 1 more"


def test_no_gpu_visible_explains_cuda_visible_devices(monkeypatch):
    fake_gpus(monkeypatch, [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.mixed_precision_policy() == "float32"
    reason = devices.cpu_only_reason()
    assert reason.startswith("no GPU visible") and "CUDA_VISIBLE_DEVICES=''" in reason
    assert devices.device_badge() == f"CPU — {reason}"
    assert [d.kind for d in devices.list_devices()] == ["CPU"]


def test_no_gpu_visible_without_driver(monkeypatch):
    fake_gpus(monkeypatch, [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    reason = devices.cpu_only_reason()
    assert reason.startswith("no GPU visible") and "driver" in reason


def test_build_without_cuda(monkeypatch):
    fake_gpus(monkeypatch, [], built_with_cuda=False)
    assert "TensorFlow was built without CUDA" in devices.cpu_only_reason()
    assert devices.device_badge().startswith("CPU — TensorFlow was built without CUDA")


def test_memory_growth_before_and_after_initialisation(monkeypatch):
    gpus = fake_gpus(monkeypatch, [(8, 0), (8, 0)])
    grown = []
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda gpu, on: grown.append((gpu, on)))
    assert devices.enable_memory_growth() is True
    assert grown == [(gpu, True) for gpu in gpus]

    def initialised(gpu, on):
        raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", initialised)
    monkeypatch.setattr(tf.config.experimental, "get_memory_growth", lambda gpu: False)
    assert devices.enable_memory_growth() is False


def test_driver_memory_follows_cuda_visible_devices(monkeypatch):
    class Done:
        stdout = "16384\n81920\n"

    monkeypatch.setattr(devices.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: Done())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices._driver_memory_bytes(1) == [80 * 2**30]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices._driver_memory_bytes(2) == [16 * 2**30, 80 * 2**30]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert devices._driver_memory_bytes(1) == [None]


def test_real_machine_answers():
    """Whatever this machine has, the answers are consistent."""
    found = devices.list_devices()
    assert any(d.kind == "CPU" for d in found)
    badge = devices.device_badge()
    if any(d.kind == "GPU" for d in found):
        assert badge.startswith("GPU: ") and devices.cpu_only_reason() is None
    else:
        assert badge.startswith("CPU — ") and devices.cpu_only_reason()
    assert devices.mixed_precision_policy() in ("mixed_float16", "float32")


@pytest.mark.parametrize("value", ["-1", " "])
def test_hidden_gpu_values(monkeypatch, value):
    fake_gpus(monkeypatch, [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert f"CUDA_VISIBLE_DEVICES={value!r}" in devices.cpu_only_reason()
