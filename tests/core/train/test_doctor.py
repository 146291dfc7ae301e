"""The GPU doctor: build facts, devices and driver in, the likely reason out."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.train import devices, doctor
from tlstudio.core.train.devices import DeviceInfo
from tlstudio.core.train.doctor import DriverInfo

CUDA_BUILD = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9", "cuda_compute_capabilities": ["sm_80"]}
CPU_BUILD = {"is_cuda_build": False, "is_rocm_build": False}
CPU = DeviceInfo("Intel Xeon", "CPU", None, None)
GPU = DeviceInfo("NVIDIA A100-SXM4-40GB", "GPU", 40 * 2**30, "8.0")
NO_DRIVER = DriverInfo(version=None, gpus=(), source="not found")
DRIVER = DriverInfo(version="550.54.14", gpus=("NVIDIA A100-SXM4-40GB",), source="nvidia-smi")


@pytest.fixture
def machine(monkeypatch):
    """Set what TensorFlow and the driver report: ``machine(build, devices, driver)``."""

    def configure(build, found, driver):
        monkeypatch.setattr(doctor, "read_build_info", lambda: dict(build))
        monkeypatch.setattr(devices, "list_devices", lambda: list(found))
        monkeypatch.setattr(doctor, "find_nvidia_driver", lambda: driver)

    return configure


def test_cuda_build_without_a_driver(machine):
    machine(CUDA_BUILD, [CPU], NO_DRIVER)
    report = doctor.diagnose(env={})
    assert report.built_with_cuda and report.cuda_version == "12.5.1" and report.cudnn_version == "9"
    assert not report.uses_gpu
    assert "no NVIDIA driver was found" in report.reason
    text = report.text()
    assert "TensorFlow build: CUDA 12.5.1, cuDNN 9" in text
    assert "NVIDIA driver: not found" in text
    assert "CUDA_VISIBLE_DEVICES: not set" in text
    assert text.splitlines()[-1] == f"Likely reason: {report.reason}"


def test_cpu_only_build(machine):
    machine(CPU_BUILD, [CPU], DRIVER)
    report = doctor.diagnose(env={})
    assert not report.built_with_cuda and report.cuda_version is None
    assert "TensorFlow build: CPU only (built without CUDA)" in report.text()
    assert "built without CUDA" in report.reason
    assert "tensorflow[and-cuda]" in report.reason


def test_gpu_visible(machine):
    machine(CUDA_BUILD, [GPU, CPU], DRIVER)
    report = doctor.diagnose(env={"CUDA_VISIBLE_DEVICES": "0"})
    assert report.uses_gpu and report.reason is None
    text = report.text()
    assert "GPU: NVIDIA A100-SXM4-40GB (40.0 GiB, compute capability 8.0)" in text
    assert "NVIDIA driver: 550.54.14 (from nvidia-smi); GPUs: NVIDIA A100-SXM4-40GB" in text
    assert "CUDA_VISIBLE_DEVICES: '0'" in text
    assert text.splitlines()[-1] == "Verdict: TensorFlow uses the GPU (1 visible)."
    assert "Likely reason" not in text


def test_hidden_by_cuda_visible_devices(machine):
    machine(CUDA_BUILD, [CPU], DRIVER)
    report = doctor.diagnose(env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert "CUDA_VISIBLE_DEVICES='-1' hides every GPU" in report.reason
    assert "driver was found either" not in report.reason


def test_driver_present_but_no_gpu_names_the_libraries(machine):
    machine(CUDA_BUILD, [CPU], DRIVER)
    reason = doctor.diagnose(env={}).reason
    assert "driver 550.54.14 is installed" in reason
    assert "CUDA 12.5.1 and cuDNN 9 libraries" in reason


@pytest.mark.parametrize(
    ("system", "expected"), [("darwin", "tensorflow-metal"), ("win32", "native Windows"), ("linux", "tensorflow-cpu")]
)
def test_cpu_build_reason_depends_on_the_platform(system, expected):
    assert expected in doctor.likely_reason(False, CPU_BUILD, NO_DRIVER, None, system=system)


def test_json_form_is_plain(machine):
    machine(CUDA_BUILD, [GPU, CPU], DRIVER)
    body = json.loads(json.dumps(doctor.diagnose(env={}).to_dict()))
    assert body["uses_gpu"] is True
    assert body["build_info"]["cuda_compute_capabilities"] == ["sm_80"]
    assert body["devices"][0]["kind"] == "GPU"
    assert body["driver"]["version"] == "550.54.14"
    assert body["lines"][-1].startswith("Verdict:")


@pytest.mark.parametrize(
    ("first_line", "version"),
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024", "550.54.14"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)", "580.159.04"),
    ],
)
def test_driver_version_from_the_kernel_module(tmp_path, monkeypatch, first_line, version):
    proc = tmp_path / "version"
    proc.write_text(f"{first_line}\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(doctor, "NVIDIA_PROC_VERSION", proc)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor.find_nvidia_driver() == DriverInfo(version, (), str(proc))


def test_no_driver_anywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "NVIDIA_PROC_VERSION", tmp_path / "missing")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor.find_nvidia_driver() == NO_DRIVER


def test_driver_from_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "NVIDIA_PROC_VERSION", tmp_path / "missing")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(doctor, "_nvidia_smi_rows", lambda exe: [("550.54.14", "NVIDIA L4"), ("550.54.14", "NVIDIA L4")])
    assert doctor.find_nvidia_driver() == DriverInfo("550.54.14", ("NVIDIA L4", "NVIDIA L4"), "nvidia-smi")


def test_diagnose_on_this_machine_runs():
    report = doctor.diagnose()
    assert report.tensorflow_version
    assert any(d.kind == "CPU" for d in report.devices)
    assert report.uses_gpu or report.reason
