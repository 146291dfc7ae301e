"""``tlstudio explain`` / ``activations`` on a file that is not a readable image: one line, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SUBPROCESS_TIMEOUT_S = 120


@pytest.fixture
def bad_images(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a photo\n")
    png = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
    truncated = tmp_path / "truncated.png"
    data = png.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"not an image": text, "truncated or corrupt image": truncated}


@pytest.mark.parametrize("command", ["explain", "activations"])
def test_an_unreadable_image_is_one_line_and_exit_2(bad_images, tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()  # the image is decoded before the run is loaded, so any existing path will do
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for reason, image in bad_images.items():
        extra = ["--tensor", "block2_conv2:0"] if command == "activations" else []
        result = subprocess.run(
            [sys.executable, "-m", "tlstudio", command, str(run), str(image), *extra, "--out", str(tmp_path / "o.png")],
            capture_output=True, text=True, env=env, timeout=SUBPROCESS_TIMEOUT_S,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0] == f"tlstudio: error: Cannot use image {str(image)!r}: {reason}."
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert not (tmp_path / "o.png").exists()
