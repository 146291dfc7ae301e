"""``tlstudio doctor``: the report as text and as JSON, through the CLI's entry function."""

from __future__ import annotations

import json

import pytest

from tlstudio import cli
from tlstudio.cli import common
from tlstudio.core.train import devices, doctor
from tlstudio.core.train.devices import DeviceInfo
from tlstudio.core.train.doctor import DriverInfo


@pytest.fixture(autouse=True)
def cuda_build_without_driver(monkeypatch):
    monkeypatch.setattr(doctor, "read_build_info", lambda: {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"})
    monkeypatch.setattr(devices, "list_devices", lambda: [DeviceInfo("Intel Xeon", "CPU", None, None)])
    monkeypatch.setattr(doctor, "find_nvidia_driver", lambda: DriverInfo(None, (), "not found"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_doctor_prints_the_report(capsys):
    assert cli.main(["doctor"]) == common.EXIT_OK
    out = capsys.readouterr().out
    assert "TensorFlow build: CUDA 12.5.1, cuDNN 9" in out
    assert "CPU: Intel Xeon" in out
    assert "Likely reason: no NVIDIA driver was found" in out


def test_doctor_json(capsys):
    assert cli.main(["doctor", "--json"]) == common.EXIT_OK
    body = json.loads(capsys.readouterr().out)
    assert body["uses_gpu"] is False
    assert body["cuda_version"] == "12.5.1"
    assert body["reason"].startswith("no NVIDIA driver was found")


def test_doctor_is_listed_in_help(capsys):
    assert cli.main(["--help"]) == common.EXIT_OK
    assert "doctor" in capsys.readouterr().out
